-- Outbid reasons are rendered when read. A pending job that is outbid records the GPU
-- model of the pool it was outbid in; readers quote that pool's current clearing price,
-- so a clearing price that moves rewrites one row here instead of every outbid job.

ALTER TABLE jobs ADD COLUMN outbid_model text NOT NULL DEFAULT '';

-- Each pool's clearing price as of the scheduling leader's latest applied round, written
-- in the same transaction as that round's decisions. since_ms: when it last changed.
CREATE TABLE clearing_prices (
  gpu_model       text PRIMARY KEY,
  clearing_micros bigint NOT NULL CHECK (clearing_micros >= 0),
  since_ms        bigint NOT NULL
);
