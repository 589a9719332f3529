"""The on-host signals tool (src/enclave/hosttools/signals.py) on recorded inputs: nft's JSON counters (recorded
from nft 1.0.6 in a throwaway namespace), the gateway's drained list as its template writes it, a PEM certificate,
a model directory laid out as the weights role leaves it. Its output is checked by promtool itself."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from enclave.hosttools import signals
from tests.host_tools import require_tool

FIXTURES = Path(__file__).parent / "fixtures" / "monitoring"
CERT_NOT_AFTER = 1798999691  # `openssl x509 -enddate` of the fixture: Jan  3 18:08:11 2027 GMT


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=60, check=False)


def test_nft_counters_are_parsed_from_the_recorded_output() -> None:
    counters = signals.parse_nft_counters((FIXTURES / "nft-counters.json").read_text(), "enclave")
    assert counters == {"dropped_egress": (0, 0), "egress_public": (2, 86), "dropped_ingress": (0, 0),
                        "dropped_forward": (0, 0)}


def test_output_without_the_table_is_an_error_not_zeros() -> None:
    with pytest.raises(ValueError, match="no counters of table enclave"):
        signals.parse_nft_counters('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}', "enclave")


def test_the_drained_list_skips_its_header() -> None:
    assert signals.parse_drained((FIXTURES / "gateway-drained").read_text()) == ["node2"]
    assert signals.drained_metrics([])[0].samples == [({}, 0)]


def test_the_certificates_expiry_is_read_without_openssl() -> None:
    assert signals.cert_not_after(FIXTURES / "gateway-cert.pem") == CERT_NOT_AFTER


def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "org--tiny"
    (model / ("a" * 40)).mkdir(parents=True)
    (model / "current").symlink_to("a" * 40)
    stamps = model / ("a" * 40) / signals.STAMPS_NAME
    stamps.write_text("{}")
    os.utime(stamps, (1_700_000_000, 1_700_000_000))
    return model


def run_all(tmp_path: Path, *, nft_rc: int = 0, signature_rc: int = 0) -> tuple[str, list[list[str]]]:
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if argv[0] == "nft":
            return subprocess.CompletedProcess(argv, nft_rc, (FIXTURES / "nft-counters.json").read_text(), "boom")
        return subprocess.CompletedProcess(argv, signature_rc, "", "")

    args = signals.parser().parse_args([
        "--out", str(tmp_path), "--nft-table", "enclave", "--model-dir", str(model_dir(tmp_path)),
        "--nodetool", "/opt/enclave/tools/hosttools/nodetool.py", "--allowed-signers", "/etc/enclave/signers",
        "--identity", "enclave-weights", "--drained-file", str(FIXTURES / "gateway-drained"),
        "--cert", str(FIXTURES / "gateway-cert.pem")])
    return signals.render(signals.collect(args, run=fake, now=lambda: 1_750_000_000.0)), calls


def test_every_signal_is_rendered_and_promtool_accepts_the_file(tmp_path: Path) -> None:
    text, calls = run_all(tmp_path)
    rev = "a" * 40
    for line in ['enclave_firewall_packets_total{counter="egress_public"} 2',
                 'enclave_firewall_bytes_total{counter="egress_public"} 86',
                 'enclave_firewall_packets_total{counter="dropped_egress"} 0',
                 f'enclave_weights_active_revision_info{{model="org--tiny",revision="{rev}"}} 1',
                 f'enclave_weights_signature_ok{{model="org--tiny",revision="{rev}"}} 1',
                 f'enclave_weights_last_verified_timestamp_seconds{{model="org--tiny",revision="{rev}"}} 1700000000',
                 "enclave_gateway_drained_replicas 1", 'enclave_gateway_replica_drained{replica_host="node2"} 1',
                 f"enclave_gateway_tls_cert_not_after_timestamp_seconds {CERT_NOT_AFTER}",
                 'enclave_signals_error{source="nft"} 0', "enclave_signals_last_run_timestamp_seconds 1750000000"]:
        assert line in text.splitlines(), line
    assert "enclave_models_disk_free_bytes{" in text
    # the signature is checked on the revision `current` resolves to, with the pinned signers
    assert calls[1][2:] == ["verify-signature", str(tmp_path / "models" / "org--tiny" / rev),
                            "--allowed-signers", "/etc/enclave/signers", "--identity", "enclave-weights"]
    proc = promtool_check_metrics(text)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_failed_source_is_flagged_and_the_rest_still_written(tmp_path: Path) -> None:
    text, _ = run_all(tmp_path, nft_rc=1, signature_rc=1)
    assert 'enclave_signals_error{source="nft"} 1' in text and "enclave_firewall_packets_total" not in text
    assert 'enclave_weights_signature_ok{model="org--tiny",revision="' + "a" * 40 + '"} 0' in text
    assert 'enclave_gateway_replica_drained{replica_host="node2"} 1' in text


def test_main_replaces_the_file_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    (out / signals.OUT_NAME).write_text("old\n")
    before = (out / signals.OUT_NAME).stat().st_ino
    assert signals.main(["--out", str(out), "--drained-file", str(FIXTURES / "gateway-drained")]) == 0
    path = out / signals.OUT_NAME
    assert path.stat().st_ino != before  # renamed over, not rewritten in place
    assert [p.name for p in out.iterdir()] == [signals.OUT_NAME]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert "enclave_gateway_drained_replicas 1" in path.read_text()
    stamp = path.read_text().split("\nenclave_signals_last_run_timestamp_seconds ")[1]
    assert float(stamp) <= time.time()


def test_the_run_stamp_is_never_later_than_the_clock(tmp_path: Path) -> None:
    # CI once read a stamp 0.05 ms ahead of time.time(): rounding 0.1469543 to the millisecond gave 0.147.
    args = signals.parser().parse_args(["--out", str(tmp_path)])
    for now in (1_796_597_881.1469543, 1_750_000_000.9996, 1_750_000_000.0):
        text = signals.render(signals.collect(args, now=lambda now=now: now))
        stamp = text.split("\nenclave_signals_last_run_timestamp_seconds ")[1]
        assert now - 0.001 < float(stamp) <= now, (now, stamp)


def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert signals.main(["--out", str(tmp_path / "missing")]) == 2
    assert signals.main(["--out", str(tmp_path), "--nodetool", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 2
