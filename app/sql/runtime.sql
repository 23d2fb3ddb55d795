-- claim_outbox --
-- Lock due dispatch intents for publishing; concurrent publishers take disjoint rows.
SELECT o.id, o.job_id, o.step, o.traceparent, o.baggage, o.continuation,
       j.job_type, j.priority, j.status
  FROM outbox o JOIN jobs j ON j.id = o.job_id
 WHERE o.available_at <= clock_timestamp() - make_interval(secs => :older_than)
 ORDER BY j.priority DESC, o.available_at
 LIMIT :limit
   FOR UPDATE OF o SKIP LOCKED

-- lapsed_leases --
-- Running attempts whose claim lease lapsed: their worker or its machine died.
SELECT s.id AS attempt_id, s.job_id, s.step
  FROM job_steps s JOIN jobs j ON j.id = s.job_id AND j.claim_step_id = s.id
 WHERE s.status = :step_running AND s.lease_expires_at < clock_timestamp()
 LIMIT :limit

-- stalled_jobs --
-- Runnable jobs that nobody runs and nothing will dispatch: a chain's next message was lost.
SELECT j.id AS job_id, j.current_step AS step
  FROM jobs j
 WHERE j.status IN (:job_pending, :job_running)
   AND j.claim_step_id IS NULL
   AND j.updated_at < clock_timestamp() - make_interval(secs => :stall_seconds)
   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.id)
 LIMIT :limit

-- expired_checkpoints --
-- Pending checkpoints past their expiry time.
SELECT id FROM checkpoints
 WHERE status = :checkpoint_pending AND expires_at < clock_timestamp()
 LIMIT :limit

-- job_counts --
-- Jobs by status, for metrics and the fleet view.
SELECT status, count(*) AS n FROM jobs GROUP BY status

-- held_steps --
-- Which of the given (job, step) pairs a running attempt holds with a live lease.
SELECT s.job_id, s.step
  FROM job_steps s
  JOIN unnest(CAST(:job_ids AS uuid[]), CAST(:steps AS text[])) AS given(job_id, step)
    ON given.job_id = s.job_id AND given.step = s.step
 WHERE s.status = :step_running AND s.lease_expires_at > clock_timestamp()

-- awaits_message --
-- The job waits at this step for a message: runnable, nobody claims it, no dispatch intent.
SELECT EXISTS (
    SELECT FROM jobs j
     WHERE j.id = :job_id AND j.current_step = :step
       AND j.status IN (:job_pending, :job_running) AND j.claim_step_id IS NULL
       AND NOT EXISTS (SELECT FROM outbox o WHERE o.job_id = j.id))
