-- Landworld schema, PostgreSQL flavour. Times are Unix milliseconds (BIGINT) so that the same
-- queries run on SQLite and PostgreSQL.
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    username      TEXT NOT NULL,
    display_name  TEXT,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    BIGINT NOT NULL,
    last_seen     BIGINT
);
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));

CREATE TABLE lands (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    x           INTEGER NOT NULL,
    y           INTEGER NOT NULL,
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    owner_id    UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE positions (
    user_id    UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    x          INTEGER NOT NULL,
    y          INTEGER NOT NULL,
    radius     INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);
