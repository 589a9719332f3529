"""Run inside an engine venv (stdlib + vLLM only): parse `vllm serve` argument lists with vLLM's own parser.

Reads a JSON list of argument lists (each without the leading `vllm`) on stdin; prints a JSON list with, per
list, null when vLLM accepts it, or vLLM's error message.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys


def _parser() -> argparse.ArgumentParser:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(dest="subcommand", required=True)
    ServeSubcommand().subparser_init(subparsers)
    return parser


def check(argv: list[str]) -> str | None:
    from vllm.entrypoints.cli.serve import ServeSubcommand

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = _parser().parse_args(argv)
            if getattr(args, "model_tag", None) is not None:
                args.model = args.model_tag
            ServeSubcommand().validate(args)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "argparse exited"
    except Exception as exc:  # any rejection by vLLM is the answer
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    print(json.dumps([check(list(argv)) for argv in json.load(sys.stdin)]))


if __name__ == "__main__":
    main()
