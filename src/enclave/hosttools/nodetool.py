#!/usr/bin/env python3
"""The on-host weights tool: manifests, verification, signatures, activation, space and partial-download checks.

The command line only: each verb calls one function of its sibling modules (manifest, build, verify, signatures,
activation, space) and turns the result into text or JSON. Installed with them as hosttools/ on GPU and staging hosts
(python3, no enclave package: see __init__.py) and run there as `python3 .../hosttools/nodetool.py ...`; the
controller imports the same modules.

    enclave-weights manifest build DIR --repo ORG/NAME --revision REV --source TEXT [--expect-json FILE]
                                       [--license-file PATH] [--fetched-at UTC]
    enclave-weights manifest show DIR
    enclave-weights verify DIR [--deep] [--allowed-signers FILE --identity ID]
    enclave-weights sign DIR --key PRIVATE_KEY
    enclave-weights verify-signature DIR --allowed-signers FILE --identity ID
    enclave-weights activate MODELDIR REVISION --keep K [--allowed-signers FILE --identity ID]
    enclave-weights space-check PATH --need-bytes N [--margin 0.1]
    enclave-weights partials DIR
    enclave-weights status MODELDIR

Every verb takes `--json`. Exit codes: 0 ok, 1 a check failed, 2 bad usage or input. Errors are one line.

Errors: errors.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:
    # Run by path, as on the hosts: no package, so the relative imports below would fail. See __init__.py.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = Path(__file__).resolve().parent.name

from .activation import activate_revision, model_status
from .build import build_manifest
from .common import MANIFEST_NAME, SIGNATURE_NAME, gb, human
from .errors import InputError, NodeToolError
from .manifest import read_manifest
from .signatures import Signers, load_manifest, sign_manifest, verify_signature
from .space import find_partials, space_check
from .verify import VerifyReport, verify_tree


@dataclass
class Outcome:
    code: int
    data: dict[str, Any]
    lines: list[str]


def cmd_status(args: argparse.Namespace) -> Outcome:
    data = model_status(Path(args.model_dir))
    lines = [f"current: {data['current'] or 'none'}"]
    lines += [f"{'*' if r['current'] else ' '} {r['revision']}  {r.get('files', '?')} files  "
              f"{human(r['bytes']) if 'bytes' in r else r.get('manifest_error', '')}" for r in data["revisions"]]
    return Outcome(0, data, lines)


def cmd_manifest_build(args: argparse.Namespace) -> Outcome:
    result = build_manifest(Path(args.dir), repo=args.repo, revision=args.revision, source=args.source,
                            expect_json=Path(args.expect_json) if args.expect_json else None,
                            license_file=Path(args.license_file) if args.license_file else None,
                            fetched_at=args.fetched_at, jobs=args.jobs)
    m = result.manifest
    lines = [f"wrote {Path(args.dir) / MANIFEST_NAME}: {m.files} files, {human(m.total_bytes)}, "
             f"license {result.license_file} ({m.license_first_line})"]
    if result.removed_stale_signature:
        lines.append(f"removed the old {SIGNATURE_NAME}; sign the new manifest")
    return Outcome(0, result.to_json(), lines)


def cmd_manifest_show(args: argparse.Namespace) -> Outcome:
    m = read_manifest(Path(args.dir))
    s = m.summary()
    lines = [f"{key + ':':<20}{s[key]}" for key in ("repo", "revision", "source", "fetched_at", "files")]
    lines.append(f"{'bytes:':<20}{m.total_bytes} ({human(m.total_bytes)})")
    lines.append(f"{'license sha256:':<20}{m.license_sha256}")
    lines.append(f"{'license:':<20}{m.license_first_line}")
    return Outcome(0, s, lines)


def signers_from(args: argparse.Namespace) -> Signers | None:
    if (args.allowed_signers is None) != (args.identity is None):
        raise InputError("--allowed-signers and --identity go together")
    return Signers(Path(args.allowed_signers), args.identity) if args.allowed_signers else None


def cmd_verify(args: argparse.Namespace) -> Outcome:
    manifest = load_manifest(Path(args.dir), signers_from(args))
    report = verify_tree(Path(args.dir), deep=args.deep, jobs=args.jobs, manifest=manifest)
    return Outcome(0 if report.ok else 1, report.to_json(), describe_verify(Path(args.dir), report))


def describe_verify(directory: Path, r: VerifyReport) -> list[str]:
    rate = f", {human(r.bytes_hashed / r.seconds)}/s" if r.seconds > 0 and r.bytes_hashed else ""
    stats = (f"hashed {r.files_hashed} files ({human(r.bytes_hashed)} in {r.seconds:.1f} s{rate}), "
             f"{r.files_from_stamps} unchanged since their stamp")
    lines = [p.describe() for p in r.problems]
    head = "OK" if r.ok else f"FAILED ({len(r.problems)} problems)"
    lines.append(f"{head}: {directory}: {r.files} files, {human(r.total_bytes)}; {stats}")
    if not r.stamps_saved:
        lines.append(f"note: stamps not saved ({r.stamp_error}); the next run hashes again")
    return lines


def cmd_sign(args: argparse.Namespace) -> Outcome:
    sig = sign_manifest(Path(args.dir), Path(args.key))
    return Outcome(0, {"signature": str(sig)}, [f"wrote {sig}"])


def cmd_verify_signature(args: argparse.Namespace) -> Outcome:
    directory = Path(args.dir)
    verify_signature(directory, Path(args.allowed_signers), args.identity)
    return Outcome(0, {"ok": True, "identity": args.identity},
                   [f"good signature on {directory / MANIFEST_NAME} by {args.identity}"])


def cmd_activate(args: argparse.Namespace) -> Outcome:
    r = activate_revision(Path(args.model_dir), args.revision, keep=args.keep, jobs=args.jobs,
                          signers=signers_from(args))
    verb = "activated" if r.previous != r.revision else "already current:"
    lines = [f"{verb} {r.revision} (previous: {r.previous or 'none'}); kept {', '.join(r.kept)}"]
    if r.removed:
        lines.append(f"removed {', '.join(r.removed)}")
    return Outcome(0, r.to_json(), lines)


def cmd_space_check(args: argparse.Namespace) -> Outcome:
    r = space_check(Path(args.path), args.need_bytes, args.margin)
    if r.ok:
        return Outcome(0, r.to_json(), [f"OK: {gb(r.free_bytes)} free at {r.checked_at}, "
                                        f"{gb(r.required_bytes)} needed"])
    message = (f"not enough space at {r.checked_at} for {r.path}: {gb(r.free_bytes)} free, "
               f"{gb(r.required_bytes)} needed ({gb(r.need_bytes)} + {r.margin:.0%} margin)")
    return Outcome(1, {**r.to_json(), "error": message}, [message])


def cmd_partials(args: argparse.Namespace) -> Outcome:
    found = find_partials(Path(args.dir))
    data = {"partials": [{"path": p, "size": s} for p, s in found], "bytes": sum(s for _, s in found)}
    return Outcome(0, data, [f"{s} {p}" for p, s in found])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_signer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allowed-signers", help="check the manifest's signature first (OpenSSH allowed_signers file)")
    p.add_argument("--identity", help="the signer identity expected in --allowed-signers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclave-weights", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(subs: Any, name: str, func: Callable[[argparse.Namespace], Outcome], text: str) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(func=func)
        return p

    manifest = verbs.add_parser("manifest", help="build or show MANIFEST.sha256")
    msubs = manifest.add_subparsers(dest="manifest_verb", required=True)
    p = verb(msubs, "build", cmd_manifest_build, "hash every file under DIR and write DIR/MANIFEST.sha256")
    p.add_argument("dir")
    p.add_argument("--repo", required=True, help="ORG/NAME")
    p.add_argument("--revision", required=True, help="the pinned revision (a 40-hex commit for the hub)")
    p.add_argument("--source", required=True, help="where the files came from, e.g. a hub URL or 'local:/mnt/disk'")
    p.add_argument("--expect-json", help="JSON {path: {sha256, size}} every listed file must match")
    p.add_argument("--license-file", help="copy this license text to DIR/LICENSE first")
    p.add_argument("--fetched-at", help="UTC fetch time, e.g. 2026-11-28T18:00:00Z (default: now)")
    p.add_argument("--jobs", type=positive_int, help="files hashed at once (default: CPU count)")
    p = verb(msubs, "show", cmd_manifest_show, "print what DIR/MANIFEST.sha256 records")
    p.add_argument("dir")

    p = verb(verbs, "verify", cmd_verify, "check DIR against its manifest")
    p.add_argument("dir")
    p.add_argument("--deep", action="store_true", help="rehash every file, ignoring stamps")
    p.add_argument("--jobs", type=positive_int, help="files hashed at once (default: CPU count)")
    add_signer_options(p)

    p = verb(verbs, "sign", cmd_sign, "sign DIR/MANIFEST.sha256 with an OpenSSH key")
    p.add_argument("dir")
    p.add_argument("--key", required=True, help="private key file (or a public key whose private half is in ssh-agent)")

    p = verb(verbs, "verify-signature", cmd_verify_signature, "check DIR/MANIFEST.sha256.sig")
    p.add_argument("dir")
    p.add_argument("--allowed-signers", required=True, help="OpenSSH allowed_signers file")
    p.add_argument("--identity", required=True, help="the signer identity expected in that file")

    p = verb(verbs, "activate", cmd_activate, "verify MODELDIR/REVISION, point MODELDIR/current at it, prune old ones")
    p.add_argument("model_dir", metavar="MODELDIR")
    p.add_argument("revision", metavar="REVISION")
    p.add_argument("--keep", type=int, required=True,
                   help="revisions to keep on disk, counting the new current one (at least 1)")
    p.add_argument("--jobs", type=positive_int, help="files hashed at once (default: CPU count)")
    add_signer_options(p)

    p = verb(verbs, "space-check", cmd_space_check, "check free space where PATH will be written")
    p.add_argument("path")
    p.add_argument("--need-bytes", type=int, required=True)
    p.add_argument("--margin", type=float, default=0.1, help="extra fraction required (default: 0.1)")

    p = verb(verbs, "status", cmd_status, "show MODELDIR's current revision, kept revisions and the last transfer")
    p.add_argument("model_dir", metavar="MODELDIR")

    p = verb(verbs, "partials", cmd_partials, "list partial downloads under DIR")
    p.add_argument("dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 for --help; main() returns instead
        return e.code if isinstance(e.code, int) else 2
    try:
        outcome = args.func(args)
    except NodeToolError as e:
        outcome = Outcome(e.exit_code, {**e.details, "error": str(e)}, [])
        print(f"enclave-weights: error: {e}", file=sys.stderr)
    except OSError as e:
        outcome = Outcome(2, {"error": str(e)}, [])
        print(f"enclave-weights: error: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": outcome.code == 0, **outcome.data}, indent=1))
    else:
        stream = sys.stdout if outcome.code == 0 else sys.stderr
        for line in outcome.lines:
            print(line, file=stream)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
