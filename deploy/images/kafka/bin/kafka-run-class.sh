#!/usr/bin/env bash
# Kafka's kafka-run-class.sh, reduced to what the stand-in image needs: java with every jar of
# /opt/kafka/libs on the classpath and the same environment knobs (KAFKA_HEAP_OPTS, KAFKA_OPTS, ...).
set -euo pipefail
class=$1; shift
log4j=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties}
# shellcheck disable=SC2086 # the *_OPTS variables are word lists, as in Kafka's script
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true} \
  $log4j ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*' "$class" "$@"
