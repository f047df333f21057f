-- Host CPU and memory. A job may ask for CPU (millicores) and memory (MiB) on each node it
-- runs on; 0 means its share of the node in proportion to the GPU capacity it takes. A
-- node's worker reports the node's CPU and memory at registration (0 = unknown, which
-- limits nothing). The scheduler never places more on a node than it has. Constant
-- defaults: adding the columns rewrites no table.
ALTER TABLE jobs ADD COLUMN cpu_millis bigint NOT NULL DEFAULT 0,
                 ADD COLUMN memory_mib bigint NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN cpu_millis bigint NOT NULL DEFAULT 0,
                  ADD COLUMN memory_mib bigint NOT NULL DEFAULT 0;
