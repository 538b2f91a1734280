# syntax=docker/dockerfile:1
# The orderflow binary in a small Debian image: one image for every role of the distributed
# stack (compose.yaml; README, "The distributed stack"), or for `serve` on its own:
#
#   docker build -t orderflow .
#   docker run --rm -p 127.0.0.1:8080:8080 -v orderflow-data:/var/lib/orderflow orderflow
#
# The demo catalog and promotions are compiled into the binary, so nothing but the binary is
# copied. Configuration comes from ORDERFLOW_* variables (README, "Configuration").

# The workspace's rust-version is 1.90 (Cargo.toml); any later 1.x builds it too.
ARG RUST_VERSION=1.90

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# tikv-jemalloc-sys builds jemalloc from its bundled sources with configure and make, and
# rdkafka-sys builds librdkafka from its bundled sources with librdkafka's own configure
# (mklove) and make, linking the system zlib (its default `libz` feature): the rust image's
# C toolchain, make and zlib1g-dev are all it needs; no cmake, no OpenSSL (no TLS features).
# The cache mounts keep the crate downloads and the target directory between builds, so a
# change to one crate recompiles that crate, not the dependency tree.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin orderflow \
    && install -m 0755 target/release/orderflow /usr/local/bin/orderflow

FROM debian:bookworm-slim
# The binary links glibc, libgcc_s and libz dynamically (all in the slim image);
# ca-certificates for any TLS endpoint a deployment points it at.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid, so volumes mounted at the working directory can be owned by it.
# The working directory holds what a process keeps on local disk: `./data` (the embedded log
# and stores of `serve`; the outbox of split workers).
RUN groupadd --gid 10001 orderflow \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/orderflow --shell /usr/sbin/nologin orderflow \
    && install -d -o 10001 -g 10001 -m 0755 /var/lib/orderflow
COPY --from=builder /usr/local/bin/orderflow /usr/local/bin/orderflow
USER 10001:10001
WORKDIR /var/lib/orderflow
# api.listen: every role serves HTTP on 8080 inside its container (workers: /metrics,
# /healthz, /readyz; the API process every route).
ENV ORDERFLOW_API_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `orderflow healthcheck` GETs /readyz on api.listen (127.0.0.1 when it is 0.0.0.0): exit 0
# when the process's log and stock ledger answer. A process waits up to 60 s for its log.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["orderflow", "healthcheck"]
ENTRYPOINT ["orderflow"]
CMD ["serve"]
