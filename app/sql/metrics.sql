-- outbox_backlog --
-- Dispatch intents not yet published, and the age in seconds of the oldest (0 when none).
SELECT count(*) AS backlog,
       COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float AS oldest_age
  FROM outbox

-- oldest_pending_checkpoint_age --
-- Seconds since the oldest PENDING checkpoint was created (0 when none is pending).
SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float
  FROM checkpoints
 WHERE status = 'PENDING'
