"""`python -m enclave.mirror`: serve a mirror root, or publish a folder into one.

    python -m enclave.mirror --root DIR --port N [--bind ADDR] [--token-file F]
    python -m enclave.mirror publish --root DIR --repo org/name --from DIR [--ref main]

Plain argparse, not the Typer CLI: this runs on the sandbox controller and in systemd units with only the stdlib.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from enclave.errors import EnclaveError
from enclave.mirror.repo import publish
from enclave.mirror.server import MirrorServer, load_token, make_server

log = logging.getLogger("enclave.mirror")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["publish"]:
            return _publish(args[1:])
        return _serve(args)
    except EnclaveError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return err.exit_code


def _publish(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m enclave.mirror publish",
                                     description="Copy a folder into the mirror as a commit; print the commit id.")
    parser.add_argument("--root", type=Path, required=True, help="the mirror root")
    parser.add_argument("--repo", required=True, help="repository id, org/name")
    parser.add_argument("--from", dest="source", type=Path, required=True, help="folder holding the model files")
    parser.add_argument("--ref", default="main", help="ref to point at the new commit (default: main)")
    args = parser.parse_args(argv)
    print(publish(args.root, args.repo, args.source, ref=args.ref))
    return 0


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m enclave.mirror",
                                     description="Serve a mirror root over the Hugging Face hub protocol.",
                                     epilog="`python -m enclave.mirror publish --help` adds a model to a root.")
    parser.add_argument("--root", type=Path, required=True, help="the mirror root")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, required=True, help="TCP port (0 picks a free one)")
    parser.add_argument("--token-file", type=Path, help="require 'Authorization: Bearer <token in this file>'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    token = load_token(args.token_file) if args.token_file else None
    server = make_server(args.root, bind=args.bind, port=args.port, token=token)
    stop_on_signals(server)
    log.info("serving %s at %s%s", args.root, server.url, " (token required)" if token else "")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    log.info("stopped")
    return 0


def stop_on_signals(server: MirrorServer) -> None:
    """shutdown() waits for serve_forever() to return, so it runs on its own thread, not in the handler."""

    def stop(signum: int, _frame: object) -> None:
        log.info("%s received; shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return port


if __name__ == "__main__":
    sys.exit(main())
