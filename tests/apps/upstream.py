#!/usr/bin/python3
"""Test HTTP/1.1 upstream server for the ondemand integration tests.

Standard library only; run with Debian's /usr/bin/python3 (3.11).

Command line (exactly one listen mode is required):

    upstream.py (--port N | --unix PATH | --fd | --port-env) [options]

Listen modes:
    --port N        listen on 127.0.0.1:N (N=0 picks a free port; the chosen
                    port is printed on stderr as "NAME port N")
    --unix PATH     listen on a unix stream socket at PATH (a stale socket
                    file at PATH is removed first)
    --fd            systemd socket activation: use fd 3; LISTEN_FDS must be
                    >= 1 and LISTEN_PID must equal our pid (exit 1 otherwise)
    --port-env      listen on 127.0.0.1:$PORT

Options:
    --name NAME                 sent as response header "X-Upstream: NAME" on
                                every response (default "upstream")
    --notify                    after listening, send "READY=1" to the unix
                                datagram socket $NOTIFY_SOCKET ("@" = abstract)
    --ready-delay SECONDS       sleep before binding/listening/notifying
    --never-ready               sleep forever; never listen nor notify
    --exit-at-start CODE        print "fatal: cannot open database
                                /nonexistent" on stderr, exit with CODE
    --fork-grandchildren N      at start fork N children that sleep forever
                                (same process group, stdio on /dev/null,
                                fds >= 3 closed); pids listed at /children
    --grandchildren-keep-stdio  let those children keep our stdin/out/err

Once the socket accepts connections, "listening" is printed on stdout.
SIGTERM / SIGINT: print "stopping" on stderr and exit 0 immediately.
Every request is logged on stderr as "NAME METHOD TARGET".

Endpoints (any method; request bodies are always read or discarded):
    /echo*          JSON {"method", "path" (raw request target), "version",
                    "headers": [[name, value], ...] in received order,
                    "body_len", "body_sha256", "trailers": [[n, v], ...],
                    "pid"}; understands Content-Length and chunked bodies
    /upload         streams the body (64 KiB reads, constant memory), answers
                    JSON {"body_len", "body_sha256"}
    /download?bytes=N&chunked=0|1
                    N bytes of the pattern byte[i] = i % 256 (i.e. repeating
                    0x00..0xff), Content-Length (default) or chunked
                    (chunked=1 to an HTTP/1.0 request: close-delimited)
    /hang           never answers
    /slow?ms=N      answers "slow\\n" after N milliseconds
    /close-mid-body Content-Length: 1000000, sends 1000 bytes, then closes
    /crash          os._exit(1), no response
    /trailers       chunked response, "Trailer: x-checksum" header and
                    trailer field "x-checksum: abc123"
    /status/NNN     status NNN, body "status NNN\\n" (no body for 204/304 and
                    HEAD; for 1xx the 1xx is sent, followed by a 200)
    /env            JSON of os.environ
    /fds            JSON: {"<fd>": readlink target, ...} for /proc/self/fd
                    (also nested as "fds"), plus "pid", "ppid", "pgid", "sid",
                    "uid", "gid", "euid", "egid", "groups", "nice", "cwd",
                    "umask" (octal string), "rlimit_nofile" and "rlimit_as"
                    as [soft, hard] (null = unlimited)
    /children       JSON list of the pids forked by --fork-grandchildren
    /pid            JSON {"pid"}
    /headers-echo-response?h=Name:Value&h=...
                    body "ok\\n" with those extra response headers
    /ws             WebSocket echo (RFC 6455, implemented by hand): echoes
                    text/binary/continuation frames unmasked, answers ping
                    with pong, answers close with close and hangs up
    anything else   404, body "upstream NAME: no such path\\n"
"""

import argparse
import base64
import hashlib
import json
import os
import resource
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

