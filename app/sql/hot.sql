-- authenticate --
-- The user of a bearer token (its SHA-256), unless the token was revoked; the token's
-- last use recorded when the time stored is more than a minute old (so at most one write a
-- minute per token, and never a wait: a token row another statement holds is skipped).
WITH used AS (
    UPDATE api_tokens SET last_used_at = clock_timestamp()
     WHERE id = (SELECT id FROM api_tokens
                  WHERE token_hash = :token_hash AND revoked_at IS NULL
                    AND (last_used_at IS NULL OR last_used_at < clock_timestamp() - interval '1 minute')
                    FOR UPDATE SKIP LOCKED)
)
SELECT u.id, u.name, u.is_admin
  FROM api_tokens t JOIN users u ON u.id = t.user_id
 WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL

-- enqueue --
-- A new PENDING job of the caller (a user by id, or the holder of an API token not revoked,
-- whose last use is recorded as ``authenticate`` records it), its "queued" log line and its
-- dispatch intent, in one statement. No row: no such caller.
-- A row without a job: the caller already used this Idempotency-Key, and nothing was written.
WITH caller AS (
    (SELECT id, name, is_admin FROM users WHERE id = :user_id
     UNION ALL
     SELECT u.id, u.name, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id
      WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL)
    LIMIT 1
), used AS (
    UPDATE api_tokens SET last_used_at = clock_timestamp()
     WHERE id = (SELECT id FROM api_tokens
                  WHERE token_hash = :token_hash AND revoked_at IS NULL
                    AND (last_used_at IS NULL OR last_used_at < clock_timestamp() - interval '1 minute')
                    FOR UPDATE SKIP LOCKED)
), job AS (
    INSERT INTO jobs (user_id, job_type, task_description, input_data, priority, status,
                      current_step, idempotency_key, review)
    SELECT caller.id, :job_type, :task_description, CAST(:input_data AS jsonb), :priority,
           :status, :step, :idempotency_key, CAST(:review AS jsonb)
      FROM caller
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, created_at, updated_at
), log AS (
    INSERT INTO job_logs (job_id, kind, message, created_at)
    SELECT id, 'queued', :message, created_at FROM job
    RETURNING id, created_at
), outbox AS (
    INSERT INTO outbox (job_id, step, traceparent, baggage)
    SELECT id, :step, :traceparent, :baggage FROM job
    RETURNING id
)
SELECT caller.id AS user_id, caller.name AS user_name, caller.is_admin,
       job.id, job.created_at, job.updated_at,
       log.id AS log_id, log.created_at AS log_created_at, outbox.id AS outbox_id
  FROM caller
  LEFT JOIN job ON true
  LEFT JOIN log ON true
  LEFT JOIN outbox ON true

