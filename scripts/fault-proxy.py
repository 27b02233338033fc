#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for s3nap's tests: s3nap talks to it on 127.0.0.1, it forwards
every request unchanged to the S3 server given as its argument (moto), and applies the rules in
force to the requests they match.

    fault-proxy.py [--tls-cert CERT.pem --tls-key KEY.pem] UPSTREAM_URL

The request is forwarded byte for byte, Host header included, so SigV4 signatures made for the
proxy's address verify upstream. Each connection is served one request at a time (HTTP/1.1
keep-alive), as the SDK sends them. A request in absolute form (`GET http://b.host/k`, as
clients send it to an HTTP proxy: `http_proxy=` this endpoint) goes upstream in origin form
(`GET /k`) with its Host header unchanged, so virtual-hosted requests reach the S3 server
without DNS for `b.host`.

With --tls-cert and --tls-key it serves HTTPS (the upstream stays plain HTTP) at
https://localhost:PORT with that certificate; a client that refuses the certificate ends the
handshake, which prints {"event": "tls_refused", "error": TEXT}, and nothing is forwarded.

Prints {"event": "listening", "endpoint": URL, "pid": N} on stdout, then serves until stdin
closes. Commands arrive on stdin, one JSON object a line, each acknowledged on stdout with
{"event": "ok", "seq": SEQ} once in force:

    {"cmd": "add", "seq": 1, "rule": RULE}    adds a rule, tried after those before it; the
                                              acknowledgement carries its id: {"rule": ID}
    {"cmd": "clear", "seq": 2}                removes every rule and releases held requests
    {"cmd": "release", "seq": 3}              releases the requests held so far

