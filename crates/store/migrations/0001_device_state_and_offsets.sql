-- Device state written back by the Receiver (write-behind).
CREATE TABLE device_state (
    device        TEXT PRIMARY KEY NOT NULL,
    model         TEXT NOT NULL,
    -- Last reported values merged into one JSON object.
    reported      TEXT NOT NULL DEFAULT '{}',
    message_count BIGINT NOT NULL DEFAULT 0,
    -- Unix milliseconds of the device's last event.
    last_seen_ms  BIGINT,
    updated_at_ms BIGINT NOT NULL
);

-- Consumer positions committed in the same transaction as the state they
-- produced: the source of truth for where a consumer group resumes.
CREATE TABLE consumer_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition_id   BIGINT NOT NULL,
    next_offset    BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);
