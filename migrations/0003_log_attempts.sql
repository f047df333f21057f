-- Each attempt of a job (a requeued job runs again) has its own log.
ALTER TABLE job_logs ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE job_logs ALTER COLUMN attempt DROP DEFAULT;
ALTER TABLE job_logs DROP CONSTRAINT job_logs_pkey;
ALTER TABLE job_logs ADD PRIMARY KEY (job_id, attempt, offset_bytes);
