# dockwatch container image: `docker compose build` or `docker build -t dockwatch .`
#
# The builder is the Debian bookworm flavour of rust:1.95 so that the binary links against the
# same glibc as the bookworm-slim runtime image.

FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Fetch and build the dependencies in their own layer, reused until Cargo.toml, Cargo.lock or
# the build script change. The build script only records the revision (see below).
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# Shown as the revision label of dockwatch_build_info: --build-arg DOCKWATCH_REVISION=$(git rev-parse --short HEAD)
ARG DOCKWATCH_REVISION=unknown
ENV DOCKWATCH_REVISION=${DOCKWATCH_REVISION}
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/dockwatch /usr/local/bin/dockwatch

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/dockwatch /usr/local/bin/dockwatch

# Root is needed to read the Docker socket and the host's /proc of other users' processes;
# every host path is mounted read-only (see docker-compose.yml and docs/stack.md).
EXPOSE 9487
ENTRYPOINT ["/usr/local/bin/dockwatch"]
