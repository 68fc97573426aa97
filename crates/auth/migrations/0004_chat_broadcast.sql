-- Which broadcast a chat message was sent during (the publisher's WHIP
-- session id) and where in it (ms since the broadcast went live), so a
-- recording of that broadcast replays its chat in sync. NULL for messages
-- sent while the stream was offline, and for messages stored before this
-- migration.
ALTER TABLE chat_messages ADD COLUMN broadcast TEXT;
ALTER TABLE chat_messages ADD COLUMN media_ms BIGINT;
CREATE INDEX chat_messages_broadcast ON chat_messages(broadcast, media_ms);

-- The moderation queue: a report stays open until a moderator resolves it
-- (acted on or dismissed); who and when are kept.
ALTER TABLE chat_reports ADD COLUMN resolved_by TEXT;
ALTER TABLE chat_reports ADD COLUMN resolved_at BIGINT;
CREATE INDEX chat_reports_open ON chat_reports(resolved_at, ts);
