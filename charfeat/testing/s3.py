"""A live S3 endpoint for tests and the loader benchmark: moto's server in a subprocess, with
credentials enforced, optionally behind an HTTP proxy that adds latency and injects faults, denies
listing as a read-only role is denied, or sends ETags that are not MD5s; and an endpoint that
never answers.

Nothing here touches boto3's internals: clients talk HTTP to ``endpoint_url`` like to any S3.
"""

import hashlib
import http.client
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

REGION = "us-east-1"
# IAM calls moto serves before it starts checking signatures: create_user, put_user_policy, create_access_key
SETUP_ACTIONS = 3
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """``moto_server`` on 127.0.0.1; ``credentials`` are a key pair it accepts, and with ``auth``
    (tests) the only one: without it (the benchmark) the server skips per-request policy checks.
    Multipart parts may be as small as ``min_part_size`` bytes (S3's own minimum is 5 MiB)."""

    def __init__(self, auth: bool = True, min_part_size: int = 5 * 1024 * 1024):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(min_part_size),
               **({"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)} if auth else {})}
        self.process = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        self.credentials = self._create_user()

    def _create_user(self) -> dict[str, str]:
        import boto3

        iam = boto3.client("iam", endpoint_url=self.url, region_name=REGION, aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="charfeat")
        iam.put_user_policy(UserName="charfeat", PolicyName="s3", PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'))
        key = iam.create_access_key(UserName="charfeat")["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def client(self, url: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=url or self.url, region_name=REGION,
                            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


ERRORS = {500: ("InternalError", "We encountered an internal error."),
          503: ("SlowDown", "Please reduce your request rate."),
          403: ("AccessDenied", "Access Denied")}


def object_key(path: str) -> str | None:
    """The object key of a path-style request (``/bucket/key?query``); None for a bucket request (a listing)."""
    parts = unquote(urlsplit(path).path).lstrip("/").split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else None


def not_md5(etag: str) -> str:
    """A stable stand-in ETag that is 32 hex digits but not the body's MD5, as MinIO sends with encryption."""
    return hashlib.md5(b"not-the-body" + etag.encode()).hexdigest()


class ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one request to the proxy's upstream, or answers it with the fault the proxy draws."""

    protocol_version = "HTTP/1.1"
    server: "ThreadingHTTPServer"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()  # no Nagle: headers and body go out as separate writes
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_request(self):
        proxy: FaultyProxy = self.server.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = object_key(self.path)
        fault = proxy.draw(key)
        if proxy.latency:
            time.sleep(proxy.latency)
        if fault == "reset":
            proxy.record(self.command, key, 0)
            return self.reset()
        if fault in ("500", "503"):
            return self.send_error_xml(int(fault), key)
        if proxy.deny_listing and key is None and self.command == "GET":  # ListObjects without s3:ListBucket
            return self.send_error_xml(403, key)
        status, reason, headers, payload = self.forward(proxy.upstream_port, body)
        if proxy.deny_listing and key is not None and status == 404:  # S3 hides a missing key from such a role
            return self.send_error_xml(403, key)
        if proxy.hide_etag and self.command == "GET" and key is not None:
            headers = [(n, v) for n, v in headers if n.lower() != "etag"]
        if proxy.etag_not_md5:
            headers = [(n, not_md5(v.strip('"')) if n.lower() == "etag" else v) for n, v in headers]
            payload = re.sub(rb"<ETag>(&#34;|&quot;|\")([0-9a-f]{32})(&#34;|&quot;|\")</ETag>",
                             lambda m: b"<ETag>" + m[1] + not_md5(m[2].decode()).encode() + m[3] + b"</ETag>", payload)
        proxy.record(self.command, key, status)
        self.send_upstream(status, reason, headers, payload, fault)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_request

    def forward(self, upstream_port: int, body: bytes) -> tuple[int, str, list, bytes]:
        """The upstream's answer to this request, over this handler thread's own connection."""
        conn = getattr(self.server.local, "conn", None)
        if conn is None:
            conn = self.server.local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn.request(self.command, self.path, body=body or None,
                         headers={k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP})
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.server.local.conn = None
            raise
        return response.status, response.reason, response.getheaders(), payload

    def send_upstream(self, status: int, reason: str, headers: list, payload: bytes, fault: str) -> None:
        if fault == "corrupt" and self.command == "GET" and len(payload) > 1:  # same length, one byte flipped
            payload = payload[:len(payload) // 2] + bytes([payload[len(payload) // 2] ^ 0xFF]) + payload[len(payload) // 2 + 1:]
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP | {"content-length", "server", "date"}:
                self.send_header(name, value)
        length = dict((n.lower(), v) for n, v in headers).get("content-length", "0")
        self.send_header("Content-Length", length if self.command == "HEAD" else str(len(payload)))
        self.end_headers()
        if fault == "truncate" and self.command == "GET" and len(payload) > 1:
            self.wfile.write(payload[:len(payload) // 2])
            self.wfile.flush()
            return self.reset()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error_xml(self, status: int, key: str | None) -> None:
        code, text = ERRORS[status]
        payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                   f"<Message>{text}</Message></Error>").encode()
        self.server.proxy.record(self.command, key, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def reset(self) -> None:
        """Drop the connection with a TCP reset."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


class FaultyProxy:
    """An HTTP proxy in front of moto's server that behaves like S3 at its worst.

    ``fault_rate``: the share of requests answered with a random fault instead (500, 503 SlowDown,
    a reset connection, a cut-off body; seeded). ``scripts``: {object key: faults its next requests
    get, in order} (also ``"corrupt"``: one byte of the body flipped, same length; ``"ok"``: none).
    ``deny_listing``: a role with s3:GetObject and no s3:ListBucket (ListObjects is AccessDenied,
    a missing key answers 403). ``etag_not_md5``: ETags that are 32 hex digits but not MD5s.
    ``hide_etag``: GET responses without an ETag header (some gateways strip it).
    ``latency`` is added to every request. ``counts`` tallies the faults injected, ``requests``
    logs (method, object key or None for a bucket request, status).
    """

    FAULTS = ("500", "503", "reset", "truncate")

    def __init__(self, upstream_port: int, fault_rate: float = 0.0, latency: float = 0.0, seed: int = 0,
                 scripts: dict[str, list[str]] | None = None, deny_listing: bool = False, etag_not_md5: bool = False,
                 hide_etag: bool = False):
        self.upstream_port, self.fault_rate, self.latency = upstream_port, fault_rate, latency
        self.scripts = {key: list(faults) for key, faults in (scripts or {}).items()}
        self.deny_listing, self.etag_not_md5, self.hide_etag = deny_listing, etag_not_md5, hide_etag
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.counts = {name: 0 for name in (*self.FAULTS, "corrupt", "ok")}
        self.requests: list[tuple[str, str | None, int]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), ProxyHandler)
        self.server.daemon_threads = True
        self.server.local = threading.local()
        self.server.proxy = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def draw(self, key: str | None) -> str:
        with self.lock:
            if key is not None and self.scripts.get(key):
                fault = self.scripts[key].pop(0)
            else:
                fault = self.rng.choice(self.FAULTS) if self.rng.random() < self.fault_rate else "ok"
            self.counts[fault] += 1
        return fault

    def record(self, method: str, key: str | None, status: int) -> None:
        with self.lock:
            self.requests.append((method, key, status))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentEndpoint:
    """Accepts TCP connections and never answers, like a hung server behind a load balancer."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.sock.accept()[0])
            except OSError:
                return

    def stop(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()
