-- The key store becomes a tree of sorted runs (server/src/store/keys.rs): each merge of the
-- writer's keys writes a table of its own, `message_key_run_<n>`, in key order, and runs of one
-- size are compacted into a bigger one, instead of random inserts into one table whose cost grows
-- with it (docs/performance.md, "Idempotency keys in sorted runs").
-- `message_key_runs` lists the live runs; a run table missing from it is dropped at start.
CREATE TABLE message_key_runs (
    run  BIGINT PRIMARY KEY,
    keys BIGINT NOT NULL
);
ALTER TABLE message_keys RENAME TO message_key_run_0;
-- An empty table (a new store) is not listed, so the first open drops it.
INSERT INTO message_key_runs (run, keys) SELECT 0, COUNT(*) FROM message_key_run_0 HAVING COUNT(*) > 0;