-- claim_step --
-- Claim a job's current step for a new attempt (or take over one whose holder's lease
-- lapsed) in one statement: the guarded UPDATE, the attempt's ledger row, other running
-- attempts of the step marked lost, the dispatch intent that brought the step here
-- dropped; and what the step needs: the job, what earlier steps returned (each step's
-- latest successful attempt), the last approval on the job's way to this step (on a
-- checkpoint resuming at this step or at one that succeeded), so a retry after a later
-- rejection still sees an earlier approver's edit (the latest edit of its approvers), and
-- the last request for changes to this step's proposals. No row: it is not this step's turn.
WITH claimed AS (
    UPDATE jobs
       SET status = :status,
           claim_step_id = :attempt_id,
           step_attempts = step_attempts + 1,
           started_at = coalesce(started_at, clock_timestamp()),
           updated_at = clock_timestamp()
     WHERE id = :job_id
       AND current_step = :step
       AND status = ANY(:from_statuses)
       AND (claim_step_id IS NULL
            OR claim_step_id IN (SELECT s.id FROM job_steps s
                                  WHERE s.id = jobs.claim_step_id
                                    AND (s.status <> :step_running
                                         OR s.lease_expires_at < clock_timestamp())))
    RETURNING id, job_type, step_attempts, task_description, input_data, review
), attempt AS (
    INSERT INTO job_steps (id, job_id, step, attempt, worker, task_id, lease_expires_at)
    SELECT :attempt_id, claimed.id, :step,
           coalesce((SELECT max(attempt) FROM job_steps
                      WHERE job_id = :job_id AND step = :step), 0) + 1,
           :worker, :task_id, clock_timestamp() + make_interval(secs => :lease_seconds)
      FROM claimed
    RETURNING attempt
), superseded AS (
    UPDATE job_steps
       SET status = :step_lost, finished_at = clock_timestamp(),
           error = 'superseded: the claim lease lapsed and another attempt took the step'
     WHERE job_id = :job_id AND step = :step AND status = :step_running
       AND EXISTS (SELECT FROM claimed)
), dispatched AS (
    DELETE FROM outbox
     WHERE job_id = :job_id AND step = :step AND available_at <= clock_timestamp()
       AND EXISTS (SELECT FROM claimed)
)
SELECT claimed.job_type, claimed.step_attempts, claimed.task_description, claimed.input_data,
       claimed.review, attempt.attempt,
       (SELECT coalesce(jsonb_object_agg(o.step, o.output), '{}'::jsonb)
          FROM (SELECT DISTINCT ON (step) step, output FROM job_steps
                 WHERE job_id = :job_id AND status = :step_succeeded
                 ORDER BY step, attempt DESC) o) AS outputs,
       (SELECT jsonb_build_object(
                   'outcome', d.outcome, 'approver', coalesce(u.name, d.actor),
                   'reason', d.reason, 'option', d.option, 'proposed', c.data,
                   'checkpoint_id', c.id,
                   'data', (SELECT e.data FROM decisions e
                             WHERE e.checkpoint_id = c.id AND e.outcome = :outcome_approved
                               AND e.data IS NOT NULL
                             ORDER BY e.created_at DESC LIMIT 1))
          FROM decisions d
          JOIN checkpoints c ON c.id = d.checkpoint_id
          LEFT JOIN users u ON u.id = d.user_id
         WHERE c.job_id = :job_id AND c.status = :checkpoint_approved
           AND d.outcome = :outcome_approved
           AND (c.resume_step = :step
                OR c.resume_step IN (SELECT step FROM job_steps
                                      WHERE job_id = :job_id AND status = :step_succeeded))
         ORDER BY d.created_at DESC
         LIMIT 1) AS decision,
       (SELECT jsonb_build_object(
                   'text', d.reason, 'data', d.data, 'by', coalesce(u.name, d.actor),
                   'version', c.version, 'checkpoint_id', c.id)
          FROM decisions d
          JOIN checkpoints c ON c.id = d.checkpoint_id
          LEFT JOIN users u ON u.id = d.user_id
         WHERE c.job_id = :job_id AND c.step = :step
           AND d.outcome = :outcome_changes_requested
         ORDER BY d.created_at DESC
         LIMIT 1) AS feedback
  FROM claimed, attempt

