-- Idempotency keys leave `messages`: a unique index on random keys cost about one dirtied index
-- page per message in every commit. They move to `message_keys`, written in sorted batches off the
-- commit path by a connection of their own (server/src/chat/keys.rs), with, per session, the seq
-- up to which every message's key is merged. At the first start after this migration the table
-- is empty and every stored message's key is merged into it before the server takes messages.
-- `key_hash`: SipHash-1-3 of (sender, client_msg_id) (chat/keys.rs): an integer first in the key
-- keeps each insert's comparisons cheap; sender and id complete the key, so it stays exact.
-- The message's session, seq and time are read from `messages` for the rare key looked up.
CREATE TABLE message_keys (
    key_hash      BIGINT NOT NULL,
    sender_id     UUID NOT NULL,
    client_msg_id TEXT NOT NULL,
    message_id    UUID NOT NULL,
    PRIMARY KEY (key_hash, sender_id, client_msg_id)
);

CREATE TABLE message_keys_merged (
    session_id UUID PRIMARY KEY,
    seq        BIGINT NOT NULL
);

DROP INDEX messages_client_msg_id;
