-- Landworld schema, SQLite flavour. Ids are UUIDs stored as 16-byte BLOBs; times are Unix
-- milliseconds (INTEGER) so that the same queries run on SQLite and PostgreSQL.
CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    display_name  TEXT,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER
);
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));

CREATE TABLE lands (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    description TEXT,
    x           INTEGER NOT NULL,
    y           INTEGER NOT NULL,
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    owner_id    BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE positions (
    user_id    BLOB PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    x          INTEGER NOT NULL,
    y          INTEGER NOT NULL,
    radius     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
