#!/usr/bin/python3
"""WebSocket echo test client for the ondemand integration tests.

Uses Debian's python3-websockets 10.4 (asyncio API); run with /usr/bin/python3.

    ws_client.py URL [--host HOSTHEADER] [--unix PATH] [--messages N]
                 [--binary-size BYTES] [--hold SECONDS] [--timeout SECONDS]

Connects to URL (ws://127.0.0.1:PORT/ws), sends N text messages
"msg-0".."msg-<N-1>" (default 3) one at a time and checks that each echo
comes back identical; with --binary-size sends one binary message of that
many bytes (pattern byte[i] = i % 256) and checks the echo; with --hold
keeps the connection open that many seconds, sending a ping every 0.5 s
and waiting for each pong. Then closes cleanly, prints "ok N" (N = number
of text messages echoed) and exits 0. On any error prints "error: ..." on
stderr and exits 1.

--host HOSTHEADER  send "Host: HOSTHEADER" while still connecting to the
                   address in URL (websockets would otherwise add a second
                   Host header if given via extra_headers).
--unix PATH        connect to a unix stream socket instead; URL then only
                   provides the path and (unless --host) the Host header.
--timeout SECONDS  overall limit for every single step (default 10).
"""

import argparse
import asyncio
import sys
import urllib.parse

import websockets


def build_connect(args):
    url = urllib.parse.urlsplit(args.url)
    kwargs = dict(max_size=None, ping_interval=None,
                  open_timeout=args.timeout, close_timeout=args.timeout,
                  compression=None)
    uri = args.url
    if args.host:
        # The URI's authority becomes the Host header; the TCP connection
        # goes to the host/port of the original URL.
        uri = urllib.parse.urlunsplit(
            (url.scheme, args.host, url.path or "/", url.query, ""))
        if not args.unix:
            kwargs["host"] = url.hostname
            kwargs["port"] = url.port or (443 if url.scheme == "wss" else 80)
    if args.unix:
        return websockets.unix_connect(args.unix, uri, **kwargs)
    return websockets.connect(uri, **kwargs)


async def run(args):
    t = args.timeout
    async with build_connect(args) as ws:
        for i in range(args.messages):
            msg = "msg-%d" % i
            await asyncio.wait_for(ws.send(msg), t)
            got = await asyncio.wait_for(ws.recv(), t)
            if got != msg:
                raise RuntimeError("echo mismatch: sent %r, got %r"
                                   % (msg, got[:100]))
        if args.binary_size is not None:
            data = (bytes(range(256)) * (args.binary_size // 256 + 1))[
                :args.binary_size]
            await asyncio.wait_for(ws.send(data), t)
            got = await asyncio.wait_for(ws.recv(), t)
            if got != data:
                raise RuntimeError("binary echo mismatch: sent %d bytes, "
                                   "got %r (%d)" % (len(data), type(got),
                                                    len(got)))
        if args.hold > 0:
            loop = asyncio.get_running_loop()
            end = loop.time() + args.hold
            while loop.time() < end:
                waiter = await asyncio.wait_for(ws.ping(), t)
                await asyncio.wait_for(waiter, t)
                await asyncio.sleep(min(0.5, max(0.0, end - loop.time())))
        await asyncio.wait_for(ws.close(), t)
    return args.messages


def main():
    p = argparse.ArgumentParser(description="websocket echo test client")
    p.add_argument("url")
    p.add_argument("--host")
    p.add_argument("--unix")
    p.add_argument("--messages", type=int, default=3)
    p.add_argument("--binary-size", type=int)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    try:
        n = asyncio.run(run(args))
    except BaseException as e:  # noqa: B902 - report everything, exit 1
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            raise
        sys.stderr.write("error: %s: %s\n" % (type(e).__name__, e))
        sys.stderr.flush()
        sys.exit(1)
    print("ok %d" % n, flush=True)


if __name__ == "__main__":
    main()
