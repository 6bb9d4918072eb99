# cloudpop container image: a release build in the Rust image, shipped on Debian slim as a
# non-root user. Listens on unprivileged ports; a Kubernetes Service (or `docker run -p`) maps
# 110 -> 1110 and 995 -> 1995.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
# Cargo.toml declares the benchmark target, so its file must exist for any build.
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin cloudpop \
    && rm -rf src
COPY src ./src
# The placeholder build left newer artifacts for lib and main; make cargo see the real sources.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin cloudpop \
    && strip target/release/cloudpop

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/cloudpop --create-home cloudpop
COPY --from=build /src/target/release/cloudpop /usr/local/bin/cloudpop
USER 10001:10001
WORKDIR /var/lib/cloudpop
# Inside a container, loopback would make the listeners unreachable: bind every interface.
# The API still serves nothing until tokens are configured.
ENV CLOUDPOP_DATA_DIR=/var/lib/cloudpop \
    CLOUDPOP_POP3_LISTEN=0.0.0.0:1110 \
    CLOUDPOP_POP3S_LISTEN=0.0.0.0:1995 \
    CLOUDPOP_API_LISTEN=0.0.0.0:7110 \
    CLOUDPOP_OPS_LISTEN=0.0.0.0:9110
EXPOSE 1110 1995 7110 9110
STOPSIGNAL SIGTERM
ENTRYPOINT ["cloudpop"]
CMD ["serve"]
