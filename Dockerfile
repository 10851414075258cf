# Builds stow-exporter and runs it on its embedded defaults (configuration
# from /app/ldif, data in /data). Not built on the development machines,
# which have no Docker engine.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --bin stow-exporter

FROM debian:bookworm-slim
COPY --from=build /src/target/release/stow-exporter /usr/local/bin/stow-exporter
COPY ldif /app/ldif
WORKDIR /app
VOLUME /data
EXPOSE 8080 18080
ENTRYPOINT ["stow-exporter"]
CMD ["serve", "--config", "/app/ldif", "--data", "/data", "--listen", "0.0.0.0:8080", "--stowrsd", "/data/received", "--stowrsd-bind", "0.0.0.0:18080"]
