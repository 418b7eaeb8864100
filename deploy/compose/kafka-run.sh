#!/usr/bin/env bash
# Starts the compose estate's broker (apache/kafka image): writes the SASL/PLAIN credentials, which
# come from the environment (ADMIN_PASSWORD, ORDERS_PASSWORD, STOCK_PASSWORD), to a JAAS file and an
# admin client file under /tmp, then hands over to the image's own start script.
#
# The JAAS file is passed with KAFKA_OPTS (-Djava.security.auth.login.config) rather than as a
# `listener.name.*.sasl.jaas.config` KAFKA_* variable: the image turns KAFKA_* variables into
# server.properties lines and drops any whose value contains `=`, as a JAAS line does.
set -euo pipefail
: "${ADMIN_PASSWORD:?}" "${ORDERS_PASSWORD:?}" "${STOCK_PASSWORD:?}"
umask 077
# One KafkaServer section serves every listener (CONTROLLER, INTERNAL, EXTERNAL): user_<name> are the
# accounts; username/password is what this node itself logs in with (to its controller listener and
# as the inter-broker client), and admin is a super user.
cat > /tmp/kafka_server_jaas.conf <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="admin" password="${ADMIN_PASSWORD}"
  user_admin="${ADMIN_PASSWORD}"
  user_orders="${ORDERS_PASSWORD}"
  user_stock="${STOCK_PASSWORD}";
};
JAAS
# For the healthcheck (and anyone exec-ing a tool into the container).
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${ADMIN_PASSWORD}";
PROPS
exec /etc/kafka/docker/run
