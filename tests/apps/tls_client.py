#!/usr/bin/env python3
"""A second TLS client for ondemand's HTTPS tests (python3's ssl module, i.e. OpenSSL), beside curl.

    tls_client.py probe --port P --ca CA.pem [--sni NAME | --no-sni] [--alpn h2,http/1.1]
                        [--get PATH --host HOST]
        One handshake (and optionally one HTTP/1.1 GET on it). Prints one JSON line:
        {"ok": true, "version": "TLSv1.3", "alpn": "h2", "serial": 2, "subject_cn": "...",
         "status": 200, "body": "..."} or {"ok": false, "error": "..."}.

    tls_client.py load --port P --ca CA.pem --sni NAME --stop FILE --max-seconds S
                       (--keep-alive | --new-connections)
        GET / in a loop until FILE exists (or S seconds pass): on one kept-alive connection, or a
        new connection (a new handshake) per request. Prints "started" after the first response,
        then at the end one JSON line: {"requests": N, "failures": N, "errors": [...],
        "serials": {serial: count}}.

    tls_client.py partial --port P --ca CA.pem --sni NAME --send TEXT
        Sends TEXT (backslash escapes such as \\r\\n decoded) after the handshake, then reads until
        the server closes. Prints {"response": "...", "seconds": S} (S: send to close).

The peer certificate is always verified against CA.pem; without SNI the host name is not checked
(there is none to check it against).
"""

import argparse
import json
import os
import socket
import ssl
import sys
import time


def context(ca, check_hostname, alpn):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def connect(args, alpn=None):
    sni = None if args.no_sni else args.sni
    ctx = context(args.ca, sni is not None, alpn)
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def peer_info(tls):
    cert = tls.getpeercert()
    cn = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    return {
        "version": tls.version(),
        "alpn": tls.selected_alpn_protocol(),
        "serial": int(cert.get("serialNumber", "0"), 16),
        "subject_cn": cn,
    }


def read_response(f):
    """One HTTP/1.1 response with a Content-Length body from file object f."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = f.read(length)
    if len(body) != length:
        raise ConnectionError(f"short body: {len(body)} of {length} bytes")
    return status, body.decode("utf-8", "replace")


def get(tls, f, host, path, close):
    conn = "close" if close else "keep-alive"
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n".encode())
    return read_response(f)


def probe(args):
    alpn = args.alpn.split(",") if args.alpn else None
    try:
        tls = connect(args, alpn)
    except (ssl.SSLError, OSError) as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 0
    with tls:
        out = {"ok": True, **peer_info(tls)}
        if args.get:
            with tls.makefile("rb") as f:
                out["status"], out["body"] = get(tls, f, args.host or args.sni, args.get, True)
    print(json.dumps(out))
    return 0


def load(args):
    deadline = time.monotonic() + args.max_seconds
    requests = failures = 0
    errors = []
    serials = {}
    announced = False
    tls = f = None

    def close():
        nonlocal tls, f
        for x in (f, tls):
            try:
                if x is not None:
                    x.close()
            except OSError:
                pass
        tls = f = None

    while not os.path.exists(args.stop) and time.monotonic() < deadline:
        requests += 1
        try:
            if tls is None:
                tls = connect(args)
                f = tls.makefile("rb")
                serial = peer_info(tls)["serial"]
                serials[serial] = serials.get(serial, 0) + 1
            status, body = get(tls, f, args.sni, "/", not args.keep_alive)
            if status != 200:
                raise ConnectionError(f"status {status}: {body!r}")
            if not args.keep_alive:
                close()
        except (ssl.SSLError, OSError, ValueError, IndexError) as e:
            failures += 1
            if len(errors) < 10:
                errors.append(f"request {requests}: {type(e).__name__}: {e}")
            close()
        if not announced:
            print("started", flush=True)
            announced = True
    close()
    print(json.dumps({"requests": requests, "failures": failures, "errors": errors,
                      "serials": serials}), flush=True)
    return 0


def partial(args):
    tls = connect(args)
    with tls:
        t0 = time.monotonic()
        tls.sendall(args.send.encode().decode("unicode_escape").encode("latin-1"))
        chunks = []
        tls.settimeout(30)
        while True:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLError, OSError) as e:
                chunks.append(f"<{type(e).__name__}: {e}>".encode())
                break
            if not chunk:
                break
            chunks.append(chunk)
        print(json.dumps({"response": b"".join(chunks).decode("utf-8", "replace"),
                          "seconds": time.monotonic() - t0}))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("probe", "load", "partial"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--ca", required=True)
        s.add_argument("--sni")
        s.add_argument("--no-sni", action="store_true")
        if name == "probe":
            s.add_argument("--alpn")
            s.add_argument("--get")
            s.add_argument("--host")
        elif name == "partial":
            s.add_argument("--send", required=True)
        else:
            s.add_argument("--stop", required=True)
            s.add_argument("--max-seconds", type=float, default=30)
            mode = s.add_mutually_exclusive_group(required=True)
            mode.add_argument("--keep-alive", action="store_true")
            mode.add_argument("--new-connections", action="store_true")
    args = p.parse_args()
    sys.exit({"probe": probe, "load": load, "partial": partial}[args.cmd](args))


if __name__ == "__main__":
    main()
