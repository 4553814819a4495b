-- The key store becomes a tree of sorted runs (server/src/store/keys.rs): each merge of the
-- writer's keys writes a table of its own, `message_key_run_<n>`, in key order (appended, each
-- page written about once), and runs of one size are compacted into a bigger one. Before, every
-- key went into one table keyed by hash: random inserts, whose cost grew with the table until a
-- merge dirtied about one page per key (0.8 s of CPU per 10 s at 50,000 keys/s after 10 s,
-- 4.4 s after a minute: docs/performance.md, "Idempotency keys in sorted runs").
-- `message_key_runs` lists the live runs; a run table missing from it is dropped at start.
CREATE TABLE message_key_runs (
    run  INTEGER PRIMARY KEY NOT NULL,
    keys INTEGER NOT NULL
);
ALTER TABLE message_keys RENAME TO message_key_run_0;
-- An empty table (a new store) is not listed, so the first open drops it.
INSERT INTO message_key_runs (run, keys) SELECT 0, COUNT(*) FROM message_key_run_0 HAVING COUNT(*) > 0;
