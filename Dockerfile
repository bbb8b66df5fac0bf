# fifo as a container image: built from this source in a first stage, then
# run as a non-root user on Debian 12 "bookworm" (glibc 2.36), with `fifo` as
# the entrypoint. LocalStack is not in it: give it a queue URL (and
# ENDPOINT_URL for LocalStack), as to the binary.
#
#   docker build -t fifo .
#   docker run --rm -e SQS_QUEUE_URL=… fifo run --http http://app:8080/events
#
# The binary needs glibc 2.36 or newer: copy it (`COPY --from=fifo
# /usr/local/bin/fifo …`) into images based on Debian 12 or later, not
# Alpine (musl).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Without its debug info (four fifths of the file); its symbols stay, for
# backtraces.
RUN cargo build --release --locked --package fifo \
    && install -D target/release/fifo /out/fifo \
    && strip --strip-debug /out/fifo

FROM debian:bookworm-slim
# CA certificates for https: AWS's endpoints, and --http to an https URL.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin fifo
COPY --from=build /out/fifo /usr/local/bin/fifo
USER fifo
ENTRYPOINT ["fifo"]
CMD ["run"]
