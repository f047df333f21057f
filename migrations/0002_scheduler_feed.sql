-- Change feed for the scheduling leader, and node draining.
--
-- Every change the scheduler cares about stamps the row with the id of the transaction
-- that made it (change_xid). The leader keeps its scheduler state between rounds and
-- reads only rows stamped by transactions it may not have seen yet: those with
-- change_xid >= the xmin of the snapshot of its previous read (every transaction below
-- that xmin had ended before that read, so its rows were already visible to it).
-- Columns the scheduler writes itself every round (reason, price_micros) and telemetry
-- that does not affect placement (utilization, memory, heartbeats) do not stamp.

CREATE FUNCTION stamp_change_xid() RETURNS trigger AS $$
BEGIN
  NEW.change_xid := pg_current_xact_id();
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

ALTER TABLE jobs ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX jobs_change_xid ON jobs (change_xid);
CREATE TRIGGER jobs_stamp BEFORE UPDATE ON jobs FOR EACH ROW
  WHEN ((OLD.state, OLD.attempt, OLD.stop_requested, OLD.started_ms, OLD.assigned_ms,
         OLD.stop_deadline_ms, OLD.bid_micros, OLD.tier, OLD.gpu_model)
        IS DISTINCT FROM
        (NEW.state, NEW.attempt, NEW.stop_requested, NEW.started_ms, NEW.assigned_ms,
         NEW.stop_deadline_ms, NEW.bid_micros, NEW.tier, NEW.gpu_model))
  EXECUTE FUNCTION stamp_change_xid();

-- Draining: like cordoned (no new work), and running jobs get a preemption notice.
ALTER TABLE nodes ADD COLUMN draining boolean NOT NULL DEFAULT false;
ALTER TABLE nodes ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX nodes_change_xid ON nodes (change_xid);
CREATE TRIGGER nodes_stamp BEFORE UPDATE ON nodes FOR EACH ROW
  WHEN ((OLD.gpu_model, OLD.fabric, OLD.cordoned, OLD.draining, OLD.lost)
        IS DISTINCT FROM (NEW.gpu_model, NEW.fabric, NEW.cordoned, NEW.draining, NEW.lost))
  EXECUTE FUNCTION stamp_change_xid();

ALTER TABLE gpus ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX gpus_change_xid ON gpus (change_xid);
CREATE TRIGGER gpus_stamp BEFORE UPDATE ON gpus FOR EACH ROW
  WHEN ((OLD.healthy, OLD.owner_busy, OLD.owner_reclaimed, OLD.owner_idle_since_ms)
        IS DISTINCT FROM (NEW.healthy, NEW.owner_busy, NEW.owner_reclaimed, NEW.owner_idle_since_ms))
  EXECUTE FUNCTION stamp_change_xid();