A RULE matches requests by "method" (exact) and "target" (a regular expression searched in the
request target, path and query, e.g. "uploadId=.*partNumber=2"); it hits matching requests from
its "nth" (default 1) on, "times" times (default 1; 0: every one). Its "action" is one of:

    pass        forwards unchanged (to see the requests in the hit events)
    status      answers {"code": 500 or 503} with S3's XML error (503: SlowDown), not forwarded;
                with {"region": R}, S3's answer to a request signed for another region than
                the bucket's: 301 PermanentRedirect (code 301, the default) or 400
                AuthorizationHeaderMalformed (code 400), naming R in x-amz-bucket-region (and
                in the body's <Region> for the 400, as S3 does)
    reset       reads the head and half the body, then resets the connection (not forwarded)
    delay       waits {"seconds"} before forwarding (beyond s3nap's Timeout: the client gave up)
    drop_reply  forwards, then resets the connection instead of answering (a lost reply)
    truncate    forwards, answers the full Content-Length but only the body's first half, closes
    flip        forwards, answers with one bit flipped in the body at {"offset"} (default: middle)
    corrupt_body forwards the request with one byte of its body changed at {"offset"} (default:
                the middle), headers as sent: a byte damaged on the way to the server
    require_md5 answers 400 InvalidRequest (not forwarded) unless the request carries a
                Content-MD5 equal to its body's: S3's rule for a part of a locked upload, which
                moto does not enforce
    hold        prints {"event": "held", ...} and waits for a release before forwarding; a
                request whose client went away meanwhile is dropped ({"event": "abandoned"})
    hold_reply  forwards, prints {"event": "held", ...} and waits for a release before answering

Every hit prints {"event": "hit", "rule": ID, "action", "method", "target", "host", "region"}:
the Host header, and the region of the SigV4 credential scope the request was signed for.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from urllib.parse import urlsplit

UPSTREAM = None  # urlsplit of the upstream URL, set by main()
OUT = threading.Lock()
STATE = threading.Condition()
RULES = []  # [id, rule dict, matched count]
NEXT_ID = 0  # rule ids are never reused, so events stay unambiguous across clears
RELEASES = 0  # bumped by every release/clear; a held request waits for it to change


def emit(obj):
    with OUT:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def read_head(f):
    """Request or status line and headers, or None at a clean end of the connection."""
    first = f.readline(65536)
    if not first:
        return None
    lines = [first]
    while True:
        line = f.readline(65536)
        if not line:
            raise ConnectionError("connection closed in the head")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    headers = {}
    for line in lines[1:-1]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return b"".join(lines), first.decode("latin-1").split(), headers


def read_body(f, headers):
    """The body as it was sent (chunked bodies keep their framing) and the payload length."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raw = bytearray()
        while True:
            size_line = f.readline(65536)
            raw += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = f.readline(65536)
                    raw += line
                    if line in (b"\r\n", b"\n", b""):
                        return bytes(raw)
            raw += f.read(size + 2)
    length = int(headers.get("content-length", "0") or 0)
    return f.read(length)


def hard_close(sock):
    """Closes with a TCP reset, as a dropped connection looks to the peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def forward(head, body, method):
    """Sends the request upstream; returns the reply's head bytes, headers, and body."""
    up = socket.create_connection((UPSTREAM.hostname, UPSTREAM.port))
    try:
        up.sendall(head + body)
        f = up.makefile("rb")
        while True:  # the client already had its 100 Continue from the proxy
            got = read_head(f)
            if got is None:
                raise ConnectionError("upstream closed without answering")
            rhead, status, rheaders = got
            code = int(status[1])
            if code >= 200:
                break
        if method == "HEAD" or code in (204, 304):
            rbody = b""
        elif "content-length" in rheaders or rheaders.get(
            "transfer-encoding", ""
        ).lower() == "chunked":
            rbody = read_body(f, rheaders)
        else:
            rbody = f.read()
        return rhead, rheaders, rbody
    finally:
        up.close()


def pick(method, target):
    """The first rule hitting this request, counted, or None."""
    with STATE:
        for entry in RULES:
            index, rule = entry[0], entry[1]
            if rule.get("method") and rule["method"] != method:
                continue
            if rule.get("target") and not re.search(rule["target"], target):
                continue
            entry[2] += 1
            nth, times = rule.get("nth", 1), rule.get("times", 1)
            if entry[2] >= nth and (times == 0 or entry[2] < nth + times):
                return index, rule
        return None


def hold(index, rule, method, target):
    with STATE:
        seen = RELEASES
        emit({"event": "held", "rule": index, "method": method, "target": target})
        STATE.wait_for(lambda: RELEASES != seen)


def client_gone(sock):
    """Whether the peer closed its end (a read would return nothing)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def md5_reply(headers, body):
    """S3's answer to a request that lacks the Content-MD5 it requires (or sends a wrong one),
    or None when the header is there and right."""
    expected = base64.b64encode(hashlib.md5(body).digest()).decode()
    given = headers.get("content-md5")
    if given == expected:
        return None
    name, message = (
        ("InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part "
         "requests with Object Lock parameters")
        if given is None
        else ("BadDigest", "The Content-MD5 you specified did not match what we received.")
    )
    body = f"<Error><Code>{name}</Code><Message>{message}</Message></Error>".encode()
    return (
        f"HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def error_reply(code):
    name, message = (
        ("SlowDown", "Please reduce your request rate.")
        if code == 503
        else ("InternalError", "We encountered an internal error. Please try again.")
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{name}</Code><Message>{message}</Message></Error>"
    ).encode()
    reason = "Slow Down" if code == 503 else "Internal Server Error"
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def region_reply(code, region):
    """S3's refusal of a request signed for another region than the bucket's: the region in
    x-amz-bucket-region, and in the body only for AuthorizationHeaderMalformed (a
    PermanentRedirect's body names the regional endpoint instead)."""
    if code == 400:
        name, reason, detail = (
            "AuthorizationHeaderMalformed", "Bad Request",
            "<Message>The authorization header is malformed; the region 'us-east-1' is wrong; "
            f"expecting '{region}'</Message><Region>{region}</Region>")
    else:
        code, name, reason, detail = (
            301, "PermanentRedirect", "Moved Permanently",
            "<Message>The bucket you are attempting to access must be addressed using the "
            "specified endpoint. Please send all future requests to this endpoint.</Message>"
            f"<Endpoint>s3.{region}.amazonaws.com</Endpoint>")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{name}</Code>{detail}</Error>"
    ).encode()
    return (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n"
        f"x-amz-bucket-region: {region}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def signed_region(headers):
    """The region of the request's SigV4 credential scope (Credential=KEY/DATE/REGION/s3/...)."""
    match = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", headers.get("authorization", ""))
    return match.group(1) if match else None


def origin_form(head, target):
    """A request in absolute form (sent to a proxy) rewritten in origin form; else as it is."""
    if not re.match(r"^https?://", target, re.IGNORECASE):
        return head, target
    parts = urlsplit(target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    first, _, rest = head.partition(b"\r\n")
    first = first.replace(target.encode("latin-1"), path.encode("latin-1"), 1)
    return first + b"\r\n" + rest, path


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as e:
                emit({"event": "tls_refused", "error": str(e)})
                return
        try:
            while self.serve_one():
                pass
        except (ConnectionError, OSError, ValueError):
            pass

    def serve_one(self):
        got = read_head(self.rfile)
        if got is None:
            return False
        head, request_line, headers = got
        method = request_line[0]
        head, target = origin_form(head, request_line[1])
        hit = pick(method, target)
        action = hit[1]["action"] if hit else None
        if hit:
            emit({"event": "hit", "rule": hit[0], "action": action, "method": method,
                  "target": target, "host": headers.get("host"),
                  "region": signed_region(headers)})
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        if action == "reset":
            length = int(headers.get("content-length", "0") or 0)
            self.rfile.read(length // 2)
            hard_close(self.connection)
            return False
        body = read_body(self.rfile, headers)
        if action == "status" and "region" in hit[1]:
            self.wfile.write(region_reply(hit[1].get("code", 301), hit[1]["region"]))
            self.wfile.flush()
            return True
        if action == "status":
            self.wfile.write(error_reply(hit[1].get("code", 500)))
            self.wfile.flush()
            return True
        if action == "require_md5":
            refused = md5_reply(headers, body)
            if refused:
                self.wfile.write(refused)
                self.wfile.flush()
                return True
        if action == "corrupt_body" and body:
            at = hit[1].get("offset", len(body) // 2)
            if at < len(body):
                body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
        if action == "delay":
            time.sleep(hit[1].get("seconds", 5))
        if action == "hold":
            hold(hit[0], hit[1], method, target)
            if client_gone(self.connection):
                # The client was killed while its request waited: it never reached the server.
                emit({"event": "abandoned", "rule": hit[0], "method": method, "target": target})
                return False
        rhead, rheaders, rbody = forward(head, body, method)
        if action == "drop_reply":
            hard_close(self.connection)
            return False
        if action == "hold_reply":
            hold(hit[0], hit[1], method, target)
        if action == "truncate" and rbody:
            self.wfile.write(rhead + rbody[: len(rbody) // 2])
            self.wfile.flush()
            hard_close(self.connection)
            return False
        if action == "flip" and rbody:
            at = hit[1].get("offset", len(rbody) // 2)
            if at < len(rbody):
                rbody = rbody[:at] + bytes([rbody[at] ^ 1]) + rbody[at + 1:]
        self.wfile.write(rhead + rbody)
        self.wfile.flush()
        return rheaders.get("connection", "").lower() != "close"


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls = None  # an ssl.SSLContext: serve HTTPS

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens in the connection's own thread (Handler.handle).
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


def commands():
    global RELEASES, NEXT_ID
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        ack = {"event": "ok", "seq": cmd.get("seq")}
        with STATE:
            if cmd["cmd"] == "add":
                RULES.append([NEXT_ID, cmd["rule"], 0])
                ack["rule"] = NEXT_ID
                NEXT_ID += 1
            elif cmd["cmd"] == "clear":
                RULES.clear()
                RELEASES += 1
            elif cmd["cmd"] == "release":
                RELEASES += 1
            else:
                raise SystemExit(f"fault-proxy: unknown command {cmd['cmd']!r}")
            STATE.notify_all()
        emit(ack)


def main():
    global UPSTREAM
    parser = argparse.ArgumentParser(description="A fault-injecting HTTP(S) proxy for tests.")
    parser.add_argument("upstream")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    UPSTREAM = urlsplit(args.upstream)
    server = Server(("127.0.0.1", 0), Handler)
    if args.tls_cert:
        server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls.load_cert_chain(args.tls_cert, args.tls_key)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address
    endpoint = f"https://localhost:{port}" if args.tls_cert else f"http://{host}:{port}"
    emit({"event": "listening", "endpoint": endpoint, "pid": os.getpid()})
    commands()  # until stdin closes: the test process ended


if __name__ == "__main__":
    main()
