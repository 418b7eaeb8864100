#!/usr/bin/env bash
# Starts one of the compose estate's brokers (apache/kafka image; three combined broker+controller
# nodes). The credentials come from the environment (ADMIN_PASSWORD, ORDERS_PASSWORD, STOCK_PASSWORD,
# REGISTRY_PASSWORD):
#
# - admin logs in with SASL/PLAIN (the nodes among themselves, the controller listener, the estate's
#   init container and the healthcheck); no other PLAIN account exists.
# - orders, stock and registry log in with SASL/SCRAM-SHA-512. SCRAM credentials live in the cluster's
#   metadata log: they are added when the node's storage is formatted (`kafka-storage format
#   --add-scram`, KIP-900), the same on every node, before the image's own start script runs (which
#   then finds the storage formatted and leaves it).
#
# The JAAS file is passed with KAFKA_OPTS (-Djava.security.auth.login.config) rather than as a
# `listener.name.*.sasl.jaas.config` KAFKA_* variable: the image turns KAFKA_* variables into
# server.properties lines and drops any whose value contains `=`, as a JAAS line does.
set -euo pipefail
: "${ADMIN_PASSWORD:?}" "${ORDERS_PASSWORD:?}" "${STOCK_PASSWORD:?}" "${REGISTRY_PASSWORD:?}"
: "${CLUSTER_ID:?}" "${KAFKA_NODE_ID:?}" "${KAFKA_LOG_DIRS:?}"
umask 077
# One KafkaServer section serves every listener: PLAIN with the one account admin (username/password
# is what this node itself logs in with, to the controllers and as the inter-broker client), and SCRAM,
# whose accounts are in the metadata log.
cat > /tmp/kafka_server_jaas.conf <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="admin" password="${ADMIN_PASSWORD}"
  user_admin="${ADMIN_PASSWORD}";
  org.apache.kafka.common.security.scram.ScramLoginModule required;
};
JAAS
# For the healthcheck (and anyone exec-ing a tool into the container).
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${ADMIN_PASSWORD}";
PROPS
# Format with the SCRAM users (what format reads of the configuration: the node, its roles, quorum,
# listeners and log directories). A node formatted before (a restarted container) is left as it is.
cat > /tmp/format.properties <<PROPS
process.roles=${KAFKA_PROCESS_ROLES}
node.id=${KAFKA_NODE_ID}
controller.quorum.voters=${KAFKA_CONTROLLER_QUORUM_VOTERS}
controller.listener.names=${KAFKA_CONTROLLER_LISTENER_NAMES}
listeners=${KAFKA_LISTENERS}
advertised.listeners=${KAFKA_ADVERTISED_LISTENERS}
listener.security.protocol.map=${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP}
inter.broker.listener.name=${KAFKA_INTER_BROKER_LISTENER_NAME}
sasl.enabled.mechanisms=${KAFKA_SASL_ENABLED_MECHANISMS}
sasl.mechanism.inter.broker.protocol=${KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL}
sasl.mechanism.controller.protocol=${KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL}
log.dirs=${KAFKA_LOG_DIRS}
PROPS
scram=()
for user in admin orders stock registry; do
  var=${user^^}_PASSWORD
  scram+=(--add-scram "SCRAM-SHA-512=[name=${user},password=${!var}]")
done
/opt/kafka/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config /tmp/format.properties \
  --ignore-formatted "${scram[@]}"
rm -f /tmp/format.properties
exec /etc/kafka/docker/run
