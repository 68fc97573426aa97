-- Accounts, streams, stream keys, web sessions, setup and invite codes,
-- and the revocation feed every node follows. Portable between SQLite and
-- PostgreSQL: text ids made by lumen, times and flags as BIGINT
-- (milliseconds since the epoch; 0/1).

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE streams (
    name TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    visibility TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX streams_owner ON streams(owner_id);

CREATE TABLE stream_keys (
    id TEXT PRIMARY KEY,
    stream TEXT NOT NULL REFERENCES streams(name) ON DELETE CASCADE,
    label TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX stream_keys_stream ON stream_keys(stream);

CREATE TABLE web_sessions (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);

CREATE TABLE setup_codes (
    hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE invites (
    hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_by TEXT
);

-- Credentials that ended: "key:<id>", "jwt:<jti>", "user:<id>". Every node
-- polls rows newer than its cursor and ends the live sessions they opened.
CREATE TABLE revocations (
    credential TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
CREATE INDEX revocations_at ON revocations(at);
