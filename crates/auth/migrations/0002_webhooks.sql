-- Webhooks: the endpoints operators register, and the delivery queue that
-- is also each endpoint's delivery log. Portable like 0001: text ids made
-- by lumen, times as BIGINT milliseconds since the epoch, flags as 0/1.

-- `secret` is the `whsec_…` signing secret as given to the operator: it has
-- to be kept as is to sign, unlike keys, which are kept as digests.
-- `events` is the subscribed event types, separated by spaces.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);

-- One row per event and endpoint. `id` is the `webhook-id` header, the same
-- on every attempt so a receiver can drop duplicates. `status` is
-- `pending`, `delivered` or `failed`. A node claims a due row by moving its
-- `next_attempt_at` forward (a compare-and-set on the old value), so nodes
-- sharing a database do not both send it.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
-- The queue scan: only pending rows, by when they are due.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at)
    WHERE status = 'pending';
-- The delivery log of one endpoint, newest first.
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);
