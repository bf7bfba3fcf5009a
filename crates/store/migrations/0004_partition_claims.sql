-- Which owner of a partition may write back what it consumed. A consumer
-- that takes a partition over raises its epoch; every write-back checks
-- its own epoch in the same transaction, so a member that lost the
-- partition while stalled can no longer write stale states and lower
-- offsets over its successor's.
CREATE TABLE partition_claims (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition_id   BIGINT NOT NULL,
    epoch          BIGINT NOT NULL,
    claimed_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);
