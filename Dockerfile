# The estate's services, Orders and Stock, and its one-shot set-up, from one multi-stage build.
#
#   docker build --target orders      -t backbone/orders .
#   docker build --target stock       -t backbone/stock  .
#   docker build --target estate-init -t backbone/estate-init .   # `backbone estate apply`
#
# The targets share the `build` stage (one cargo invocation compiles every binary), and that stage
# starts from a dependency layer: the workspace's manifests and Cargo.lock with stub sources, compiled
# once, so editing a service's code rebuilds only the workspace crates, not librdkafka and the ~300
# dependencies. Runtime: Debian slim, ca-certificates and libssl only, a non-root user, no shell
# tools beyond Debian's base. Probes are HTTP (`/healthz`, `/readyz`): compose and Kubernetes do them.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm
# Where the runtime images take the binaries (/out/orders, /out/stock, /out/backbone) from: the
# `build` stage below (compiled in the image), or an image holding binaries compiled elsewhere, as CI
# does (`.ci/compose`: `--build-arg BINARIES=backbone/binaries:ci`, an image of the host's binaries).
# BuildKit builds only the stages a target needs, so the Rust image is then neither pulled nor run.
ARG BINARIES=build
# The workspace's services, each a binary of the same name and a target below (`backbone new service`
# adds its own name here and its target at the end of this file).
ARG SERVICES="orders stock"

# --- Toolchain: Rust (pinned like rust-toolchain.toml) and librdkafka's C build dependencies. ------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS toolchain
ARG RUST_VERSION
# Versions come with the pinned Debian release; pinning each one would break on every point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
# rust-toolchain.toml (copied with the sources) also lists rustfmt and clippy, which a release build
# does not need and the slim image lacks: name the toolchain so rustup never tries to download them.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src

# --- The workspace's skeleton: every manifest, the lock file, stub sources. -----------------------
# Derived from the sources, so a new workspace member needs no edit here; the layer's content (and so
# the dependency layer's cache key) changes only when a manifest or Cargo.lock does.
FROM toolchain AS skeleton
SHELL ["/bin/bash", "-eu", "-o", "pipefail", "-c"]
WORKDIR /context
COPY . .
RUN mkdir -p /skeleton && cp Cargo.toml Cargo.lock /skeleton/ \
 && find . -mindepth 2 -name Cargo.toml -not -path './target/*' | while read -r manifest; do \
      dir=$(dirname "$manifest"); mkdir -p "/skeleton/$dir/src"; cp "$manifest" "/skeleton/$dir/"; \
      echo 'fn main() {}' > "/skeleton/$dir/src/main.rs"; : > "/skeleton/$dir/src/lib.rs"; \
    done

# --- Dependencies, then the services. -------------------------------------------------------------
FROM toolchain AS build
ARG SERVICES
WORKDIR /src
COPY --from=skeleton /skeleton ./
# hadolint ignore=SC2046
RUN cargo build --release --locked -p backbone-cli $(printf -- '-p %s ' ${SERVICES})
COPY . .
# The real sources may be older than the stubs' build (COPY keeps their mtimes): touch them so cargo
# rebuilds every workspace crate instead of keeping a stub.
# hadolint ignore=SC2046
RUN find framework services schemas -type f -exec touch {} + \
 && cargo build --release --locked -p backbone-cli $(printf -- '-p %s ' ${SERVICES}) \
 && mkdir -p /out \
 && cp target/release/backbone $(printf -- 'target/release/%s ' ${SERVICES}) /out/

# --- The binaries the runtime images take: the build stage's, or BINARIES' image's. -----------------
# hadolint ignore=DL3006
FROM ${BINARIES} AS binaries

# --- Runtime. -------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 backbone \
 && useradd --system --uid 10001 --gid backbone --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin backbone \
 && install -d -o backbone -g backbone -m 0750 /var/lib/backbone
# /var/lib/backbone: the services' local state (tables' stores); a volume in compose, an emptyDir in
# Kubernetes. The root filesystem can be read-only.
ENV BACKBONE_HTTP_ADDR=0.0.0.0:8080 \
    BACKBONE_STATE_DIR=/var/lib/backbone \
    RUST_LOG=info
WORKDIR /var/lib/backbone
USER 10001:10001
EXPOSE 8080
# The services drain and flush on SIGTERM within BACKBONE_SHUTDOWN_TIMEOUT_MS (30 s by default):
# give `docker stop` a longer timeout (compose: stop_grace_period) than that.
STOPSIGNAL SIGTERM

FROM runtime AS orders
COPY --from=binaries /out/orders /usr/local/bin/orders
ENTRYPOINT ["/usr/local/bin/orders"]

FROM runtime AS stock
COPY --from=binaries /out/stock /usr/local/bin/stock
ENTRYPOINT ["/usr/local/bin/stock"]

# What Kafka enforces for the estate, from the services' own declarations: their topics, the ACLs of
# each service's principal and its quotas, applied by `backbone estate apply` (idempotent) with the
# specs the service binaries print (`--spec`). Run once, as a super user, before the services start.
FROM runtime AS estate-init
ARG SERVICES
ENV BACKBONE_SERVICES=${SERVICES}
COPY --from=binaries /out/ /usr/local/bin/
# `backbone estate apply --bin /usr/local/bin/<service>` for each of BACKBONE_SERVICES.
ENTRYPOINT ["/bin/sh", "-c", "set --; for s in $BACKBONE_SERVICES; do set -- \"$@\" --bin \"/usr/local/bin/$s\"; done; exec /usr/local/bin/backbone estate apply \"$@\""]

# The estate console (`backbone console`): services, topics, groups with live lag, dead letters,
# schemas, in a browser, from the same specs. Read-only unless BACKBONE_CONSOLE_ALLOW_REPLAY=true;
# listens on BACKBONE_CONSOLE_LISTEN (0.0.0.0:9000 here: publish it on loopback only).
FROM estate-init AS console
ENV BACKBONE_CONSOLE_LISTEN=0.0.0.0:9000
EXPOSE 9000
ENTRYPOINT ["/bin/sh", "-c", "set --; for s in $BACKBONE_SERVICES; do set -- \"$@\" --bin \"/usr/local/bin/$s\"; done; exec /usr/local/bin/backbone console \"$@\""]
