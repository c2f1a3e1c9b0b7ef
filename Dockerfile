# syntax=docker/dockerfile:1
# The provisioner as a static (musl) binary in a distroless image, running as nobody (65534).
# Build from the repository root: docker build -t runner-provisioner .

# The toolchain CI tests with (the workspace's rust-version, 1.89, is the floor).
FROM rust:1.95-alpine AS build
# musl-dev: the C runtime for the static link; cmake, make, perl: aws-lc-sys (rustls' crypto).
# Build-only tools that never reach the final image; pinning their revisions would break the
# build each time Alpine ships a security fix.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev cmake make perl
WORKDIR /src
COPY . .
# On Alpine the host target is x86_64/aarch64-unknown-linux-musl, which links statically by
# default. (Forcing +crt-static through RUSTFLAGS without --target would break proc-macros.)
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p provisioner \
    && install -D -m 0755 target/release/provisioner /out/provisioner

# distroless/static: CA certificates and /etc/passwd (nobody = 65534), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="runner-provisioner" \
      org.opencontainers.image.description="Autoscales CircleCI self-hosted runner VMs on KubeVirt" \
      org.opencontainers.image.source="https://github.com/runner-provisioner/runner-provisioner" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/provisioner /usr/local/bin/provisioner
USER 65534:65534
EXPOSE 8000 8001 9090
ENTRYPOINT ["/usr/local/bin/provisioner"]
CMD ["run"]