-- finish_step --
-- Record a step's result and advance the job, in one statement: the job's guarded move
-- (the attempt must still hold the claim), the attempt, the checkpoints it opened (each the
-- next version of the step's checkpoints) with the reminders and escalations their
-- policies schedule, its log lines, and the next step's dispatch intent when ``dispatch``. No row: the attempt had lost
-- its claim and nothing was written.
WITH job AS (
    UPDATE jobs
       SET status = CAST(:status AS text),
           claim_step_id = NULL,
           current_step = :next_step,
           step_attempts = CASE WHEN :advanced THEN 0 ELSE step_attempts END,
           result = CASE WHEN :completed THEN CAST(:output AS jsonb) ELSE result END,
           finished_at = CASE WHEN :completed THEN clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = :job_id AND claim_step_id = :attempt_id AND status = ANY(:from_statuses)
    RETURNING id, status, job_type, priority, created_at, finished_at
), attempt AS (
    UPDATE job_steps
       SET status = :step_succeeded, output = CAST(:output AS jsonb),
           finished_at = clock_timestamp(), lease_expires_at = NULL
     WHERE id = :attempt_id AND status = :step_running AND EXISTS (SELECT FROM job)
), opened AS (
    INSERT INTO checkpoints (id, job_id, type, status, title, data, handler, step, resume_step,
                             expires_at, policy, approvers, version)
    SELECT c.id, job.id, c.type, c.status, c.title, c.data, job.job_type, CAST(:step AS text),
           :next_step,
           clock_timestamp() + make_interval(secs => c.expires_in), c.policy,
           CASE WHEN c.approvers IS NOT NULL
                THEN ARRAY(SELECT jsonb_array_elements_text(c.approvers)) END,
           1 + (SELECT count(*) FROM checkpoints p
                 WHERE p.job_id = job.id AND p.step = CAST(:step AS text) AND p.type = c.type)
      FROM job, jsonb_to_recordset(CAST(:checkpoints AS jsonb))
           AS c(id uuid, type text, status text, title text, data jsonb, expires_in float8,
                policy jsonb, approvers jsonb)
    RETURNING id, status
), scheduled AS (
    INSERT INTO checkpoint_events (checkpoint_id, kind, due_at, data)
    SELECT c.id, e.kind, clock_timestamp() + make_interval(secs => e.due_in), e.data
      FROM job, jsonb_to_recordset(CAST(:checkpoints AS jsonb)) AS c(id uuid, events jsonb),
           jsonb_to_recordset(coalesce(c.events, '[]')) AS e(kind text, due_in float8, data jsonb)
), logged AS (
    INSERT INTO job_logs (job_id, step, kind, message, data, created_at)
    SELECT job.id, l.step, l.kind, l.message, l.data, coalesce(l.at, clock_timestamp())
      FROM job, jsonb_to_recordset(CAST(:logs AS jsonb))
           AS l(step text, kind text, message text, data jsonb, at timestamptz)
), dispatch AS (
    INSERT INTO outbox (job_id, step, traceparent, baggage)
    SELECT id, :next_step, :traceparent, :baggage FROM job WHERE :dispatch
    RETURNING id
)
SELECT job.status, job.job_type, job.priority, job.created_at, job.finished_at,
       (SELECT id FROM opened WHERE status = :checkpoint_pending) AS checkpoint_id,
       (SELECT id FROM dispatch) AS outbox_id
  FROM job

-- fail_step --
-- Record a step's exception, in one statement: the job goes back to PENDING with a dispatch
-- intent due after the backoff (``retrying``) or fails; the attempt, and the log lines.
-- No row: the attempt had lost its claim and nothing was written.
WITH job AS (
    UPDATE jobs
       SET status = :status,
           claim_step_id = NULL,
           error = CASE WHEN :retrying THEN error ELSE :job_error END,
           finished_at = CASE WHEN :retrying THEN finished_at ELSE clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = :job_id AND claim_step_id = :attempt_id AND status = ANY(:from_statuses)
    RETURNING id, status, job_type, created_at, finished_at
), attempt AS (
    UPDATE job_steps
       SET status = :step_failed, error = :error, traceback = :traceback,
           finished_at = clock_timestamp(), lease_expires_at = NULL
     WHERE id = :attempt_id AND status = :step_running AND EXISTS (SELECT FROM job)
), logged AS (
    INSERT INTO job_logs (job_id, step, kind, message, data, created_at)
    SELECT job.id, l.step, l.kind, l.message, l.data, coalesce(l.at, clock_timestamp())
      FROM job, jsonb_to_recordset(CAST(:logs AS jsonb))
           AS l(step text, kind text, message text, data jsonb, at timestamptz)
), retry AS (
    INSERT INTO outbox (job_id, step, available_at, traceparent, baggage)
    SELECT id, :step, clock_timestamp() + make_interval(secs => :delay), :traceparent, :baggage
      FROM job WHERE :retrying
)
SELECT job.status, job.job_type, job.created_at, job.finished_at FROM job

-- discard_attempt --
-- Record the result of an attempt that had lost its claim (it changes nothing), and the
-- log lines it wrote.
WITH attempt AS (
    UPDATE job_steps
       SET status = :step_discarded, output = CAST(:output AS jsonb), error = :error,
           traceback = :traceback, finished_at = clock_timestamp(), lease_expires_at = NULL
     WHERE id = :attempt_id AND status = :step_running
)
INSERT INTO job_logs (job_id, step, kind, message, data, created_at)
SELECT :job_id, l.step, l.kind, l.message, l.data, coalesce(l.at, clock_timestamp())
  FROM jsonb_to_recordset(CAST(:logs AS jsonb))
       AS l(step text, kind text, message text, data jsonb, at timestamptz)

-- append_logs --
-- Log lines a running step wrote (progress shown while it runs).
INSERT INTO job_logs (job_id, step, kind, message, data, created_at)
SELECT :job_id, l.step, l.kind, l.message, l.data, coalesce(l.at, clock_timestamp())
  FROM jsonb_to_recordset(CAST(:logs AS jsonb))
       AS l(step text, kind text, message text, data jsonb, at timestamptz)

-- renew_leases --
-- Extend running attempts' claim leases; an attempt missing from the result lost its claim.
UPDATE job_steps
   SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_seconds)
 WHERE id = ANY(:attempt_ids) AND status = :step_running
