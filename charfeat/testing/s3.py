"""A live S3 endpoint for tests and the loader benchmark: moto's server in a subprocess, with
credentials enforced, optionally behind an HTTP proxy that adds latency and injects faults.

Nothing here touches boto3's internals: clients talk HTTP to ``endpoint_url`` like to any S3.
"""

import http.client
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
    (tests) the only one: without it (the benchmark) the server skips per-request policy checks."""

    def __init__(self, auth: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)} if auth else {})}
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


class FaultyProxy:
    """Forwards HTTP to ``upstream`` after ``latency`` seconds; answers a ``fault_rate`` share of
    requests with 500, 503 SlowDown, a reset connection or a cut-off body instead (seeded).
    ``counts`` tallies what was injected."""

    FAULTS = ("500", "503", "reset", "truncate")

    def __init__(self, upstream_port: int, fault_rate: float = 0.0, latency: float = 0.0, seed: int = 0):
        self.fault_rate, self.latency = fault_rate, latency
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.counts = {name: 0 for name in (*self.FAULTS, "ok")}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()  # no Nagle: headers and body go out as separate writes
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._draw()
                if proxy.latency:
                    time.sleep(proxy.latency)
                if fault in ("500", "503"):
                    code, text = ("InternalError", "We encountered an internal error.") if fault == "500" else \
                        ("SlowDown", "Please reduce your request rate.")
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>{text}</Message></Error>").encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
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
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP | {"content-length", "server", "date"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", response.getheader("Content-Length", "0")
                                 if self.command == "HEAD" else str(len(payload)))
                self.end_headers()
                if fault == "truncate" and self.command == "GET" and len(payload) > 1:
                    self.wfile.write(payload[:len(payload) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.local = threading.local()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _draw(self) -> str:
        with self.lock:
            fault = self.rng.choice(self.FAULTS) if self.rng.random() < self.fault_rate else "ok"
            self.counts[fault] += 1
        return fault

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
