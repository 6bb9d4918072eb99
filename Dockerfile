# cloudpop container image: a release build in the Rust image, shipped on Debian slim as the
# numeric non-root user 10001. scripts/container-test builds and runs this file unchanged.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
# Cargo.toml declares the benchmark and example targets, so their files must exist for any build.
COPY bench/tracing_overhead.rs bench/loadgen.rs ./bench/
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin cloudpop \
    && rm -rf src
COPY src ./src
# The placeholder build left newer artifacts for lib and main; make cargo see the real sources.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin cloudpop \
    && strip target/release/cloudpop

FROM debian:bookworm-slim
# ca-certificates for S3, Redis and OTLP over TLS; a numeric system user; the container defaults
# as a config file that the Helm chart (or `-v my.toml:/etc/cloudpop/cloudpop.toml`) replaces.
# CLOUDPOP_* variables still override any key of it. Nothing at run time needs the shell.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /var/lib/cloudpop \
        --shell /usr/sbin/nologin cloudpop \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/cloudpop \
    && install -d -m 0755 /etc/cloudpop \
    && printf '%s\n' \
        '# Container defaults. Inside a container loopback is unreachable from outside, so the' \
        '# listeners bind every interface; the API serves nothing until tokens are configured.' \
        'data_dir = "/var/lib/cloudpop"' \
        'pop3_listen = "0.0.0.0:1110"' \
        'pop3s_listen = "0.0.0.0:1995"' \
        'api_listen = "0.0.0.0:7110"' \
        'ops_listen = "0.0.0.0:9110"' \
        '# A sidecar or proxy may connect from loopback: it gets no exemption from TLS.' \
        'plaintext_auth_loopback = false' \
        > /etc/cloudpop/cloudpop.toml
COPY --from=build /src/target/release/cloudpop /usr/local/bin/cloudpop
USER 10001:10001
WORKDIR /var/lib/cloudpop
# Every command (serve, account, deliver) reads the same file.
ENV CLOUDPOP_CONFIG=/etc/cloudpop/cloudpop.toml
# /var/lib/cloudpop holds the embedded store, the spool and a generated certificate: mount a
# volume there (the image also runs with a read-only root filesystem).
VOLUME ["/var/lib/cloudpop"]
# Unprivileged ports, so no capability is needed: a Service maps 110 -> 1110 and 995 -> 1995.
# 7110 is the gRPC API, 9110 the operations port (/metrics, /healthz, /readyz).
EXPOSE 1110 1995 7110 9110
STOPSIGNAL SIGTERM
ENTRYPOINT ["cloudpop"]
CMD ["serve"]
