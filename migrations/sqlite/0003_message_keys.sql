-- Idempotency keys leave `messages`: a unique index on random keys cost about one dirtied index
-- page per message in every commit. They live in the key store now (SQLite: the file next to this
-- one, `<name>-keys.db`, migrations/sqlite-keys), written in sorted batches off the commit path
-- (server/src/chat/keys.rs). At the first start after this migration the key store is empty and
-- every stored message's key is merged into it before the server takes messages.
DROP INDEX messages_client_msg_id;
