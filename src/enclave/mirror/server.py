"""A Hugging Face hub-compatible HTTP server over a RepoStore: enough for huggingface_hub 0.36 to 2.4.

    GET  /api/models/{org}/{name}[/revision/{rev}]     model info; ?blobs=true adds size, blobId and lfs
    GET  /api/models/{org}/{name}/tree/{rev}[/{dir}]   a listing; ?recursive=true, ?expand=true
    POST /api/models/{org}/{name}/paths-info/{rev}     form field `paths` (repeated)
    HEAD /{org}/{name}/resolve/{rev}/{path}            the headers a client needs; GET streams the bytes, with Range

The contract is in notes/huggingface-downloads.md. Bytes are served from here (no redirect) and nothing Xet is ever
announced, so a client has no reason to reach past the mirror. Stdlib only: it runs on a controller that has
nothing else installed. `route` is a pure function of the store and the request, so it is tested without sockets.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import socketserver
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from enclave.errors import UsageError
from enclave.mirror.repo import Commit, FileEntry, Folder, MirrorError, RepoStore, StoredRepo, parse_repo_id

log = logging.getLogger("enclave.mirror")
access_log = logging.getLogger("enclave.mirror.access")

MAX_FORM = 1024 * 1024
JSON_TYPE = "application/json; charset=utf-8"
BAD_CREDENTIALS = "Invalid credentials in Authorization header"  # the hub's words; the client keys on them
TRUE_WORDS = ("1", "true", "yes")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


class HubError(Exception):
    """A request answered with an error status; `code` becomes X-Error-Code, which the client maps to its errors."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


@dataclass
class Reply:
    """What to send: a status, headers and either a small body or a slice of a stored file."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status, {"Content-Type": JSON_TYPE, "Content-Length": str(len(body))}, body)

    @classmethod
    def error(cls, err: HubError) -> Reply:
        reply = cls.json({"error": str(err)}, err.status)
        if err.code:
            reply.headers["X-Error-Code"] = err.code
        reply.headers.update(err.headers)
        return reply


@dataclass
class Request:
    """The parts of an HTTP request the routes read. `path` is still percent-encoded: see `_route`."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    form: dict[str, list[str]] = field(default_factory=dict)
    range: str | None = None

    def flag(self, name: str, *, source: str = "query") -> bool:
        values = self.query if source == "query" else self.form
        return any(v.lower() in TRUE_WORDS for v in values.get(name, []))


# -- routes ---------------------------------------------------------------------------------------------------------


def route(store: RepoStore, request: Request) -> Reply:
    try:
        return _route(store, request)
    except HubError as err:
        return Reply.error(err)


def _route(store: RepoStore, req: Request) -> Reply:
    # Split before decoding: the client sends a revision or a folder as one segment with "/" encoded as %2F.
    parts = req.path.split("/")[1:]
    if parts[:2] == ["api", "models"] and len(parts) >= 4:
        return _api(store, req, _repo_id(parts[2], parts[3]), parts[4:])
    if len(parts) >= 4 and parts[2] == "resolve":
        _allow(req, "GET", "HEAD")
        return resolve(store, _repo_id(parts[0], parts[1]), _segment(parts[3]), _repo_path(parts[4:]), req.range)
    raise HubError(404, f"no such endpoint: {req.method} {req.path}")


def _api(store: RepoStore, req: Request, repo_id: str, rest: list[str]) -> Reply:
    if not rest:
        _allow(req, "GET")
        return model_info(store, repo_id, "main", blobs=req.flag("blobs"))
    kind, revision = rest[0], _segment(rest[1]) if len(rest) > 1 else ""
    if kind == "revision" and len(rest) == 2:
        _allow(req, "GET")
        return model_info(store, repo_id, revision, blobs=req.flag("blobs"))
    if kind == "tree" and len(rest) >= 2:
        _allow(req, "GET")
        folder = _repo_path(rest[2:], allow_root=True)
        return tree(store, repo_id, revision, folder, recursive=req.flag("recursive"), expand=req.flag("expand"))
    if kind == "paths-info" and len(rest) == 2:
        _allow(req, "POST")
        paths = [_repo_path([p]) for p in req.form.get("paths", [])]
        return paths_info(store, repo_id, revision, paths, expand=req.flag("expand", source="form"))
    raise HubError(404, f"no such endpoint: {req.method} {req.path}")


def _allow(req: Request, *methods: str) -> None:
    if req.method not in methods:
        raise HubError(405, f"{req.method} is not allowed here", headers={"Allow": ", ".join(methods)})


def _segment(raw: str) -> str:
    value = unquote(raw)
    if value in ("", ".", "..") or "\0" in value:
        raise HubError(400, f"bad path segment {value!r}")
    return value


def _repo_id(org: str, name: str) -> str:
    repo_id = f"{_segment(org)}/{_segment(name)}"
    try:
        parse_repo_id(repo_id)
    except UsageError as err:
        raise HubError(404, str(err), code="RepoNotFound") from err
    return repo_id


