-- The device twin: the state a device should be in, its connection, and
-- room for the business logic's own bookkeeping.
ALTER TABLE device_state ADD COLUMN desired TEXT NOT NULL DEFAULT '{}';
ALTER TABLE device_state ADD COLUMN connected BIGINT NOT NULL DEFAULT 0;
ALTER TABLE device_state ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
