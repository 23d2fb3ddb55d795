-- claim_step --
-- Take the claim on a job's current step, or on one whose holder's lease lapsed.
UPDATE jobs
   SET status = 'RUNNING',
       claim_step_id = :attempt_id,
       step_attempts = step_attempts + 1,
       started_at = coalesce(started_at, clock_timestamp()),
       updated_at = clock_timestamp()
 WHERE id = :job_id
   AND current_step = :step
   AND status IN ('PENDING', 'RUNNING')
   AND (claim_step_id IS NULL
        OR claim_step_id IN (SELECT s.id FROM job_steps s
                              WHERE s.id = jobs.claim_step_id
                                AND (s.status <> 'running' OR s.lease_expires_at < clock_timestamp())))
RETURNING id, job_type, step_attempts

-- record_attempt --
-- Write the ledger row of a claimed step attempt, numbered after the job's earlier attempts.
INSERT INTO job_steps (id, job_id, step, attempt, worker, task_id, lease_expires_at)
SELECT :attempt_id, :job_id, :step, coalesce(max(attempt), 0) + 1, :worker, :task_id,
       clock_timestamp() + make_interval(secs => :lease_seconds)
  FROM job_steps
 WHERE job_id = :job_id AND step = :step
RETURNING attempt

-- supersede_attempts --
-- Mark other running attempts of a step lost once a new attempt holds the claim.
UPDATE job_steps
   SET status = 'lost', finished_at = clock_timestamp(),
       error = 'superseded: the claim lease lapsed and another attempt took the step'
 WHERE job_id = :job_id AND step = :step AND status = 'running' AND id <> :attempt_id

-- renew_lease --
-- Extend a running attempt's claim lease; no row means the attempt lost its claim.
UPDATE job_steps
   SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_seconds)
 WHERE id = :attempt_id AND status = 'running'
RETURNING id

-- claim_outbox --
-- Lock due dispatch intents for publishing; concurrent publishers take disjoint rows.
SELECT o.id, o.job_id, o.step, o.traceparent, o.baggage, j.job_type, j.priority, j.status
  FROM outbox o JOIN jobs j ON j.id = o.job_id
 WHERE (CAST(:ids AS uuid[]) IS NULL OR o.id = ANY(CAST(:ids AS uuid[])))
   AND o.available_at <= clock_timestamp() - make_interval(secs => :older_than)
 ORDER BY j.priority DESC, o.available_at
 LIMIT :limit
   FOR UPDATE OF o SKIP LOCKED

-- lapsed_leases --
-- Running attempts whose claim lease lapsed: their worker or its machine died.
SELECT s.id AS attempt_id, s.job_id, s.step
  FROM job_steps s JOIN jobs j ON j.id = s.job_id AND j.claim_step_id = s.id
 WHERE s.status = 'running' AND s.lease_expires_at < clock_timestamp()
 LIMIT :limit

-- stalled_jobs --
-- Runnable jobs that nobody runs and nothing will dispatch: a chain's next message was lost.
SELECT j.id AS job_id, j.current_step AS step
  FROM jobs j
 WHERE j.status IN ('PENDING', 'RUNNING')
   AND j.claim_step_id IS NULL
   AND j.updated_at < clock_timestamp() - make_interval(secs => :stall_seconds)
   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.id)
 LIMIT :limit

-- expired_checkpoints --
-- Pending checkpoints past their expiry time.
SELECT id FROM checkpoints
 WHERE status = 'PENDING' AND expires_at < clock_timestamp()
 LIMIT :limit

-- job_counts --
-- Jobs by status, for metrics and the fleet view.
SELECT status, count(*) AS n FROM jobs GROUP BY status