NAME = "upstream"
CHILDREN = []
PIECE = 64 * 1024
# 64 KiB of the download pattern; 65536 is a multiple of 256, so every block
# starts at a pattern boundary.
PATTERN_BLOCK = bytes(range(256)) * (PIECE // 256)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        try:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
        except Exception:
            pass


def sleep_forever():
    while True:
        time.sleep(3600)


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ondemand-test-upstream"

    def version_string(self):
        return self.server_version

    # ---- plumbing ---------------------------------------------------------

    def setup(self):
        # TCP_NODELAY only makes sense (and only works) on TCP sockets.
        self.disable_nagle_algorithm = self.request.family in (
            socket.AF_INET, socket.AF_INET6)
        super().setup()

    def __getattr__(self, name):
        # Every method (GET, POST, PROPFIND, FOO, ...) goes to dispatch().
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def log_message(self, format, *args):
        log("%s %s" % (NAME, format % args))

    def log_request(self, code="-", size="-"):
        pass  # we log at the start of each request instead

    def end_headers(self):
        self.send_header("X-Upstream", NAME)
        super().end_headers()

    def raw_target(self):
        words = self.requestline.split()
        return words[1] if len(words) >= 2 else self.path

    # ---- request bodies ---------------------------------------------------

    def is_chunked(self):
        te = ",".join(self.headers.get_all("Transfer-Encoding") or [])
        codings = [c.strip().lower() for c in te.split(",") if c.strip()]
        return bool(codings) and codings[-1] == "chunked"

    def body_pieces(self, trailers):
        """Yield the request body in pieces of at most 64 KiB.

        Trailer fields of a chunked body are appended to `trailers`."""
        rfile = self.rfile
        if self.is_chunked():
            while True:
                line = rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise BadRequest("truncated chunk size line")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BadRequest("bad chunk size %r" % size_s)
                if size < 0:
                    raise BadRequest("negative chunk size")
                if size == 0:
                    break
                while size > 0:
                    data = rfile.read(min(size, PIECE))
                    if not data:
                        raise BadRequest("truncated chunk")
                    size -= len(data)
                    yield data
                if rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise BadRequest("missing CRLF after chunk data")
            while True:  # trailer section
                line = rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise BadRequest("truncated trailer section")
                if line in (b"\r\n", b"\n"):
                    break
                text = line.decode("latin-1").rstrip("\r\n")
                if ":" in text:
                    n, v = text.split(":", 1)
                    trailers.append([n.strip(), v.strip()])
            return
        cl = self.headers.get("Content-Length")
        if cl is None:
            return
        try:
            remaining = int(cl.strip())
        except ValueError:
            raise BadRequest("bad Content-Length %r" % cl)
        while remaining > 0:
            data = rfile.read(min(remaining, PIECE))
            if not data:
                raise BadRequest("truncated body")
            remaining -= len(data)
            yield data

    def consume_body(self):
        trailers = []
        h = hashlib.sha256()
        n = 0
        for piece in self.body_pieces(trailers):
            h.update(piece)
            n += len(piece)
        return n, h.hexdigest(), trailers

    # ---- responses ------------------------------------------------------

    def respond(self, status, body, ctype="text/plain; charset=utf-8",
                headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        if status in (204, 304):
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def respond_json(self, obj, status=200):
        self.respond(status, json.dumps(obj) + "\n",
                     "application/json")

    def write_chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    # ---- dispatch -------------------------------------------------------

    def dispatch(self):
        target = self.raw_target()
        log("%s %s %s" % (NAME, self.command, target))
        if target.startswith("/"):  # origin-form (urlsplit mangles "//x")
            path, _, qs = target.partition("?")
            path = path.partition("#")[0]
        else:  # absolute-form or something odd
            split = urllib.parse.urlsplit(target)
            path, qs = split.path or "/", split.query
        query = urllib.parse.parse_qs(qs, keep_blank_values=True)
        try:
            if path.startswith("/echo"):
                return self.ep_echo(target)
            if path == "/upload":
                return self.ep_upload()
            if path == "/ws":
                return self.ep_ws()
            # Everything else does not care about the request body.
            self.consume_body()
            route = {
                "/download": self.ep_download,
                "/hang": self.ep_hang,
                "/slow": self.ep_slow,
                "/close-mid-body": self.ep_close_mid_body,
                "/crash": self.ep_crash,
                "/trailers": self.ep_trailers,
                "/env": self.ep_env,
                "/fds": self.ep_fds,
                "/children": self.ep_children,
                "/pid": self.ep_pid,
                "/headers-echo-response": self.ep_headers_echo_response,
            }.get(path)
            if route is not None:
                return route(query)
            if path.startswith("/status/"):
                return self.ep_status(path[len("/status/"):])
            self.respond(404, "upstream %s: no such path\n" % NAME)
        except BadRequest as e:
            self.close_connection = True
            self.respond(400, "upstream %s: bad request: %s\n" % (NAME, e),
                         headers=[("Connection", "close")])

    # ---- endpoints ------------------------------------------------------

    def ep_echo(self, target):
        n, digest, trailers = self.consume_body()
        self.respond_json({
            "method": self.command,
            "path": target,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": n,
            "body_sha256": digest,
            "trailers": trailers,
            "pid": os.getpid(),
        })

    def ep_upload(self):
        n, digest, _ = self.consume_body()
        self.respond_json({"body_len": n, "body_sha256": digest})

    def ep_download(self, query):
        try:
            total = int(query.get("bytes", ["0"])[0])
            chunked = query.get("chunked", ["0"])[0] not in ("0", "", "false")
        except ValueError:
            return self.respond(400, "bad bytes=\n")
        close_delimited = chunked and self.request_version == "HTTP/1.0"
        if close_delimited:  # HTTP/1.0 has no chunked coding
            chunked = False
            self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif close_delimited:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        if self.command == "HEAD":
            return
        remaining = total
        while remaining > 0:
            block = PATTERN_BLOCK if remaining >= PIECE \
                else PATTERN_BLOCK[:remaining]
            if chunked:
                self.write_chunk(block)
            else:
                self.wfile.write(block)
            remaining -= len(block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def ep_hang(self, query):
        sleep_forever()

    def ep_slow(self, query):
        try:
            ms = int(query.get("ms", ["0"])[0])
        except ValueError:
            return self.respond(400, "bad ms=\n")
        time.sleep(ms / 1000.0)
        self.respond(200, "slow\n")

    def ep_close_mid_body(self, query):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.wfile.write(PATTERN_BLOCK[:1000])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def ep_crash(self, query):
        log("%s crashing" % NAME)
        os._exit(1)

    def ep_trailers(self, query):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "x-checksum")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.write_chunk(b"hello ")
        self.write_chunk(b"trailers\n")
        self.wfile.write(b"0\r\nx-checksum: abc123\r\n\r\n")

    def ep_status(self, code_s):
        try:
            code = int(code_s)
            if not 100 <= code <= 999:
                raise ValueError
        except ValueError:
            return self.respond(400, "bad status %r\n" % code_s)
        body = "status %d\n" % code
        if code < 200:
            # Interim response, then a final one so the exchange completes.
            self.send_response_only(code)
            self.end_headers()
            return self.respond(200, body)
        self.respond(code, body)

    def ep_env(self, query):
        self.respond_json(dict(os.environ))

    def ep_fds(self, query):
        fds = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                fds[name] = os.readlink("/proc/self/fd/" + name)
            except OSError:
                pass  # the fd listdir() used, already closed

        def lim(which):
            return [None if v == resource.RLIM_INFINITY else v
                    for v in resource.getrlimit(which)]

        umask = None
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("Umask:"):
                        umask = line.split()[1]
        except OSError:
            pass
        out = dict(fds)
        out.update({
            "fds": fds,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "euid": os.geteuid(),
            "egid": os.getegid(),
            "groups": os.getgroups(),
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "cwd": os.getcwd(),
            "umask": umask,
            "rlimit_nofile": lim(resource.RLIMIT_NOFILE),
            "rlimit_as": lim(resource.RLIMIT_AS),
        })
        self.respond_json(out)

    def ep_children(self, query):
        self.respond_json(CHILDREN)

    def ep_pid(self, query):
        self.respond_json({"pid": os.getpid()})

    def ep_headers_echo_response(self, query):
        extra = []
        for h in query.get("h", []):
            if ":" in h:
                k, v = h.split(":", 1)
                extra.append((k.strip(), v.strip()))
        self.respond(200, "ok\n", headers=extra)

    # ---- websocket ------------------------------------------------------

    def ep_ws(self):
        upgrade = (self.headers.get("Upgrade") or "").strip().lower()
        key = (self.headers.get("Sec-WebSocket-Key") or "").strip()
        if upgrade != "websocket" or not key:
            self.consume_body()
            return self.respond(400, "upstream %s: not a websocket "
                                     "handshake\n" % NAME)
        accept = base64.b64encode(
            hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            self.ws_loop()
        except (ConnectionError, OSError, BadRequest) as e:
            log("%s ws: %s" % (NAME, e))

    def ws_read_exact(self, n):
        # self.rfile is buffered and may already hold frame bytes that
        # arrived together with the handshake; always read through it.
        buf = bytearray()
        while len(buf) < n:
            data = self.rfile.read(n - len(buf))
            if not data:
                raise ConnectionError("eof in websocket frame")
            buf += data
        return bytes(buf)

    def ws_send(self, opcode, payload, fin=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", b0, n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 126, n)
        else:
            head = struct.pack("!BBQ", b0, 127, n)
        self.wfile.write(head + payload)

    def ws_loop(self):
        while True:
            b0, b1 = self.ws_read_exact(2)
            fin = bool(b0 & 0x80)
            opcode = b0 & 0x0F
            masked = bool(b1 & 0x80)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.ws_read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.ws_read_exact(8))[0]
            mask = self.ws_read_exact(4) if masked else None
            payload = self.ws_read_exact(n)
            if mask and n:
                payload = _unmask(payload, mask)
            if opcode in (0x0, 0x1, 0x2):  # continuation, text, binary
                self.ws_send(opcode, payload, fin)
            elif opcode == 0x8:  # close
                self.ws_send(0x8, payload[:125])
                return
            elif opcode == 0x9:  # ping
                self.ws_send(0xA, payload)
            elif opcode == 0xA:  # pong
                pass
            else:
                self.ws_send(0x8, struct.pack("!H", 1002))
                return


def _unmask(payload, mask):
    # Fast XOR via big integers.
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    x = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return x.to_bytes(n, "big")


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, sock):
        super().__init__(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        log("%s connection error: %r" % (NAME, e))


def make_socket(args):
    if args.fd:
        pid_s = os.environ.get("LISTEN_PID", "")
        fds_s = os.environ.get("LISTEN_FDS", "")
        if pid_s != str(os.getpid()):
            log("%s: LISTEN_PID=%r does not match our pid %d"
                % (NAME, pid_s, os.getpid()))
            sys.exit(1)
        try:
            nfds = int(fds_s)
        except ValueError:
            nfds = 0
        if nfds < 1:
            log("%s: LISTEN_FDS=%r, need at least 1" % (NAME, fds_s))
            sys.exit(1)
        try:
            sock = socket.socket(fileno=3)
        except OSError as e:
            log("%s: fd 3 is not a socket: %s" % (NAME, e))
            sys.exit(1)
        sock.set_inheritable(False)
        return sock
    if args.unix is not None:
        try:
            if stat.S_ISSOCK(os.lstat(args.unix).st_mode):
                os.unlink(args.unix)
        except OSError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.unix)
        sock.listen(128)
        return sock
    if args.port_env:
        try:
            port = int(os.environ["PORT"])
        except (KeyError, ValueError):
            log("%s: PORT env var missing or invalid: %r"
                % (NAME, os.environ.get("PORT")))
            sys.exit(1)
    else:
        port = args.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    if port == 0:
        log("%s port %d" % (NAME, sock.getsockname()[1]))
    return sock


def notify_ready():
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        log("%s: --notify given but NOTIFY_SOCKET is not set" % NAME)
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(addr)
        s.send(b"READY=1")
    except OSError as e:
        log("%s: notify failed: %s" % (NAME, e))
    finally:
        s.close()


def fork_grandchildren(n, keep_stdio):
    # Auto-reap them if they get killed while we keep running.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for _ in range(n):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                if not keep_stdio:
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(devnull, fd)
                os.closerange(3, 65536)
                sleep_forever()
            finally:
                os._exit(0)
        CHILDREN.append(pid)


def on_term(signum, frame):
    log("stopping")
    os._exit(0)


def main():
    global NAME
    p = argparse.ArgumentParser(description="ondemand test upstream")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--port", type=int)
    mode.add_argument("--unix")
    mode.add_argument("--fd", action="store_true")
    mode.add_argument("--port-env", action="store_true")
    p.add_argument("--name", default="upstream")
    p.add_argument("--notify", action="store_true")
    p.add_argument("--ready-delay", type=float, default=0.0)
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--exit-at-start", type=int)
    p.add_argument("--fork-grandchildren", type=int, default=0)
    p.add_argument("--grandchildren-keep-stdio", action="store_true")
    args = p.parse_args()
    NAME = args.name

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    if args.exit_at_start is not None:
        log("fatal: cannot open database /nonexistent")
        sys.exit(args.exit_at_start)

    if args.fork_grandchildren > 0:
        fork_grandchildren(args.fork_grandchildren,
                           args.grandchildren_keep_stdio)

    if args.never_ready:
        log("%s: never getting ready" % NAME)
        sleep_forever()

    if args.ready_delay > 0:
        time.sleep(args.ready_delay)

    sock = make_socket(args)
    server = Server(sock)
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    if args.notify:
        notify_ready()
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    main()
