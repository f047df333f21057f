-- A GPU's utilization and memory figures are shown on dashboards and nowhere else, so a
-- report rewrites them only when they moved far or are old (see PgNodeStore): at fleet
-- scale most reports then leave the GPU rows alone. sampled_ms: when they were written.

ALTER TABLE gpus ADD COLUMN sampled_ms bigint NOT NULL DEFAULT 0;
