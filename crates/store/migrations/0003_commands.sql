-- Devices registered through the API. A deleted device keeps its row with
-- `revoked_at_ms` set: tokens issued before then are refused, and a device
-- created again under the same id gets tokens issued after it.
CREATE TABLE devices (
    id            TEXT PRIMARY KEY NOT NULL,
    model         TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

-- Every command and its lifecycle: requested, then queued or dispatched,
-- then exactly one of delivered, failed, rejected, expired.
CREATE TABLE commands (
    id              TEXT PRIMARY KEY NOT NULL,
    device          TEXT NOT NULL,
    model           TEXT NOT NULL,
    command         TEXT NOT NULL,
    -- The first event of the chain that asked for it (a frame, an API call).
    correlation     TEXT NOT NULL,
    args            TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL,
    reason          TEXT,
    argument        TEXT,
    detail          TEXT,
    -- The Socket instance it was sent through.
    instance        TEXT,
    ttl_ms          BIGINT,
    expires_at_ms   BIGINT,
    requested_at_ms BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX commands_by_device ON commands (device, requested_at_ms);
CREATE INDEX commands_by_status ON commands (status, expires_at_ms);

-- Events written in the same transaction as the rows they describe, and
-- published by the instance that wrote them (the transactional outbox).
CREATE TABLE outbox (
    seq           {{serial_primary_key}},
    instance      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    event_key     TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX outbox_by_instance ON outbox (instance, seq);
