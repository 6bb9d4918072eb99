#!/usr/bin/env python3
"""An HTTP/1.1 relay that adds a fixed delay to every request, to play a distant object store.

A store on the same machine answers in well under a millisecond; a real one (AWS S3, a MinIO
cluster across a network) takes tens of milliseconds to the first byte of every answer. Put this
relay between cloudpop and the local S3 server and each request waits `--delay-ms` before it is
passed on, so a benchmark shows what the round trips cost: work done one request after another
pays the delay each time, work done concurrently pays it once.

Connections are kept alive as the client keeps them. Request boundaries are found from the
request head (Content-Length, or a chunked body up to its last chunk), so a request is delayed
once however it is split into packets. Answers pass through untouched.

    python3 bench/s3_latency.py --listen 127.0.0.1:9001 --upstream 127.0.0.1:9000 --delay-ms 20

Prints `s3-latency listening on HOST:PORT` when ready, and the number of requests relayed when
stopped (SIGINT or SIGTERM).
"""

import argparse
import asyncio
import signal
import sys

REQUESTS = 0


async def read_head(reader):
    """A request head up to and including its blank line; b"" at the end of the stream."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ConnectionError("connection closed inside a request head") from e
        return b""


async def copy_body(head, reader, writer):
    """Passes the body that `head` announces."""
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0], 16)
            writer.write(await reader.readexactly(size + 2))  # the chunk and its CRLF
            if size == 0:
                # Trailer fields, if any, end with a blank line (already passed when there are none).
                return
    remaining = int(fields.get(b"content-length", b"0") or 0)
    while remaining:
        chunk = await reader.read(min(remaining, 256 * 1024))
        if not chunk:
            raise ConnectionError("connection closed inside a request body")
        writer.write(chunk)
        remaining -= len(chunk)
        await writer.drain()


async def requests_upstream(client_reader, server_writer, delay):
    global REQUESTS
    while head := await read_head(client_reader):
        await asyncio.sleep(delay)
        REQUESTS += 1
        server_writer.write(head)
        await copy_body(head, client_reader, server_writer)
        await server_writer.drain()


async def answers_downstream(server_reader, client_writer):
    while chunk := await server_reader.read(256 * 1024):
        client_writer.write(chunk)
        await client_writer.drain()


async def relay(client_reader, client_writer, upstream, delay):
    server_reader, server_writer = await asyncio.open_connection(*upstream)
    try:
        up = asyncio.create_task(requests_upstream(client_reader, server_writer, delay))
        down = asyncio.create_task(answers_downstream(server_reader, client_writer))
        done, pending = await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        if up in done and not up.exception():
            server_writer.write_eof()
            await down
        for task in pending:
            task.cancel()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        for writer in (server_writer, client_writer):
            writer.close()


def address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--upstream", type=address, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    server = await asyncio.start_server(lambda r, w: relay(r, w, args.upstream, delay), *args.listen)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"s3-latency listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"s3-latency relayed {REQUESTS} requests", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
