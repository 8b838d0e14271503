"""A local stand-in for the Hugging Face hub: serves model directories as repos over HTTP.

Tests point ``HF_ENDPOINT`` at it to exercise the real ``huggingface_hub`` download path (repo
info, tree listing, HEAD for metadata, GET for bytes) without a network. Only what
``snapshot_download`` and ``hf_hub_download`` ask for is implemented; every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # every repo has one commit, on main
INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(/revision/(?P<rev>[^/]+))?$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(/.*)?$")
FILE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class FakeHub:
    """``FakeHub({"org/name": model_dir})`` as a context manager; ``.endpoint`` is its URL."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = {repo: Path(path) for repo, path in repos.items()}
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {str(path.relative_to(root)): path for path in sorted(root.rglob("*")) if path.is_file()}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                status, headers, data = 404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "no such repo"}'
                for pattern, answer in ((INFO, hub._info), (TREE, hub._tree), (FILE, hub._file)):
                    match = pattern.match(path)
                    if match and match["repo"] in hub.repos:
                        if match["rev"] in (None, "main", COMMIT):
                            status, headers, data = answer(match)
                        else:
                            status, headers, data = 404, {"X-Error-Code": "RevisionNotFound"}, b'{"error": "no rev"}'
                        break
                self.send_response(status)
                for key, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler

    def _info(self, match) -> tuple[int, dict, bytes]:
        repo = match["repo"]
        info = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                "siblings": [{"rfilename": name} for name in self.files(repo)]}
        return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()

    def _tree(self, match) -> tuple[int, dict, bytes]:
        entries = [{"type": "file", "path": name, "size": path.stat().st_size, "oid": _sha1(path)}
                   for name, path in self.files(match["repo"]).items()]
        return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()

    def _file(self, match) -> tuple[int, dict, bytes]:
        path = self.files(match["repo"]).get(match["path"])
        if path is None:
            return 404, {"X-Error-Code": "EntryNotFound"}, b""
        data = path.read_bytes()
        return 200, {"X-Repo-Commit": COMMIT, "ETag": f'"{_sha1(path)}"'}, data


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
