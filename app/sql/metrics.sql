-- outbox_backlog --
-- Dispatch intents written more than a second ago and still in the table (a published
-- one is deleted within a fraction of a second), and the age in seconds of the oldest row
-- (0 when none).
SELECT count(*) FILTER (WHERE created_at < clock_timestamp() - interval '1 second') AS backlog,
       COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float AS oldest_age
  FROM outbox

-- oldest_pending_checkpoint_age --
-- Seconds since the oldest PENDING checkpoint was created (0 when none is pending).
SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float
  FROM checkpoints
 WHERE status = :checkpoint_pending
