-- Recordings of broadcasts and the journal of their fragments. The recorder
-- writes a fragment row once the fragment is closed and spooled (uploaded
-- 0), marks it uploaded when the object store has it, and finalises the
-- recording from these rows: after a crash, `state` still says
-- `recording` and the rows say exactly what reached the store.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    broadcast TEXT,
    state TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    size BIGINT NOT NULL DEFAULT 0,
    codecs TEXT NOT NULL DEFAULT '',
    width BIGINT NOT NULL DEFAULT 0,
    height BIGINT NOT NULL DEFAULT 0,
    init_object TEXT,
    thumbnail_object TEXT,
    error TEXT
);
CREATE INDEX recordings_stream ON recordings(stream, started_at);
CREATE INDEX recordings_state ON recordings(state);

-- `idx` is the fragment's index (sample sizes, durations, flags, where its
-- media sits) as JSON: what the final MP4's header is built from.
CREATE TABLE recording_fragments (
    recording TEXT NOT NULL,
    seq BIGINT NOT NULL,
    object TEXT NOT NULL,
    size BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    uploaded BIGINT NOT NULL DEFAULT 0,
    idx TEXT NOT NULL,
    PRIMARY KEY (recording, seq)
);
