#!/bin/bash
# The official script's tool, for health checks.
exec java -Xmx96m -Dlog4j2.level=error -cp "/opt/kafka/libs/*" \
  org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
