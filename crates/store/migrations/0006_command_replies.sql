-- What a device answered a command that expects a reply (a JSON value:
-- its result, or its own error when the command failed with
-- `device_error`). Commands awaiting a reply are found by
-- (status, expires_at_ms), which holds their reply deadline.
ALTER TABLE commands ADD COLUMN reply TEXT;
