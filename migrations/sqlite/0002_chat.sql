-- Chat, SQLite flavour. Message content is stored only as AES-256-GCM ciphertext (nonce and key id
-- per row); `last_seq` on the session keeps per-room sequence numbers gapless across retention.
CREATE TABLE chat_sessions (
    id         BLOB PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('land', 'private', 'group', 'proximity')),
    name       TEXT NOT NULL,
    land_id    BLOB UNIQUE REFERENCES lands (id) ON DELETE CASCADE,
    pair_key   TEXT UNIQUE,
    created_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX chat_sessions_one_proximity ON chat_sessions (kind) WHERE kind = 'proximity';

-- Members of private and group sessions.
CREATE TABLE chat_members (
    session_id BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id);

-- Read markers (any kind of session).
CREATE TABLE chat_reads (
    session_id BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE messages (
    id            BLOB PRIMARY KEY NOT NULL,
    session_id    BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    sender_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_msg_id TEXT,
    key_id        INTEGER NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    pos_x         INTEGER,
    pos_y         INTEGER,
    created_at    INTEGER NOT NULL,
    deleted_at    INTEGER,
    UNIQUE (session_id, seq)
);
-- client_msg_id first: the writer looks up a batch of keys with `client_msg_id IN (…)`.
CREATE UNIQUE INDEX messages_client_msg_id ON messages (client_msg_id, sender_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_created_at ON messages (created_at);

-- Who received a proximity message (its history is visible to them only).
CREATE TABLE message_recipients (
    message_id BLOB NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX message_recipients_message ON message_recipients (message_id);
