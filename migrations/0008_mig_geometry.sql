-- The MIG geometry of a GPU, as its worker reported it at registration: NULL when the GPU
-- is not in MIG mode; otherwise its instances as "profile@first memory slot", comma
-- separated ('' when it has none). The scheduler gives out exactly these instances on such
-- a GPU and never the GPU whole; the geometry is the operator's to change (the worker
-- registers again after a change). Nullable with no default: adding it rewrites nothing,
-- and replicas of the previous release neither read nor write it.
ALTER TABLE gpus ADD COLUMN mig_slices text;
