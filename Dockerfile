# The batchgate image: the one binary on a minimal base, run as a non-root user.
#
# From source (the Rust toolchain pinned in rust-toolchain.toml, in a build stage):
#   docker build -t batchgate .
# From a binary built outside the image (no Rust image needed; scripts/image-test.sh does this
# with podman on a base it assembles from the host's C libraries):
#   cargo build --release --locked -p batchgate
#   docker build --target prebuilt -t batchgate .
#
# Every server subcommand listens on 0.0.0.0:8080 in the image (BATCHGATE_LISTEN,
# BATCHGATE_WORKER_LISTEN), logs JSON, and is checked by `batchgate probe` (GET
# BATCHGATE_PROBE_URL, /healthz on 8080 by default). The binary is PID 1: it handles SIGTERM
# and SIGINT itself (readiness off, --shutdown-delay-ms, then the drain) and starts no child
# processes, so it needs no init. It writes nothing to disk: the root filesystem can be
# read-only.

# Must match rust-toolchain.toml.
ARG RUST_VERSION=1.95.0
# Debian 12's glibc, libgcc_s and CA certificates, user `nonroot` (65532), no shell.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p batchgate \
 && strip -o /batchgate target/release/batchgate

# What both variants share: base, user, environment, health check, entry point.
FROM ${RUNTIME_BASE} AS runtime
ENV BATCHGATE_LISTEN=0.0.0.0:8080 \
    BATCHGATE_WORKER_LISTEN=0.0.0.0:8080 \
    BATCHGATE_LOG_FORMAT=json \
    BATCHGATE_PROBE_URL=http://127.0.0.1:8080/healthz
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/batchgate", "probe"]
ENTRYPOINT ["/batchgate"]
CMD ["serve"]

# A binary built outside the image (`--build-arg BINARY=path/in/context`).
FROM runtime AS prebuilt
ARG BINARY=target/release/batchgate
COPY --chmod=0555 ${BINARY} /batchgate

# The default: the binary built in the build stage.
FROM runtime AS image
COPY --from=build --chmod=0555 /batchgate /batchgate
