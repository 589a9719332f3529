"""`enclave mirror serve|publish`: an in-house Hugging Face hub mirror, so anything inside the network (vLLM,
transformers, the staging host) can use HF_ENDPOINT without a route out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enclave.cli.common import console, err, reports_errors

app = typer.Typer(help="A hub-compatible mirror for the inside of the network (HF_ENDPOINT).", no_args_is_help=True)


@app.command()
@reports_errors
def serve(
    root: Annotated[Path, typer.Argument(help="The mirror root (made by `enclave mirror publish`).")],
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 picks a free one).")] = 8809,
    token_file: Annotated[Path | None, typer.Option(help="Require 'Authorization: Bearer <token in this file>'.")]
    = None,
) -> None:
    """Serve ROOT over the hub protocol (API, tree, paths-info, resolve with ranges; never Xet) until Ctrl-C."""
    from enclave.mirror.__main__ import stop_on_signals
    from enclave.mirror.server import load_token, make_server

    server = make_server(root, bind=bind, port=port, token=load_token(token_file) if token_file else None)
    stop_on_signals(server)
    err.print(f"serving {root} at {server.url}; clients set HF_ENDPOINT={server.url}", highlight=False)
    try:
        server.serve_forever()
    finally:
        server.server_close()


@app.command()
@reports_errors
def publish(
    root: Annotated[Path, typer.Argument(help="The mirror root.")],
    repo: Annotated[str, typer.Option(help="Repository id, ORG/NAME.")],
    source: Annotated[Path, typer.Option("--from", help="Folder holding the model files.")],
    ref: Annotated[str, typer.Option(help="Ref to point at the new commit.")] = "main",
) -> None:
    """Copy a folder into the mirror as a commit; print the commit id (pin it as enclave_model_revision)."""
    from enclave.mirror.repo import publish as publish_commit

    console.print(publish_commit(root, repo, source, ref=ref), highlight=False)
