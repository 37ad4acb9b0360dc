# syntax=docker/dockerfile:1
#
# Docket's container image: the one binary on Debian slim, run as an unprivileged user.
#
#   docker build -t docket:0.1.0 .
#   docker run --rm -p 8000:8000 -v docket-data:/var/lib/docket docket:0.1.0
#
# The second command is the embedded default (API, worker and scheduler in one process, SQLite under
# /var/lib/docket/data). compose.yaml runs the roles separately on PostgreSQL and Redis; the
# subcommand is the container command (`api`, `worker`, `scheduler`, `migrate`, ...).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build -----------------------------------------------------------------------------------
# The builder and the runtime share the Debian release so the binary links against the same glibc.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src

# Dependencies first, compiled against a stub crate: this layer depends only on Cargo.toml and
# Cargo.lock, so editing the sources does not rebuild the several hundred dependencies. The stub's
# own artifacts are deleted afterwards so that the real build cannot mistake them for up to date.
COPY Cargo.toml Cargo.lock ./
COPY crates/docket-rules/Cargo.toml crates/docket-rules/
COPY crates/docket-types/Cargo.toml crates/docket-types/
RUN mkdir -p src crates/docket-rules/src crates/docket-types/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/docket-rules/src/lib.rs crates/docket-types/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src crates/*/src target/release/docket target/release/docket.d \
        target/release/deps/docket-* target/release/deps/libdocket-* \
        target/release/deps/docket_* target/release/deps/libdocket_* \
        target/release/.fingerprint/docket-*

# Migrations, the console's script and stylesheet and the vendored API docs viewers are compiled
# into the binary, so the runtime image needs none of these files.
COPY src ./src
COPY crates ./crates
COPY migrations ./migrations
COPY vendor ./vendor
RUN cargo build --release --locked

# --- runtime ---------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# Outgoing HTTPS (LLM and embedding APIs, S3, the http.request tool) verifies servers against the
# system's CA store. Time zones are compiled in (chrono-tz), so no tzdata. Unpinned on purpose:
# the CA list should be the release's current one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID so orchestrators can check runAsNonRoot and volumes can be prepared for it.
RUN groupadd --system --gid 10001 docket \
    && useradd --system --uid 10001 --gid docket --home-dir /var/lib/docket --no-create-home \
        --shell /usr/sbin/nologin docket \
    && install -d -o docket -g docket -m 0750 /var/lib/docket

COPY --from=build /src/target/release/docket /usr/local/bin/docket

USER 10001:10001
# The working directory is the volume: the defaults DATA_DIR=data and
# DATABASE_URL=sqlite://data/docket.db (and a `.env`, if one is put there) resolve inside it.
WORKDIR /var/lib/docket
VOLUME ["/var/lib/docket"]

# Docket listens on 127.0.0.1 by default, which nothing outside the container could reach.
ENV HOST=0.0.0.0
EXPOSE 8000

# SIGTERM starts the graceful shutdown (SHUTDOWN_GRACE_SECONDS, 30 by default): give containers a
# longer stop timeout than that, e.g. `stop_grace_period: 45s` in Compose.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["docket", "healthcheck"]

ENTRYPOINT ["docket"]
CMD ["all"]