def _repo_path(parts: list[str], *, allow_root: bool = False) -> str:
    """A path inside the repo; anything that could climb out of the commit directory is refused with 400."""
    path = unquote("/".join(parts))
    if not path and allow_root:
        return ""
    pieces = path.split("/")
    if path.startswith("/") or "\\" in path or "\0" in path or any(p in ("", ".", "..") for p in pieces):
        raise HubError(400, f"path {path!r} is not a relative path inside the repository")
    return path


def _open(store: RepoStore, repo_id: str, revision: str) -> tuple[StoredRepo, Commit]:
    repo = store.repo(repo_id)
    if repo is None:
        raise HubError(404, f"repository {repo_id} not found", code="RepoNotFound")
    sha = repo.resolve(revision)
    if sha is None:
        raise HubError(404, f"revision {revision!r} not found in {repo_id}", code="RevisionNotFound")
    return repo, store.commit(repo, sha)


def _not_found(commit: Commit, repo_id: str, path: str, what: str = "file") -> HubError:
    message = f"{what} {path!r} not found in {repo_id} at {commit.sha}"
    return HubError(404, message, code="EntryNotFound", headers={"X-Repo-Commit": commit.sha})


def model_info(store: RepoStore, repo_id: str, revision: str, *, blobs: bool) -> Reply:
    _, commit = _open(store, repo_id, revision)
    return Reply.json({
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.partition("/")[0],
        "sha": commit.sha,
        "lastModified": commit.created,
        "createdAt": commit.created,
        "private": False,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [_sibling(f, blobs=blobs) for f in sorted(commit.files, key=lambda f: f.path)],
    })


def tree(store: RepoStore, repo_id: str, revision: str, folder: str, *, recursive: bool, expand: bool) -> Reply:
    _, commit = _open(store, repo_id, revision)
    if folder and commit.folder(folder) is None:
        raise _not_found(commit, repo_id, folder, "folder")
    entries = commit.listing(folder, recursive=recursive)
    return Reply.json([_tree_entry(e, commit, expand=expand) for e in entries])


def paths_info(store: RepoStore, repo_id: str, revision: str, paths: list[str], *, expand: bool) -> Reply:
    """Like the hub: paths that do not exist are left out, not reported as errors."""
    _, commit = _open(store, repo_id, revision)
    found = [commit.file(p) or commit.folder(p) for p in dict.fromkeys(paths)]
    return Reply.json([_tree_entry(e, commit, expand=expand) for e in found if e is not None])


