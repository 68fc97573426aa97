-- Chat: each stream's messages, its moderation log, reports, and the bans
-- and timeouts in force. Portable like 0001: text ids made by lumen, times
-- as BIGINT milliseconds since the epoch, flags as 0/1. No foreign key to
-- `streams`: a room exists for any stream a publisher may use (a service
-- token needs no stream row).

-- `id` is the room's message id, increasing within a stream; a restarted
-- room continues after the largest one.
CREATE TABLE chat_messages (
    stream TEXT NOT NULL,
    id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    ts BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, id)
);

-- `action` is the action as JSON (`{"kind":"delete","message":3}`); `seq`
-- orders the entries of one batch that share a millisecond.
CREATE TABLE chat_audit (
    id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    ts BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    actor TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    reason TEXT
);
CREATE INDEX chat_audit_stream ON chat_audit(stream, ts);

-- `message` is the reported message as JSON, as it was when reported.
CREATE TABLE chat_reports (
    id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    ts BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    reporter TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    message TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX chat_reports_stream ON chat_reports(stream, ts);

-- `until` is when a timeout ends; NULL for a ban.
CREATE TABLE chat_bans (
    stream TEXT NOT NULL,
    user_id TEXT NOT NULL,
    until BIGINT,
    PRIMARY KEY (stream, user_id)
);
