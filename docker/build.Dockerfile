# The cargo-chef build of the six binaries, for machines that can pull the Rust toolchain image.
#
#   docker build -f docker/build.Dockerfile -t akka-cqrs-rs/binaries:0.1.0 .
#
# (scripts/build-images.sh does this unless it is given --from-host.) The build context is the
# repository root; .dockerignore keeps target/ and .git out. The result is an image holding only
# /out/{lighthouse,trade-processor,traders,pricing,pricing-web,tradectl}, which docker/Dockerfile
# copies into the runtime stage (its BINARIES_IMAGE argument). Binaries built on the host
# (`cargo build --release`) go into an image of the same shape through
# docker/host-binaries.Dockerfile, so the runtime images do not differ between the two paths.
#
# Stages:
#   chef      Rust toolchain + cargo-chef
#   planner   computes recipe.json: the workspace's dependency graph without our own code
#   builder   builds the dependencies from recipe.json (a cached layer that only changes when a
#             Cargo.toml or Cargo.lock changes), then our code, then copies the six binaries to /out
#   binaries  the six binaries alone (FROM scratch)
#
# No `# syntax=` line and no BuildKit-only instructions: the classic builder builds it too.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# cargo-chef turns the workspace manifests into a "recipe" so dependency compilation gets its own
# Docker layer. Pinned so image builds are reproducible.
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

# ---------------------------------------------------------------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependency-caching step: compiles every third-party crate of the workspace. This layer is reused
# as long as no manifest or the lock file changes, so editing our own code rebuilds in seconds.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The five services and the operator CLI (package `ctl`, binary `tradectl`).
RUN cargo build --release --locked \
        -p lighthouse -p trade-processor -p traders -p pricing -p pricing-web -p ctl \
    && mkdir -p /out \
    && cp target/release/lighthouse target/release/trade-processor target/release/traders \
          target/release/pricing target/release/pricing-web target/release/tradectl /out/

# ---------------------------------------------------------------------------------------------
FROM scratch AS binaries
COPY --from=builder /out/ /out/
