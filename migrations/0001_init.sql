-- Surplus schema, version 1. All times are UTC epoch milliseconds (bigint); all money is
-- integer micro-dollars (bigint); prices are per GPU-hour.

CREATE TABLE tenants (
  id               text PRIMARY KEY,
  display_name     text NOT NULL DEFAULT '',
  max_gpus         integer NOT NULL DEFAULT 0 CHECK (max_gpus >= 0),
  max_pending_jobs integer NOT NULL DEFAULT 0 CHECK (max_pending_jobs >= 0),
  created_ms       bigint NOT NULL
);

CREATE TABLE api_keys (
  id          text PRIMARY KEY,
  key_hash    text NOT NULL UNIQUE,           -- SHA-256 of the secret; the secret is never stored
  role        text NOT NULL CHECK (role IN ('tenant', 'operator', 'finance', 'worker')),
  tenant_id   text REFERENCES tenants (id),
  description text NOT NULL DEFAULT '',
  created_ms  bigint NOT NULL,
  revoked_ms  bigint,
  CHECK ((role = 'tenant') = (tenant_id IS NOT NULL))
);

CREATE TABLE nodes (
  name              text PRIMARY KEY,
  gpu_model         text NOT NULL,
  fabric            text NOT NULL DEFAULT '',
  backend           text NOT NULL DEFAULT '',
  cordoned          boolean NOT NULL DEFAULT false,
  lost              boolean NOT NULL DEFAULT false,
  registered_ms     bigint NOT NULL,
  last_heartbeat_ms bigint NOT NULL DEFAULT 0
);

CREATE TABLE gpus (
  node              text NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
  idx               integer NOT NULL,
  uuid              text NOT NULL DEFAULT '',
  memory_total_mib  bigint NOT NULL DEFAULT 0,
  memory_used_mib   bigint NOT NULL DEFAULT 0,
  utilization_pct   integer NOT NULL DEFAULT 0,
  healthy           boolean NOT NULL DEFAULT true,
  health_reason     text NOT NULL DEFAULT '',
  owner_busy        boolean NOT NULL DEFAULT false,  -- owner processes seen in telemetry
  owner_reclaimed   boolean NOT NULL DEFAULT false,  -- explicit reclaim by the owner
  owner_idle_since_ms bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (node, idx)
);

CREATE TABLE jobs (
  seq              bigserial UNIQUE,
  id               text PRIMARY KEY,
  tenant_id        text NOT NULL REFERENCES tenants (id),
  request_id       text NOT NULL,
  name             text NOT NULL DEFAULT '',
  spec_json        text NOT NULL,                 -- surplus.v1.JobSpec as JSON
  shape_kind       text NOT NULL CHECK (shape_kind IN ('slice', 'gpus', 'gang')),
  slice_profile    text NOT NULL DEFAULT '',
  gpus_per_node    integer NOT NULL DEFAULT 0,
  node_count       integer NOT NULL DEFAULT 1,
  tier             text NOT NULL CHECK (tier IN ('spot', 'on_demand')),
  bid_micros       bigint NOT NULL CHECK (bid_micros >= 0),
  gpu_model        text NOT NULL DEFAULT '',
  max_runtime_ms   bigint NOT NULL DEFAULT 0,
  requeue          boolean NOT NULL DEFAULT false,
  state            text NOT NULL CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED',
                                                  'CANCELLED', 'PREEMPTED', 'LOST')),
  reason           text NOT NULL DEFAULT '',
  exit_code        integer,
  attempt          integer NOT NULL DEFAULT 0,
  assigned_model   text NOT NULL DEFAULT '',
  price_micros     bigint NOT NULL DEFAULT 0,
  created_ms       bigint NOT NULL,
  assigned_ms      bigint,
  started_ms       bigint,
  finished_ms      bigint,
  -- A stop the worker must carry out (cancel or preemption) while the job is RUNNING.
  stop_requested   boolean NOT NULL DEFAULT false,
  stop_cause       text NOT NULL DEFAULT '',     -- 'cancel' | 'outbid' | 'owner' | 'unhealthy' | 'cordon' | 'runtime'
  stop_reason      text NOT NULL DEFAULT '',
  stop_deadline_ms bigint,
  UNIQUE (tenant_id, request_id)
);
CREATE INDEX jobs_active ON jobs (state) WHERE state IN ('PENDING', 'RUNNING');
CREATE INDEX jobs_tenant_seq ON jobs (tenant_id, seq);

