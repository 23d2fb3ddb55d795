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
-- Pending checkpoints whose deadline passed by ``now``, with what their policy does then.
SELECT id, coalesce(policy->>'onTimeout', :on_timeout) AS on_timeout,
       CAST(policy->>'expiresIn' AS float8) AS expires_in
  FROM checkpoints
 WHERE status = :checkpoint_pending AND expires_at <= CAST(:now AS timestamptz)
 ORDER BY expires_at
 LIMIT :limit

-- fire_checkpoint_events --
-- Fire the reminders and escalations due by ``now`` of pending checkpoints, each once: the
-- rows a sweep claims are marked fired (a sweep running beside it skips them), an
-- escalation adds its approvers to a checkpoint that names some, and each writes a line on
-- its job's timeline. The events of checkpoints decided meanwhile are dropped.
WITH due AS (
    SELECT e.id FROM checkpoint_events e
     WHERE e.fired_at IS NULL AND e.due_at <= CAST(:now AS timestamptz)
     ORDER BY e.due_at
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
), dropped AS (
    DELETE FROM checkpoint_events e
     USING due, checkpoints c
     WHERE e.id = due.id AND c.id = e.checkpoint_id AND c.status <> :checkpoint_pending
), fired AS (
    UPDATE checkpoint_events e
       SET fired_at = clock_timestamp()
      FROM due, checkpoints c
     WHERE e.id = due.id AND c.id = e.checkpoint_id AND c.status = :checkpoint_pending
    RETURNING e.id, e.kind, e.data, e.checkpoint_id, c.job_id, c.handler, c.step, c.title,
              c.expires_at, c.approvers
), escalated AS (
    UPDATE checkpoints c
       SET approvers = ARRAY(SELECT DISTINCT a
                               FROM unnest(c.approvers || ARRAY(
                                        SELECT jsonb_array_elements_text(
                                                   fired.data->'escalateTo'))) AS a
                              ORDER BY a)
      FROM fired
     WHERE c.id = fired.checkpoint_id AND fired.kind = :event_escalation
       AND c.approvers IS NOT NULL
), logged AS (
    INSERT INTO job_logs (job_id, step, kind, message, data)
    SELECT fired.job_id, fired.step, fired.kind,
           CASE WHEN fired.kind = :event_reminder
                THEN format('Reminder: checkpoint "%s" is decided by its deadline in %s',
                            fired.title,
                            make_interval(secs => CAST(fired.data->>'before' AS float8)))
                ELSE format(CASE WHEN fired.approvers IS NULL
                                 THEN 'Escalated to %s: checkpoint "%s" is still waiting'
                                 ELSE 'Escalated: %s may now decide checkpoint "%s"' END,
                            array_to_string(ARRAY(SELECT jsonb_array_elements_text(
                                                          fired.data->'escalateTo')), ', '),
                            fired.title) END,
           jsonb_build_object('checkpointId', fired.checkpoint_id) || coalesce(fired.data, '{}')
      FROM fired
)
SELECT id, kind, data, checkpoint_id, job_id, handler FROM fired

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
