# syntax=docker/dockerfile:1
# lumen in a container: `docker build -t lumen:0.1.0 .` from the repository
# root. deploy/README.md says how to run it; deploy/k8s/ holds Kubernetes
# manifests that use it.

FROM rust:1.95-bookworm AS builder
# nasm: the assembly of the video codecs (the same package CI installs).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: the dependency versions of Cargo.lock, nothing newer. The cache
# mounts keep the registry and the build between image builds; the binary
# is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lumen \
 && cp target/release/lumen /usr/local/bin/lumen

FROM debian:bookworm-slim
# ca-certificates: HTTPS to object stores, JWKS and webhooks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/lumen --create-home lumen
COPY --from=builder /usr/local/bin/lumen /usr/local/bin/lumen
# A container is reached from outside: listen on every address (lumen's own
# defaults are loopback). Media workers use 8000, 8001, ... one per core
# (`--workers` fixes the count).
ENV LUMEN_DATA_DIR=/var/lib/lumen \
    LUMEN_HTTP_ADDR=0.0.0.0:8080 \
    LUMEN_RTC_ADDR=0.0.0.0:8000
WORKDIR /var/lib/lumen
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080/tcp 8000/udp 8001/udp
# On SIGTERM (docker stop, Kubernetes) `lumen serve` drains: it takes no
# new sessions, sends its viewers to another node of the cluster and stops
# once they have gone or after --drain-timeout (LUMEN_DRAIN_TIMEOUT).
# SIGINT (Ctrl-C) stops at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lumen"]
CMD ["serve"]