-- Where each attempt of a job runs: one row per node.
CREATE TABLE job_placements (
  job_id        text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt       integer NOT NULL,
  node          text NOT NULL REFERENCES nodes (name),
  gpu_indices   text NOT NULL,           -- comma-separated GPU indices
  slice_profile text NOT NULL,
  slot_start    integer NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, attempt, node)
);
CREATE INDEX job_placements_node ON job_placements (node);

CREATE TABLE job_events (
  id       bigserial PRIMARY KEY,
  job_id   text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  at_ms    bigint NOT NULL,
  state    text NOT NULL,
  reason   text NOT NULL DEFAULT ''
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Price each job attempt pays from effective_ms on (spot: clearing price capped at its bid).
CREATE TABLE job_prices (
  job_id       text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt      integer NOT NULL,
  effective_ms bigint NOT NULL,
  price_micros bigint NOT NULL CHECK (price_micros >= 0),
  PRIMARY KEY (job_id, attempt, effective_ms)
);

CREATE TABLE job_logs (
  job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  offset_bytes bigint NOT NULL,
  data    bytea NOT NULL,
  PRIMARY KEY (job_id, offset_bytes)
);

CREATE TABLE reserve_prices (
  gpu_model    text PRIMARY KEY,
  price_micros bigint NOT NULL CHECK (price_micros >= 0),
  updated_ms   bigint NOT NULL
);

CREATE TABLE market_rounds (
  id              bigserial PRIMARY KEY,
  at_ms           bigint NOT NULL,
  gpu_model       text NOT NULL,
  clearing_micros bigint NOT NULL,
  reserve_micros  bigint NOT NULL,
  capacity_units  bigint NOT NULL,
  used_units      bigint NOT NULL,
  pending_jobs    integer NOT NULL
);
CREATE INDEX market_rounds_model_at ON market_rounds (gpu_model, at_ms);

CREATE TABLE usage_records (
  worker_id     text NOT NULL,
  seq           bigint NOT NULL,
  job_id        text NOT NULL,
  attempt       integer NOT NULL DEFAULT 0,
  tenant_id     text NOT NULL,
  gpu_model     text NOT NULL,
  slice_profile text NOT NULL,
  gpu_indices   text NOT NULL,
  start_ms      bigint NOT NULL,
  end_ms        bigint NOT NULL CHECK (end_ms >= start_ms),
  gpu_ms        bigint NOT NULL CHECK (gpu_ms >= 0),
  final         boolean NOT NULL DEFAULT false,
  received_ms   bigint NOT NULL,
  PRIMARY KEY (worker_id, seq)
);
CREATE INDEX usage_records_tenant_start ON usage_records (tenant_id, start_ms);
CREATE INDEX usage_records_job ON usage_records (job_id);

CREATE TABLE invoices (
  tenant_id    text NOT NULL REFERENCES tenants (id),
  period       text NOT NULL,              -- YYYY-MM, UTC
  status       text NOT NULL CHECK (status IN ('draft', 'finalized')),
  number       text UNIQUE,
  total_micros bigint NOT NULL,
  lines_json   text NOT NULL,              -- frozen lines of a finalized invoice
  finalized_ms bigint,
  PRIMARY KEY (tenant_id, period)
);
CREATE SEQUENCE invoice_numbers;

-- A finalized invoice is immutable.
CREATE FUNCTION invoices_immutable() RETURNS trigger AS $$
BEGIN
  IF OLD.status = 'finalized' THEN
    RAISE EXCEPTION 'invoice % % is finalized and immutable', OLD.tenant_id, OLD.period
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
  FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