RETURNING id

-- published --
-- Dispatch intents whose messages the broker took.
DELETE FROM outbox WHERE id = ANY(:ids)

-- unpublished --
-- Dispatch intents the broker refused; the sweep publishes them later.
UPDATE outbox SET attempts = attempts + 1, last_error = :error WHERE id = ANY(:ids)

-- decide --
-- A vote on a pending checkpoint, in one statement, by the caller: a user by id, the holder
-- of an API token not revoked (its last use recorded as ``authenticate`` records it), who
-- must be an admin; or a system actor (``:system_actor``: the deadline, once past ``:now``).
-- The job's row is locked first (as cancel locks it first), then the checkpoint's, so the
-- votes, cancels and expiries of one job take their turns and each vote counts those before
-- it. A user votes once, when ``agentq_may_decide`` lets them, on the version named (NULL:
-- the current). The vote settles the checkpoint when it is the last approval the policy
-- needs, a rejection that vetoes (or leaves too few who could still approve), a request
-- for changes (within ``maxRevisions``) or the system's; then the job moves: PENDING at the
-- resume step (or the option's) with a dispatch intent, COMPLETED with the last step's
-- output when there is no next step, PENDING at the checkpoint's step to propose again, or
-- FAILED. The decision and a log line are written for every vote. No row: no such caller.
-- A row without a checkpoint: no vote here (``app.state`` reads why).
WITH caller AS (
    (SELECT id, name, is_admin FROM users WHERE id = :user_id
     UNION ALL
     SELECT u.id, u.name, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id
      WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL
     UNION ALL
     SELECT NULL::uuid, CAST(:system_actor AS text), true
      WHERE CAST(:system_actor AS text) IS NOT NULL)
    LIMIT 1
), used AS (
    UPDATE api_tokens SET last_used_at = clock_timestamp()
     WHERE id = (SELECT id FROM api_tokens
                  WHERE token_hash = :token_hash AND revoked_at IS NULL
                    AND (last_used_at IS NULL OR last_used_at < clock_timestamp() - interval '1 minute')
                    FOR UPDATE SKIP LOCKED)
), target AS (
    SELECT j.id, j.status, j.user_id
      FROM jobs j
     WHERE j.id = (SELECT job_id FROM checkpoints WHERE id = :checkpoint_id)
       AND EXISTS (SELECT FROM caller WHERE is_admin)
       FOR UPDATE OF j
), current AS (
    -- Locked after the job: the row as the previous vote left it.
    SELECT c.id, c.status, c.version, c.approvers, c.approvals, c.rejections, c.voters,
           c.expires_at, c.policy, c.resume_step,
           target.status AS job_status, target.user_id AS owner_id,
           coalesce(CAST(c.policy->>'minApprovals' AS int), 1) AS needed,
           coalesce(CAST(c.policy->>'vetoOnReject' AS boolean), true) AS veto,
           coalesce(CAST(c.policy->>'allowSelfApproval' AS boolean), false) AS allow_self
      FROM checkpoints c JOIN target ON target.id = c.job_id
     WHERE c.id = :checkpoint_id
       FOR UPDATE OF c
), vote AS (
    SELECT current.id,
           CASE WHEN caller.id IS NULL
                  OR CAST(:outcome AS text) IN (:outcome_changes_requested, :outcome_expired)
                THEN CAST(:outcome AS text)
                WHEN :outcome = :outcome_approved
                THEN CASE WHEN current.approvals + 1 >= current.needed
                          THEN :checkpoint_approved ELSE :checkpoint_pending END
                WHEN current.veto
                  OR current.rejections + 1 > (SELECT count(*) FROM users u
                                                WHERE u.is_admin
                                                  AND agentq_may_decide(current.approvers,
                                                        current.allow_self, current.owner_id,
                                                        u.id, u.name)) - current.needed
                THEN :checkpoint_rejected
                ELSE :checkpoint_pending END AS status,
           (SELECT o->>'step' FROM jsonb_array_elements(current.policy->'options') o
             WHERE o->>'name' = :option) AS option_step
      FROM current, caller
     WHERE current.status = :checkpoint_pending
       AND current.job_status = :job_waiting_approval
       AND current.version = coalesce(CAST(:version AS int), current.version)
       AND (CAST(:option AS text) IS NULL
            OR current.policy->'options' @> jsonb_build_array(jsonb_build_object('name', :option)))
       AND (CAST(:outcome AS text) <> :outcome_changes_requested
            OR current.policy->>'maxRevisions' IS NULL
            OR current.version <= CAST(current.policy->>'maxRevisions' AS int))
       AND CASE WHEN caller.id IS NULL
                THEN current.expires_at <= CAST(:now AS timestamptz)
                ELSE NOT caller.id = ANY(current.voters)
                     AND agentq_may_decide(current.approvers, current.allow_self,
                                           current.owner_id, caller.id, caller.name) END
), checkpoint AS (
    UPDATE checkpoints c
       SET status = vote.status,
           approvals = c.approvals + CASE WHEN :outcome = :outcome_approved THEN 1 ELSE 0 END,
           rejections = c.rejections + CASE WHEN :outcome = :outcome_rejected THEN 1 ELSE 0 END,
           voters = CASE WHEN caller.id IS NULL THEN c.voters ELSE c.voters || caller.id END,
           -- Only the vote that approves chooses where the job resumes: an earlier vote's
           -- option, outvoted, must not steer the continuation.
           resume_step = CASE WHEN vote.status = :checkpoint_approved
                              THEN coalesce(vote.option_step, c.resume_step)
                              ELSE c.resume_step END,
           decided_at = CASE WHEN vote.status <> :checkpoint_pending THEN clock_timestamp() END
      FROM vote, caller
     WHERE c.id = vote.id
    RETURNING c.*
), decision AS (
    INSERT INTO decisions (checkpoint_id, user_id, actor, outcome, option, reason, data, ip,
                           user_agent)
    SELECT checkpoint.id, caller.id, CASE WHEN caller.id IS NULL THEN caller.name END,
           :outcome, :option, :reason, CAST(:data AS jsonb), CAST(:ip AS inet), :user_agent
      FROM checkpoint, caller
    RETURNING id, created_at
), job AS (
    UPDATE jobs j
       SET status = CASE WHEN checkpoint.status = :checkpoint_approved
                          AND checkpoint.resume_step IS NOT NULL THEN :job_pending
                         WHEN checkpoint.status = :checkpoint_approved THEN :job_completed
                         WHEN checkpoint.status = :checkpoint_changes_requested THEN :job_pending
                         ELSE :job_failed END,
           current_step = CASE WHEN checkpoint.status = :checkpoint_approved
                               THEN checkpoint.resume_step ELSE checkpoint.step END,
           step_attempts = CASE WHEN checkpoint.status IN (:checkpoint_approved,
                                                            :checkpoint_changes_requested)
                                THEN 0 ELSE j.step_attempts END,
           result = CASE WHEN checkpoint.status = :checkpoint_approved
                          AND checkpoint.resume_step IS NULL
                         THEN (SELECT s.output FROM job_steps s
                                WHERE s.job_id = j.id AND s.step = checkpoint.step
                                  AND s.status = :step_succeeded
                                ORDER BY s.attempt DESC LIMIT 1)
                         ELSE j.result END,
           error = CASE WHEN checkpoint.status IN (:checkpoint_approved,
                                                    :checkpoint_changes_requested)
                        THEN j.error ELSE :error END,
           finished_at = CASE WHEN checkpoint.status = :checkpoint_changes_requested
                                OR (checkpoint.status = :checkpoint_approved
                                    AND checkpoint.resume_step IS NOT NULL) THEN NULL
                              ELSE clock_timestamp() END,
           updated_at = clock_timestamp()
      FROM checkpoint
     WHERE j.id = checkpoint.job_id AND checkpoint.status <> :checkpoint_pending
    RETURNING j.id, j.status, j.current_step, j.job_type, j.priority, j.created_at,
              j.finished_at
), logged AS (
    INSERT INTO job_logs (job_id, step, kind, message)
    SELECT checkpoint.job_id, checkpoint.step,
           CASE WHEN checkpoint.status = :checkpoint_pending THEN 'vote' ELSE :log_kind END,
           concat(CASE WHEN checkpoint.status = :checkpoint_pending THEN CAST(:vote_head AS text)
                       ELSE CAST(:log_head AS text) END,
                  ' by ', caller.name,
                  CASE WHEN coalesce(CAST(checkpoint.policy->>'minApprovals' AS int), 1) > 1
                        AND :outcome = :outcome_approved
                       THEN format(' (%s/%s approvals)', checkpoint.approvals,
                                   checkpoint.policy->>'minApprovals') END,
                  ': ' || nullif(:reason, ''))
      FROM checkpoint, caller
), dispatch AS (
    INSERT INTO outbox (job_id, step, traceparent, baggage, continuation)
    SELECT job.id, job.current_step, :traceparent, :baggage, true
      FROM job
     WHERE job.status = :job_pending
    RETURNING id
)
SELECT caller.id AS user_id, caller.name AS user_name, caller.is_admin,
       decided.*
  FROM caller
  LEFT JOIN (
      SELECT checkpoint.*, decision.id AS decision_id,
             decision.created_at AS decision_created_at,
             job.status AS job_status, job.current_step AS job_step,
             job.priority AS job_priority,
             job.created_at AS job_created_at, job.finished_at AS job_finished_at,
             (SELECT id FROM dispatch) AS outbox_id
        FROM checkpoint CROSS JOIN decision LEFT JOIN job ON true
  ) decided ON true

-- pending_checkpoints --
-- A page of pending checkpoints, oldest first, after the keyset (created_at, id), each
-- with its job, owner and votes in the same row, and whether the viewer (a user by id and
-- name) may vote on it; ``job_type`` NULL: every type; ``mine``: only those the viewer may
-- vote on. Page 1 passes the smallest keyset there is, so every page is one range scan of
-- ix_checkpoints_pending.
SELECT c.id, c.job_id, c.type, c.status, c.title, c.data, c.step, c.resume_step,
       c.created_at, c.expires_at, c.decided_at, c.version, CAST(c.policy AS text) AS policy,
       c.approvers,
       c.approvals, c.rejections, may.decide AS may_decide,
       CASE WHEN c.voters = '{}' THEN '[]'::jsonb
            ELSE (SELECT jsonb_agg(jsonb_build_object(
                             'id', d.id, 'outcome', d.outcome,
                             'decided_by', coalesce(v.name, d.actor), 'user_id', d.user_id,
                             'reason', d.reason, 'option', d.option,
                             'created_at', d.created_at) ORDER BY d.created_at)
                    FROM decisions d LEFT JOIN users v ON v.id = d.user_id
                   WHERE d.checkpoint_id = c.id) END AS votes,
       j.job_type, j.task_description, j.input_data, j.priority, j.status AS job_status,
       j.current_step, j.result, j.error, j.user_id, u.name AS owner,
       j.created_at AS job_created_at, j.updated_at AS job_updated_at,
       j.started_at AS job_started_at, j.finished_at AS job_finished_at
  FROM checkpoints c
  JOIN jobs j ON j.id = c.job_id
  JOIN users u ON u.id = j.user_id
 CROSS JOIN LATERAL (
       SELECT NOT coalesce(CAST(:viewer_id AS uuid) = ANY(c.voters), false)
              AND agentq_may_decide(c.approvers,
                                    coalesce(CAST(c.policy->>'allowSelfApproval' AS boolean),
                                             false),
                                    j.user_id, CAST(:viewer_id AS uuid), :viewer_name)
              AS decide) may
 WHERE c.status = :checkpoint_pending
   AND (c.created_at, c.id) > (CAST(:after_created AS timestamptz), CAST(:after_id AS uuid))
   AND (CAST(:job_type AS text) IS NULL OR j.job_type = :job_type)
   AND (NOT :mine OR may.decide)
 ORDER BY c.created_at, c.id
 LIMIT :limit
