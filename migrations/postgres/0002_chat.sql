-- Chat, PostgreSQL flavour. Message content is stored only as AES-256-GCM ciphertext (nonce and key id
-- per row); `last_seq` on the session keeps per-room sequence numbers gapless across retention.
CREATE TABLE chat_sessions (
    id         UUID PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('land', 'private', 'group', 'proximity')),
    name       TEXT NOT NULL,
    land_id    UUID UNIQUE REFERENCES lands (id) ON DELETE CASCADE,
    pair_key   TEXT UNIQUE,
    created_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX chat_sessions_one_proximity ON chat_sessions (kind) WHERE kind = 'proximity';

-- Members of private and group sessions.
CREATE TABLE chat_members (
    session_id UUID NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id);

-- Read markers (any kind of session).
CREATE TABLE chat_reads (
    session_id UUID NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE messages (
    id            UUID PRIMARY KEY,
    session_id    UUID NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    sender_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_msg_id TEXT,
    key_id        INTEGER NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    pos_x         INTEGER,
    pos_y         INTEGER,
    created_at    BIGINT NOT NULL,
    deleted_at    BIGINT,
    UNIQUE (session_id, seq)
);
-- client_msg_id first: the writer looks up a batch of keys with `client_msg_id IN (…)`.
CREATE UNIQUE INDEX messages_client_msg_id ON messages (client_msg_id, sender_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_created_at ON messages (created_at);

-- Who received a proximity message (its history is visible to them only).
CREATE TABLE message_recipients (
    message_id UUID NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX message_recipients_message ON message_recipients (message_id);
