-- The key store of an SQLite deployment (`<name>-keys.db` beside the database): every stored
-- message's idempotency key, and per session the seq up to which every message's key is here.
-- Everything in it can be rebuilt from `messages` (server/src/chat/keys.rs).
-- `key_hash`: SipHash-1-3 of (sender, client_msg_id) (chat/keys.rs): an integer first in the key
-- keeps each insert's comparisons cheap; sender and id complete the key, so it stays exact.
-- The message's session, seq and time are read from `messages` for the rare key looked up.
CREATE TABLE message_keys (
    key_hash      INTEGER NOT NULL,
    sender_id     BLOB NOT NULL,
    client_msg_id TEXT NOT NULL,
    message_id    BLOB NOT NULL,
    PRIMARY KEY (key_hash, sender_id, client_msg_id)
) WITHOUT ROWID;

CREATE TABLE message_keys_merged (
    session_id BLOB PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL
) WITHOUT ROWID;
