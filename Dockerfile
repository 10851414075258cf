# Builds stow-exporter. Run on its own, the image serves the embedded
# defaults (configuration from /app/ldif, data in /data, built-in receiver).
# Its control API listens on 0.0.0.0, so it needs a bearer token: give
# -e STOW_EXPORTER_API_TOKEN=... (or mount a file and --api-token-file);
# without one it refuses to start, naming the options.
# docker-compose.yml runs it against OpenLDAP, Orthanc and RabbitMQ instead
# (see docker/README.md). Not built on the development machines, which have
# no Docker engine.
#
# rusqlite's bundled SQLite, aws-lc-rs (rustls) and OpenJPEG compile with
# gcc; CharLS (JPEG-LS) needs cmake and g++, and libstdc++ at run time.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --bin stow-exporter

FROM debian:bookworm-slim
# CA certificates for https:// destinations and ldaps:// directories.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/stow-exporter /usr/local/bin/stow-exporter
COPY ldif /app/ldif
WORKDIR /app
VOLUME /data
EXPOSE 8080 18080
ENTRYPOINT ["stow-exporter"]
CMD ["serve", "--config", "/app/ldif", "--data", "/data", "--listen", "0.0.0.0:8080", "--stowrsd", "/data/received", "--stowrsd-bind", "0.0.0.0:18080"]
