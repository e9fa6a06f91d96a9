# The group-loader image: the release binary on a small Debian base (CA certificates for HTTPS to S3, GCS and
# Azure; `sh` for AWS Batch's command). Build: docker build -t group-loader .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin group-loader \
 && strip target/release/group-loader

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/group-loader /usr/local/bin/group-loader
# Not root. No ENTRYPOINT: Kubernetes sets `command: ["group-loader"]`, AWS Batch runs `sh -c "exec group-loader ..."`.
USER 65532:65532
CMD ["group-loader", "--help"]
