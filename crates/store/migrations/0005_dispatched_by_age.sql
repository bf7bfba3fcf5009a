-- The Commander's sweep finds dispatched commands whose outcome is overdue
-- by the time they were dispatched (their last status change).
CREATE INDEX commands_by_status_age ON commands (status, updated_at_ms);
