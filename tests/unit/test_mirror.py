"""The hub-compatible mirror, spoken to by the real huggingface_hub client and by plain urllib.

Every server runs in a thread on 127.0.0.1 with an ephemeral port; every request has a timeout.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import ModuleType

import pytest

from enclave.errors import UsageError
from enclave.mirror import MirrorServer, RepoStore, Request, is_lfs, make_server, publish, route
from enclave.mirror.repo import commit_id, lfs_pointer
from enclave.mirror.server import HubError, parse_range

pytestmark = pytest.mark.timeout(60)

REPO = "acme/tiny-llm"
TOKEN = "mirror-token-4f1c9a"
TIMEOUT = 5
FILES = {
    "config.json": b'{"model_type": "llama", "hidden_size": 64}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}\n',
    "LICENSE": b"Apache License 2.0 (test copy)\n",
    "nested/generation_config.json": b'{"temperature": 0.6}\n',
    "nested/deeper/notes.txt": b"two levels down\n",
}


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Published:
    root: Path
    source: Path
    commit: str
    files: dict[str, bytes]


@pytest.fixture
def published(tmp_path: Path) -> Published:
    files = {**FILES, "model.safetensors": os.urandom(300 * 1024)}
    source = tmp_path / "source"
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    root = tmp_path / "mirror"
    return Published(root, source, publish(root, REPO, source), files)


@contextmanager
def running(root: Path, token: str | None = None) -> Iterator[MirrorServer]:
    server = make_server(root, bind="127.0.0.1", port=0, token=token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture
def mirror(published: Published) -> Iterator[MirrorServer]:
    with running(published.root) as server:
        yield server


@pytest.fixture
def hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The real client, kept off ~/.cache, the network and any stored token.

    It reads most settings once at import, so the import-time constants are patched as well as the environment.
    """
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "hf-home"
    settings = {"HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_UPDATE_CHECK": "1", "NO_PROXY": "127.0.0.1,localhost"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    # A declared test dependency: a missing client is a broken install, not a reason to skip.
    hub = importlib.import_module("huggingface_hub")
    for module in ("constants", "errors", "hf_api"):
        importlib.import_module(f"huggingface_hub.{module}")
    constants = hub.constants
    patched = {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
               "HF_ASSETS_CACHE": str(home / "assets"), "HF_TOKEN_PATH": str(home / "token"),
               "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_HUB_OFFLINE": False,
               "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_UPDATE_CHECK": True}
    for name, value in patched.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    return hub


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          data: bytes | None = None) -> tuple[int, Message, bytes]:
    assert url.startswith("http://127.0.0.1:"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy, whatever the env
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)  # noqa: S310 - loopback
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def wait_for(condition: Callable[[], bool], seconds: float = 3.0) -> bool:
    """The access log line is written after the reply is sent, so a test may look before it is there."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the store ------------------------------------------------------------------------------------------------------


def test_publish_is_deterministic_and_moves_the_ref(published: Published) -> None:
    repo_dir = published.root / REPO
    assert publish(published.root, REPO, published.source) == published.commit
    assert (repo_dir / "refs" / "main").read_text().strip() == published.commit
    assert json.loads((repo_dir / "index" / f"{published.commit}.json").read_text())["commit"] == published.commit
    for rel, data in published.files.items():
        assert (repo_dir / published.commit / rel).read_bytes() == data

    (published.source / "config.json").write_bytes(b"{}\n")
    second = publish(published.root, REPO, published.source, ref="v2")
    assert second != published.commit
    assert (repo_dir / "refs" / "v2").read_text().strip() == second
    assert (repo_dir / "refs" / "main").read_text().strip() == published.commit
    assert not list(repo_dir.glob(".staging-*"))


def test_lfs_rule_hashes_and_commit_id(published: Published) -> None:
    assert is_lfs("model.safetensors", 1) and is_lfs("x/pytorch_model.BIN", 1) and is_lfs("m.gguf", 1)
    assert is_lfs("weights.pt", 0) and is_lfs("big.json", 10 * 1024 * 1024)
    assert not is_lfs("tokenizer.json", 10 * 1024 * 1024 - 1) and not is_lfs("LICENSE", 10)

    store = RepoStore(published.root)
    repo = store.repo(REPO)
    assert repo is not None
    commit = store.commit(repo, published.commit)
    tokenizer = commit.file("tokenizer.json")
    weights = commit.file("model.safetensors")
    assert tokenizer is not None and weights is not None
    assert not tokenizer.lfs and tokenizer.blob_id == git_blob(FILES["tokenizer.json"])
    data = published.files["model.safetensors"]
    assert weights.lfs and weights.sha256 == hashlib.sha256(data).hexdigest() and weights.size == len(data)
    # As on the hub, git records the LFS pointer, so an LFS file's blob id is the pointer's.
    assert weights.blob_id == git_blob(lfs_pointer(weights.sha256, weights.size))
    assert commit_id(reversed(commit.files)) == published.commit


def test_publish_leaves_out_download_metadata_and_refuses_bad_input(published: Published, tmp_path: Path) -> None:
    (published.source / ".cache" / "huggingface").mkdir(parents=True)
    (published.source / ".cache" / "huggingface" / "x.metadata").write_text("local download state")
    assert publish(published.root, REPO, published.source) == published.commit
    with pytest.raises(UsageError, match="org"):
        publish(published.root, "../evil", published.source)
    with pytest.raises(UsageError, match="not a directory"):
        publish(published.root, REPO, tmp_path / "missing")
    with pytest.raises(UsageError, match="ref"):
        publish(published.root, REPO, published.source, ref="../main")


def test_a_commit_copied_in_by_hand_is_hashed_once(published: Published) -> None:
    sha = "ab" * 20
    repo_dir = published.root / "acme" / "by-hand"
    shutil.copytree(published.source, repo_dir / sha)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha + "\n")
    reply = route(RepoStore(published.root), Request("GET", "/api/models/acme/by-hand", {"blobs": ["true"]}))
    assert reply.status == 200
    info = json.loads(reply.body)
    assert info["sha"] == sha and len(info["siblings"]) == len(published.files)
    assert (repo_dir / "index" / f"{sha}.json").is_file()


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)), ("bytes=90-500", (90, 99)),
    ("bytes=-500", (0, 99)), ("bytes=9-3", None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=-", None),
])
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_parse_range_past_the_end_is_416(header: str) -> None:
    with pytest.raises(HubError) as refused:
        parse_range(header, 100)
    assert refused.value.status == 416 and refused.value.headers["Content-Range"] == "bytes */100"


# -- raw HTTP -------------------------------------------------------------------------------------------------------


def test_head_headers_identify_the_file(mirror: MirrorServer, published: Published) -> None:
    weights = published.files["model.safetensors"]
    sha256 = hashlib.sha256(weights).hexdigest()
    status, headers, body = fetch(f"{mirror.url}/{REPO}/resolve/main/model.safetensors", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{sha256}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(weights))
    assert headers["X-Repo-Commit"] == published.commit

    status, headers, _ = fetch(f"{mirror.url}/{REPO}/resolve/{published.commit}/LICENSE", method="HEAD")
    assert status == 200 and headers["ETag"] == f'"{git_blob(FILES["LICENSE"])}"'
    assert "X-Linked-Etag" not in headers and "X-Linked-Size" not in headers
    assert headers["Content-Length"] == str(len(FILES["LICENSE"]))
    assert not [name for name in headers if name.lower().startswith("x-xet")]


def test_range_requests(mirror: MirrorServer, published: Published) -> None:
    data = published.files["model.safetensors"]
    url = f"{mirror.url}/{REPO}/resolve/{published.commit}/model.safetensors"
    status, headers, body = fetch(url, headers={"Range": "bytes=100-4195"})
    assert (status, body) == (206, data[100:4196])
    assert headers["Content-Range"] == f"bytes 100-4195/{len(data)}" and headers["Content-Length"] == "4096"
    status, headers, body = fetch(url, headers={"Range": f"bytes={len(data) - 7}-"})
    assert (status, body) == (206, data[-7:])
    assert headers["Content-Range"] == f"bytes {len(data) - 7}-{len(data) - 1}/{len(data)}"
    status, _, body = fetch(url, headers={"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, headers, _ = fetch(url, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, _, body = fetch(url)
    assert (status, body) == (200, data)


def test_missing_things_carry_the_hub_error_codes(mirror: MirrorServer, published: Published) -> None:
    status, headers, _ = fetch(f"{mirror.url}/acme/nothing-here/resolve/main/config.json", method="HEAD")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    status, headers, _ = fetch(f"{mirror.url}/{REPO}/resolve/main/absent.bin", method="HEAD")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", published.commit)
    status, headers, _ = fetch(f"{mirror.url}/api/models/{REPO}/revision/no-such-branch")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _ = fetch(f"{mirror.url}/{REPO}/resolve/{'0' * 40}/config.json")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")


@pytest.mark.parametrize("path", [
    f"/{REPO}/resolve/main/../../../etc/passwd",
    f"/{REPO}/resolve/main/%2e%2e/%2e%2e/refs/main",
    f"/{REPO}/resolve/main/nested/..%2F..%2Fconfig.json",
    f"/{REPO}/resolve/main//etc/passwd",
    f"/{REPO}/resolve/main/%2Fetc%2Fpasswd",
    "/acme/../resolve/main/config.json",
    f"/api/models/{REPO}/tree/main/..%2F..",
])
def test_path_traversal_is_refused(mirror: MirrorServer, path: str) -> None:
    status, _, body = fetch(mirror.url + path)
    assert status == 400, body


def test_tree_listing_is_plain_json_without_xet(mirror: MirrorServer, published: Published) -> None:
    status, _, body = fetch(f"{mirror.url}/api/models/{REPO}/tree/main?recursive=true&expand=true")
    entries = json.loads(body)
    assert status == 200 and "xetHash" not in body.decode()
    assert {e["path"] for e in entries if e["type"] == "file"} == set(published.files)
    assert {e["path"] for e in entries if e["type"] == "directory"} == {"nested", "nested/deeper"}
    assert all(e["lastCommit"]["id"] == published.commit for e in entries)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = fetch(f"{mirror.url}/api/models/{REPO}/paths-info/main", method="POST",
                            data=b"paths=LICENSE&paths=nested&paths=absent", headers=form)
    assert status == 200 and [e["path"] for e in json.loads(body)] == ["LICENSE", "nested"]


# -- the real client ------------------------------------------------------------------------------------------------


def test_model_info_reports_sizes_and_sha256(hf: ModuleType, mirror: MirrorServer, published: Published) -> None:
    info = hf.HfApi(endpoint=mirror.url).model_info(REPO, revision=published.commit, files_metadata=True, token=False)
    assert info.sha == published.commit
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(published.files)
    for rel, data in published.files.items():
        assert siblings[rel].size == len(data)
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(published.files["model.safetensors"]).hexdigest()
    assert siblings["tokenizer.json"].lfs is None and siblings["LICENSE"].lfs is None
    assert siblings["tokenizer.json"].blob_id == git_blob(FILES["tokenizer.json"])


def test_list_repo_tree_and_paths_info(hf: ModuleType, mirror: MirrorServer, published: Published) -> None:
    api = hf.HfApi(endpoint=mirror.url)
    entries = list(api.list_repo_tree(REPO, recursive=True, token=False))
    files = {e.path: e for e in entries if isinstance(e, hf.hf_api.RepoFile)}
    folders = {e.path for e in entries if isinstance(e, hf.hf_api.RepoFolder)}
    assert set(files) == set(published.files) and folders == {"nested", "nested/deeper"}
    assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(published.files["model.safetensors"]).hexdigest()
    deeper = list(api.list_repo_tree(REPO, path_in_repo="nested/deeper", revision=published.commit, token=False))
    assert [e.path for e in deeper] == ["nested/deeper/notes.txt"]
    infos = api.get_paths_info(REPO, ["config.json", "nested", "absent"], token=False)
    assert sorted(i.path for i in infos) == ["config.json", "nested"]


def test_snapshot_download_is_byte_identical(hf: ModuleType, mirror: MirrorServer, published: Published,
                                             tmp_path: Path) -> None:
    target = tmp_path / "local"
    hf.snapshot_download(REPO, revision=published.commit, local_dir=target, endpoint=mirror.url, token=False,
                         cache_dir=tmp_path / "hf-home" / "hub")
    for rel, data in published.files.items():
        assert (target / rel).read_bytes() == data, rel
    cached = Path(hf.snapshot_download(REPO, endpoint=mirror.url, token=False, cache_dir=tmp_path / "cache"))
    assert cached.name == published.commit
    assert {p.relative_to(cached).as_posix() for p in cached.rglob("*") if p.is_file()} == set(published.files)
    api = hf.HfApi(endpoint=mirror.url)
    if hasattr(api, "verify_repo_checksums"):  # 1.x and later: the client re-hashes against what the mirror reports
        result = api.verify_repo_checksums(REPO, revision=published.commit, local_dir=target, token=False)
        assert not result.mismatches and not result.missing_paths


def test_hf_hub_download_of_one_file(hf: ModuleType, mirror: MirrorServer, published: Published,
                                     tmp_path: Path) -> None:
    path = hf.hf_hub_download(REPO, "nested/deeper/notes.txt", endpoint=mirror.url, token=False,
                              cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == FILES["nested/deeper/notes.txt"]
    assert f"snapshots/{published.commit}/" in Path(path).as_posix()


def test_missing_file_and_revision_raise_the_client_errors(hf: ModuleType, mirror: MirrorServer,
                                                           tmp_path: Path) -> None:
    errors = hf.errors
    with pytest.raises(errors.EntryNotFoundError) as missing:
        hf.hf_hub_download(REPO, "absent.txt", endpoint=mirror.url, token=False, cache_dir=tmp_path / "cache")
    assert isinstance(missing.value, errors.HfHubHTTPError)  # from the server, not from an empty local cache
    with pytest.raises(errors.RevisionNotFoundError):
        hf.hf_hub_download(REPO, "config.json", revision="no-such-branch", endpoint=mirror.url, token=False,
                           cache_dir=tmp_path / "cache")
    with pytest.raises(errors.RevisionNotFoundError):
        hf.HfApi(endpoint=mirror.url).model_info(REPO, revision="f" * 40, token=False)
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.HfApi(endpoint=mirror.url).model_info("acme/absent", token=False)


def test_token_is_required_when_configured(hf: ModuleType, published: Published, tmp_path: Path) -> None:
    with running(published.root, token=TOKEN) as server:
        api = hf.HfApi(endpoint=server.url)
        with pytest.raises(hf.errors.HfHubHTTPError) as refused:
            api.model_info(REPO, token=False)
        assert refused.value.response.status_code == 401
        with pytest.raises(hf.errors.HfHubHTTPError) as wrong:
            api.model_info(REPO, token="not-the-token")
        assert wrong.value.response.status_code == 401
        assert api.model_info(REPO, token=TOKEN).sha == published.commit
        path = hf.hf_hub_download(REPO, "model.safetensors", endpoint=server.url, token=TOKEN,
                                  cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == published.files["model.safetensors"]
        status, headers, _ = fetch(f"{server.url}/{REPO}/resolve/main/LICENSE", method="HEAD")
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"]


def test_access_log_never_holds_the_token(published: Published, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="enclave.mirror")
    with running(published.root, token=TOKEN) as server:
        for token in (TOKEN, "wrong-" + TOKEN, None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            fetch(f"{server.url}/{REPO}/resolve/main/config.json", headers=headers)
        fetch(f"{server.url}/{REPO}/resolve/main/../x", headers={"Authorization": f"Bearer {TOKEN}"})
        assert wait_for(lambda: len([r for r in caplog.records if r.name == "enclave.mirror.access"]) >= 4)
    lines = [r.getMessage() for r in caplog.records if r.name == "enclave.mirror.access"]
    # a threaded server: a line is written after its answer is sent, so the next request's line may come first
    assert any(f'"GET /{REPO}/resolve/main/config.json" 200 {len(FILES["config.json"])}' in line for line in lines)
    assert sorted(line.split()[-2] for line in lines) == ["200", "400", "401", "401"]
    assert TOKEN not in caplog.text and "Bearer" not in caplog.text and "Authorization" not in caplog.text


def test_command_line_publishes_serves_and_stops_on_sigterm(published: Published, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = tmp_path / "cli-root"
    done = subprocess.run([sys.executable, "-m", "enclave.mirror", "publish", "--root", str(root), "--repo", REPO,
                           "--from", str(published.source)], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == published.commit

    server = subprocess.Popen([sys.executable, "-m", "enclave.mirror", "--root", str(root), "--port", "0"],
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = server.stderr.readline() if server.stderr else ""
        url = banner.rsplit(" at ", 1)[-1].split()[0]
        assert url.startswith("http://127.0.0.1:"), banner
        status, headers, _ = fetch(f"{url}/{REPO}/resolve/main/LICENSE", method="HEAD")
        assert status == 200 and headers["X-Repo-Commit"] == published.commit
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()


def test_enclave_mirror_publish_prints_the_commit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from enclave.cli import app

    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "LICENSE").write_text("MIT License\n")
    result = CliRunner().invoke(app, ["mirror", "publish", str(tmp_path / "root"), "--repo", "org/tiny",
                                      "--from", str(source)])
    assert result.exit_code == 0, result.output
    commit = result.output.strip()
    assert (tmp_path / "root" / "org" / "tiny" / "refs" / "main").read_text().strip() == commit
