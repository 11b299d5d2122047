# kache-service: the planner. Build with `just image-service` (docker buildx
# bake, see docker-bake.hcl) where a Docker engine runs.
#
# Stage 1 compiles the release binary from the locked dependency graph.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kache-service
RUN mkdir -p /out/var/lib/kache && cp target/release/kache-service /out/kache-service

# Stage 2 is a minimal runtime: glibc and CA certificates, no shell, no
# package manager, running as the distroless nonroot user (65532). Nothing is
# written outside the database volume.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kache-service /usr/local/bin/kache-service
COPY --from=build --chown=65532:65532 /out/var/lib/kache /var/lib/kache
USER 65532:65532
ENV KACHE_PLANNER_BIND=0.0.0.0:8080 \
    KACHE_PLANNER_DB_PATH=/var/lib/kache/planner.db
EXPOSE 8080
VOLUME ["/var/lib/kache"]
ENTRYPOINT ["/usr/local/bin/kache-service"]
