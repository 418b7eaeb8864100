#!/usr/bin/env bash
# One-shot set-up of the compose estate's broker, run as the super user `admin` with the image's own
# tools once the broker is healthy. Idempotent: adding an ACL or a quota that exists changes nothing.
#
# ACLs (the broker denies everything else: allow.everyone.if.no.acl.found=false). For each service S
# with peer P (orders <-> stock), principal User:S gets:
#   - All on topics, consumer groups and transactional ids prefixed `S.`: it creates and configures
#     its own topics (`S.public.*`, `S.private.*`, dead-letter and retry topics included), writes them,
#     consumes in groups `S.<handler>` (and `S.<handler>.retry`, for replayed dead letters) and
#     runs transactions with ids `S.*`. Nobody else may write them, and nobody else may read
#     `S.private.*`: private topics are private because no ACL grants them to anyone else.
#   - Read, Describe and DescribeConfigs on topics prefixed `P.public.`: it consumes the peer's
#     public contracts (and the peer's reply topics), never the peer's private state.
#   - IdempotentWrite on the cluster (idempotent producers; implied by Write on Kafka >= 3, kept for
#     brokers and tools that still check it).
# Quotas per user (kafka-configs.sh --entity-type users): produce and consume byte rates, so one
# service cannot starve the other on the shared broker.
set -euo pipefail
BIN=${KAFKA_BIN:-/opt/kafka/bin}
BOOTSTRAP=${BOOTSTRAP:-kafka:9092}
: "${ADMIN_PASSWORD:?}"
umask 077
admin=$(mktemp)
trap 'rm -f "$admin"' EXIT
cat > "$admin" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${ADMIN_PASSWORD}";
PROPS

acls() { "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$admin" "$@" >/dev/null; }

for pair in orders:stock stock:orders; do
  service=${pair%%:*} peer=${pair#*:}
  acls --add --allow-principal "User:$service" --operation All \
    --resource-pattern-type prefixed \
    --topic "$service." --group "$service." --transactional-id "$service."
  acls --add --allow-principal "User:$service" \
    --operation Read --operation Describe --operation DescribeConfigs \
    --resource-pattern-type prefixed --topic "$peer.public."
done
acls --add --allow-principal User:orders --allow-principal User:stock --operation IdempotentWrite --cluster

quota() { # user producer_byte_rate consumer_byte_rate
  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$admin" --alter \
    --entity-type users --entity-name "$1" \
    --add-config "producer_byte_rate=$2,consumer_byte_rate=$3" >/dev/null
}
quota orders "${ORDERS_PRODUCER_BYTE_RATE:-10485760}" "${ORDERS_CONSUMER_BYTE_RATE:-20971520}"
quota stock "${STOCK_PRODUCER_BYTE_RATE:-10485760}" "${STOCK_CONSUMER_BYTE_RATE:-20971520}"

# The result, in the init container's log.
"$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$admin" --list
"$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$admin" --describe --entity-type users
echo "kafka-init: ACLs and quotas for orders and stock are in place"
