"""A Hugging Face hub-compatible mirror: serves model repositories from a local directory inside the network.

The real `huggingface_hub` client downloads from it with `endpoint=` or `HF_ENDPOINT`, so nodes fetch weights the
way they would from the hub while no byte leaves the network. `repo` holds the store, `server` the HTTP side.
"""

from __future__ import annotations

from enclave.mirror.repo import Commit, FileEntry, Folder, MirrorError, RepoStore, StoredRepo, is_lfs, publish
from enclave.mirror.server import MirrorServer, Reply, Request, load_token, make_server, route

__all__ = [
    "Commit",
    "FileEntry",
    "Folder",
    "MirrorError",
    "MirrorServer",
    "Reply",
    "RepoStore",
    "Request",
    "StoredRepo",
    "is_lfs",
    "load_token",
    "make_server",
    "publish",
    "route",
]