def resolve(store: RepoStore, repo_id: str, revision: str, path: str, range_header: str | None) -> Reply:
    repo, commit = _open(store, repo_id, revision)
    entry = commit.file(path)
    if entry is None:
        raise _not_found(commit, repo_id, path)
    headers = _file_headers(commit, entry)
    try:
        span = parse_range(range_header, entry.size)
    except HubError as err:
        err.headers["X-Repo-Commit"] = commit.sha
        raise
    start, end = span if span is not None else (0, entry.size - 1)
    length = end - start + 1
    headers["Content-Length"] = str(length)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    return Reply(206 if span else 200, headers, file=repo.file_path(commit, entry), offset=start, length=length)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte for one `bytes=` range; None means send everything, which RFC 9110 allows for any range
    header it cannot use (several ranges, other units, last < first). Raises 416 for a range past the end."""
    match = _RANGE_RE.fullmatch(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # "bytes=-N": the last N bytes
        if int(last) == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - int(last), 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(int(last) if last else size - 1, size - 1)


def _unsatisfiable(size: int) -> HubError:
    message = f"range not satisfiable for a file of {size} bytes"
    return HubError(416, message, headers={"Content-Range": f"bytes */{size}"})


def _file_headers(commit: Commit, entry: FileEntry) -> dict[str, str]:
    """The client takes the file's identity from X-Linked-Etag (LFS) or ETag, and its size from X-Linked-Size."""
    headers = {
        "X-Repo-Commit": commit.sha,
        "ETag": f'"{entry.sha256 if entry.lfs else entry.blob_id}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
    return headers


def _sibling(entry: FileEntry, *, blobs: bool) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": entry.path}
    if blobs:
        sibling.update(size=entry.size, blobId=entry.blob_id)
        if entry.lfs:
            sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return sibling


def _tree_entry(entry: FileEntry | Folder, commit: Commit, *, expand: bool) -> dict[str, Any]:
    if isinstance(entry, Folder):
        item: dict[str, Any] = {"type": "directory", "oid": entry.tree_id, "size": 0, "path": entry.path}
    else:
        item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    if expand:
        item["lastCommit"] = {"id": commit.sha, "title": "Published by enclave mirror", "date": commit.created}
    return item


# -- HTTP -----------------------------------------------------------------------------------------------------------


class MirrorServer(ThreadingHTTPServer):
    """One thread per connection; threads are daemons so SIGTERM never waits for a slow download to finish."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], store: RepoStore, *, token: str | None = None) -> None:
        self.store = store
        self.token = token
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, MirrorHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for our name (getfqdn), which can hang for seconds on an isolated network.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"


class MirrorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a snapshot is hundreds of small requests
    server_version = "enclave-mirror"
    sys_version = ""
    timeout = 120  # seconds an idle or stalled client may hold a thread
    server: MirrorServer
    _serving = False
    _body_pending = False

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        self._serving = True
        self._body_pending = self._chunked() or (self.headers.get("Content-Length") or "0").strip() not in ("", "0")
        status, sent = 500, 0
        try:
            reply = self._reply()
            status = reply.status
            status, sent = self._send(reply)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            self.close_connection = True
            log.info("%s: connection lost while sending: %s", self.client_address[0], type(exc).__name__)
        finally:
            self._serving = False
            self._access(status, sent)

    def _reply(self) -> Reply:
        if not self._authorized():
            return _unauthorized(credentials_sent="Authorization" in self.headers)
        try:
            return route(self.server.store, self._request())
        except HubError as err:
            return Reply.error(err)
        except Exception:
            log.exception("internal error on %s %s", self.command, _printable(urlsplit(self.path).path))
            return Reply.json({"error": "internal error; the mirror's log has the details"}, 500)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _request(self) -> Request:
        parts = urlsplit(self.path)
        form = self._read_form() if self.command == "POST" else {}
        return Request(self.command, parts.path, parse_qs(parts.query), form, self.headers.get("Range"))

    def _read_form(self) -> dict[str, list[str]]:
        """paths-info sends a small urlencoded form (JSON is accepted too); a bounded read keeps memory bounded."""
        if self._chunked():
            raise HubError(411, "send the request body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as err:
            raise HubError(400, "bad Content-Length") from err
        if not 0 <= length <= MAX_FORM:
            raise HubError(413, f"request body over {MAX_FORM} bytes")
        body = self.rfile.read(length)
        self._body_pending = False
        try:
            if self.headers.get_content_type() == "application/json":
                return _form_from_json(json.loads(body))
            return parse_qs(body.decode(), keep_blank_values=True)
        except (ValueError, UnicodeDecodeError) as err:
            raise HubError(400, f"cannot read the request body: {err}") from err

    def _chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _send(self, reply: Reply) -> tuple[int, int]:
        handle = None
        if reply.file is not None and self.command != "HEAD":
            try:
                handle = reply.file.open("rb")
            except OSError as exc:
                log.error("cannot open %s: %s", reply.file, exc.strerror)
                reply = Reply.json({"error": "stored file unreadable; the mirror's log has the details"}, 500)
        with handle or contextlib.nullcontext():
            self._send_head(reply)
            if self.command == "HEAD":
                return reply.status, 0
            if handle is None:
                self.wfile.write(reply.body)
                return reply.status, len(reply.body)
            return reply.status, self._send_file(handle, reply)

    def _send_head(self, reply: Reply) -> None:
        if self._body_pending:  # an unread request body would be taken for the next request
            reply.headers["Connection"] = "close"
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_file(self, handle: Any, reply: Reply) -> int:
        """sendfile(2) streams from the page cache in bounded chunks: a 5 GB file never passes through memory."""
        sent = self.connection.sendfile(handle, reply.offset, reply.length)
        if sent != reply.length:  # the stored file shrank: end the connection so the client sees a short read
            self.close_connection = True
            log.error("%s: sent %d of %d bytes; the stored file changed", reply.file, sent, reply.length)
        return sent

    def _access(self, status: int | str, sent: int | str) -> None:
        """Method, path, status and size only: headers (the token among them) and query strings are never logged."""
        path = _printable(urlsplit(getattr(self, "path", "") or "").path) or "-"
        command = getattr(self, "command", None) or "-"
        access_log.info('%s "%s %s" %s %s', self.client_address[0], command, path, status, sent)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self._serving:  # errors the base class answers itself (a malformed request line, ...)
            self._access(getattr(code, "value", code), 0)

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("%s: %s", self.client_address[0], _printable(format % args))


def _unauthorized(*, credentials_sent: bool) -> Reply:
    message = BAD_CREDENTIALS if credentials_sent else "Authorization required: send 'Authorization: Bearer <token>'"
    reply = Reply.json({"error": message}, 401)
    reply.headers.update({"WWW-Authenticate": 'Bearer realm="enclave-mirror"', "X-Error-Message": message})
    return reply


def _form_from_json(data: Any) -> dict[str, list[str]]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return {str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in data.items()}


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


# -- setup ----------------------------------------------------------------------------------------------------------


def load_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the token file: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the token file is not text") from None
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{path}: the token file must hold exactly one token")
    return token


def make_server(root: Path, *, bind: str = "127.0.0.1", port: int = 0, token: str | None = None) -> MirrorServer:
    """A server ready for serve_forever(); port 0 picks a free port (read it back from `.url`)."""
    if not root.is_dir():
        raise UsageError(f"{root}: the mirror root is not a directory; publish a model into it first")
    try:
        return MirrorServer((bind, port), RepoStore(root), token=token)
    except OSError as exc:
        raise MirrorError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from exc


