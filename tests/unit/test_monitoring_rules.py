"""The monitoring role's configuration as Ansible renders it, checked by the real tools: `promtool test rules` with a
firing and a quiet case for every alert rule, `promtool check config` on prometheus.yml, `amtool check-config` on
the Alertmanager configuration with and without receivers, `nginx -t` on the stub_status listener and
`systemd-analyze verify` on the units."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.hosttools import accesslog, signals
from tests.host_tools import require_tool
from tests.unit.role_render import render

GROUPS = {
    "enclave_nodes": {"node1": {"ansible_host": "10.40.0.11", "monitoring_gpu": True},
                      "node2": {"ansible_host": "10.40.0.12"}},
    "enclave_gateway": {"gw": {"ansible_host": "10.40.0.10"}},
    "enclave_staging": {"stage": {"ansible_host": "10.40.0.20"}},
}
PLAN = {"port": 8000, "repo": "org/tiny", "monitoring": {"host": "gw"},
        "replicas": [{"name": "replica-1", "hosts": ["node1"]}, {"name": "replica-2", "hosts": ["node2"]}]}
TEMPLATES = {name: f"monitoring/{name}.j2" for name in (
    "prometheus.yml", "alertmanager.yml", "enclave-alerts.rules.yml", "prometheus.default",
    "prometheus-alertmanager.default", "prometheus-node-exporter.default", "enclave-signals.service",
    "enclave-signals.timer", "nginx-stub-status.conf", "prometheus-nginx-exporter.default",
    "enclave-dcgm-exporter.service", "dcgm-counters.csv")}
RECEIVERS = {"monitoring_webhook_urls": ["http://10.40.1.5:9099/hook"],
             "monitoring_smtp": {"smarthost": "10.40.1.25:25", "from": "enclave@x.internal", "to": ["ops@x.internal"],
                                 "username": "relay"},
             "monitoring_smtp_password": "s3cret-relay-password"}
# Thresholds as a site would set them (not the defaults), so the tests prove the inventory reaches the rules.
THRESHOLDS = {"monitoring_alert_engine_down_for": "2m", "monitoring_alert_drained_minutes": 30,
              "monitoring_alert_queue_depth": 20, "monitoring_alert_kv_cache_usage": 0.9,
              "monitoring_alert_load_for": "5m", "monitoring_alert_model_disk_margin_gb": 10,
              "monitoring_alert_cert_days": 21, "monitoring_alert_gpu_temp_c": 85}
GIB = 1024 ** 3


def rendered_for(tmp: Path, **extra: Any) -> dict[str, dict[str, str]]:
    return render(tmp, roles=["monitoring"], groups=GROUPS, templates=TEMPLATES, extra={
        "enclave_private_network": "10.40.0.0/24", "enclave_plan": PLAN,
        "monitoring_rules_file": str(tmp / "out" / "gw" / "enclave-alerts.rules.yml"), **extra})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("monitoring")
    return tmp, rendered_for(tmp, **RECEIVERS, **THRESHOLDS)


def tool(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)


# -- promtool test rules: one case that fires and one that stays quiet per rule --------------------------------
ENGINE1 = {"job": "engine", "instance": "10.40.0.11:8000", "host": "node1", "replica": "replica-1"}
GPU0 = {"job": "dcgm", "instance": "10.40.0.11:9400", "host": "node1", "gpu": "0"}
DRAINED = {"job": "node", "instance": "10.40.0.10:9100", "host": "gw", "replica_host": "node2"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def case(alert: str, inputs: list[dict[str, str]], at: str, labels: dict[str, str] | None,
         summary: str = "", quiet_at: str | None = None) -> dict[str, Any]:
    """A test group: at `at` the alert fires with `labels` and `summary` (or does not, labels None); at `quiet_at`
    (before its `for:` ran out, or on the quiet series) nothing fires."""
    checks = [{"eval_time": at, "alertname": alert, "exp_alerts": [] if labels is None else [
        {"exp_labels": labels, "exp_annotations": {"summary": summary}}]}]
    if quiet_at:
        checks.insert(0, {"eval_time": quiet_at, "alertname": alert, "exp_alerts": []})
    return {"interval": "1m", "input_series": inputs, "alert_rule_test": checks}


CASES: dict[str, list[dict[str, Any]]] = {
    "EngineDown": [
        # down for 2m fires; at 1m the `for:` has not run out
        case("EngineDown", [series("up", ENGINE1, "0x10")], "3m", {**ENGINE1, "severity": "critical"},
             "engine of replica-1 on node1 does not answer /metrics", quiet_at="1m"),
        case("EngineDown", [series("up", ENGINE1, "1x10")], "5m", None)],
    "EngineNotReady": [
        case("EngineNotReady", [series("up", ENGINE1, "1x10")], "3m", {**ENGINE1, "severity": "critical"},
             "node1 answers on the engine port without vLLM's metrics", quiet_at="1m"),
        case("EngineNotReady", [series("up", ENGINE1, "1x10"), series("vllm:num_requests_running", ENGINE1, "0x10")],
             "5m", None)],
    "EngineQueueDeep": [
        case("EngineQueueDeep", [series("vllm:num_requests_waiting", ENGINE1, "25x10")], "6m",
             {"host": "node1", "replica": "replica-1", "severity": "warning"},
             "25 requests waiting on replica-1 (over 20)", quiet_at="3m"),
        case("EngineQueueDeep", [series("vllm:num_requests_waiting", ENGINE1, "20x10")], "8m", None)],
    "EngineKVCacheFull": [
        case("EngineKVCacheFull", [series("vllm:kv_cache_usage_perc", ENGINE1, "0.95x10")], "6m",
             {"host": "node1", "replica": "replica-1", "severity": "warning"}, "KV cache of replica-1 at 95%",
             quiet_at="3m"),
        case("EngineKVCacheFull", [series("vllm:kv_cache_usage_perc", ENGINE1, "0.85x10")], "8m", None)],
    "ReplicaDrainedTooLong": [
        # as Prometheus stores it: the gateway's node exporter target (host="gateway") reports the drained head
        case("ReplicaDrainedTooLong", [series("enclave_gateway_replica_drained", DRAINED, "1x40")], "31m",
             {"replica_host": "node2", "severity": "warning"},
             "node2 has been out of the gateway's rotation for over 30 minutes", quiet_at="20m"),
        # drained, then back in the rotation (the series ends) before 30 minutes
        case("ReplicaDrainedTooLong", [series("enclave_gateway_replica_drained", DRAINED, "1x20")], "35m", None)],
    "GpuXidError": [
        case("GpuXidError", [series("DCGM_FI_DEV_XID_ERRORS", GPU0, "0 0 48 48")], "2m",
             {**GPU0, "severity": "critical"}, "XID 48 on GPU 0 of node1", quiet_at="1m")],
    "GpuFellOffTheBus": [
        case("GpuFellOffTheBus", [series("DCGM_FI_DEV_XID_ERRORS", GPU0, "0 79")], "1m",
             {**GPU0, "severity": "critical"}, "a GPU of node1 fell off the bus"),
        # two GPUs reporting, then one: the count fell
        # (promtool has no stale markers: a series ends for queries 5 minutes after its last sample)
        case("GpuFellOffTheBus", [series("DCGM_FI_DEV_GPU_TEMP", GPU0, "40x20"),
                                  series("DCGM_FI_DEV_GPU_TEMP", {**GPU0, "gpu": "1"}, "40x2")],
             "12m", {"host": "node1", "severity": "critical"}, "a GPU of node1 fell off the bus", quiet_at="3m")],
    "GpuEccErrors": [
        case("GpuEccErrors", [series("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", GPU0, "0 0 0 1 1")], "4m",
             {**GPU0, "severity": "critical"}, "double-bit ECC errors on GPU 0 of node1", quiet_at="2m")],
    "GpuTemperatureHigh": [
        case("GpuTemperatureHigh", [series("DCGM_FI_DEV_GPU_TEMP", GPU0, "90x10")], "6m",
             {**GPU0, "severity": "warning"}, "GPU 0 of node1 at 90 C", quiet_at="3m"),
        case("GpuTemperatureHigh", [series("DCGM_FI_DEV_GPU_TEMP", GPU0, "85x10")], "8m", None)],
    "ModelDiskLow": [
        case("ModelDiskLow", [series("enclave_models_disk_free_bytes", {"job": "node", "host": "node1",
                                                                        "path": "/srv/enclave/models"},
                                     f"{5 * GIB}x10")], "6m",
             {"job": "node", "host": "node1", "path": "/srv/enclave/models", "severity": "warning"},
             "node1 has 5GiB free for models", quiet_at="3m"),
        case("ModelDiskLow", [series("enclave_models_disk_free_bytes", {"job": "node", "host": "node1"},
                                     f"{11 * GIB}x10")], "8m", None)],
    # promtool evaluates time() from 0: a notAfter 20 days in is inside the 21-day window, 22 days is not
    "GatewayCertificateExpiring": [
        case("GatewayCertificateExpiring", [series("enclave_gateway_tls_cert_not_after_timestamp_seconds",
                                                   {"job": "node", "host": "gw"}, f"{20 * 86400}x2")], "1m",
             {"job": "node", "host": "gw", "severity": "warning"},
             "the TLS certificate of gw expires within 21 days"),
        case("GatewayCertificateExpiring", [series("enclave_gateway_tls_cert_not_after_timestamp_seconds",
                                                   {"job": "node", "host": "gw"}, f"{22 * 86400}x2")], "1m", None)],
    "EgressToPublicAddress": [
        case("EgressToPublicAddress", [series("enclave_firewall_packets_total",
                                              {"job": "node", "host": "node2", "counter": "egress_public"},
                                              "3 3 3 4 4")], "4m",
             {"job": "node", "host": "node2", "counter": "egress_public", "severity": "critical"},
             "node2 tried to reach a public address", quiet_at="2m"),
        # the dropped counters moving is not an egress attempt to a public address
        case("EgressToPublicAddress", [series("enclave_firewall_packets_total",
                                              {"job": "node", "host": "node2", "counter": "dropped_egress"},
                                              "3 4 5 6 7")], "4m", None)],
    "WeightsSignatureBad": [
        case("WeightsSignatureBad", [series("enclave_weights_signature_ok",
                                            {"job": "node", "host": "node1", "revision": "abc"}, "1 0")], "1m",
             {"job": "node", "host": "node1", "revision": "abc", "severity": "critical"},
             "the active manifest on node1 does not verify (abc)", quiet_at="0m")],
    "SignalsSourceFailing": [
        case("SignalsSourceFailing", [series("enclave_signals_error", {"job": "node", "host": "gw", "source": "cert"},
                                             "1x10")], "6m",
             {"job": "node", "host": "gw", "source": "cert", "severity": "warning"}, "gw cannot read its cert signals",
             quiet_at="3m")],
    "ExporterDown": [
        case("ExporterDown", [series("up", {"job": "nginx", "instance": "10.40.0.10:9113", "host": "gw"}, "0x10")],
             "6m", {"job": "nginx", "instance": "10.40.0.10:9113", "host": "gw", "severity": "warning"},
             "nginx target 10.40.0.10:9113 is down", quiet_at="3m"),
        # an engine that is down pages as EngineDown, not twice
        case("ExporterDown", [series("up", ENGINE1, "0x10")], "8m", None)],
}


def rule_names(text: str) -> list[str]:
    return [rule["alert"] for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def test_every_rule_has_a_case(site: tuple[Path, dict[str, dict[str, str]]]) -> None:
    names = rule_names(site[1]["gw"]["enclave-alerts.rules.yml"])
    assert len(names) == 15 and sorted(names) == sorted(CASES)


def test_promtool_runs_every_rules_case(site: tuple[Path, dict[str, dict[str, str]]]) -> None:
    tmp, _ = site
    rules = tmp / "out" / "gw" / "enclave-alerts.rules.yml"
    tests = tmp / "rules-test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                     "tests": [c for cases in CASES.values() for c in cases]}, sort_keys=False))
    proc = tool("promtool", "test", "rules", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_catches_a_wrong_threshold(site: tuple[Path, dict[str, dict[str, str]]],
                                                 tmp_path: Path) -> None:
    # Guards the harness: the same cases against rules rendered with another queue threshold must fail.
    rules = tmp_path / "rules.yml"
    rules.write_text(site[1]["gw"]["enclave-alerts.rules.yml"].replace("vllm:num_requests_waiting) > 20",
                                                                       "vllm:num_requests_waiting) > 30"))
    tests = tmp_path / "rules-test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                     "tests": CASES["EngineQueueDeep"]}))
    proc = tool("promtool", "test", "rules", str(tests))
    assert proc.returncode != 0 and "EngineQueueDeep" in proc.stdout + proc.stderr


# -- the rendered configuration, checked by the tools that will read it ---------------------------------------
def test_promtool_check_config_takes_the_scrape_configuration(site: tuple[Path, dict[str, dict[str, str]]]) -> None:
    tmp, out = site
    proc = tool("promtool", "check", "config", str(tmp / "out" / "gw" / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(out["gw"]["prometheus.yml"])
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert [s["targets"] for s in jobs["node"]] == [["10.40.0.10:9100"], ["10.40.0.11:9100"], ["10.40.0.12:9100"],
                                                   ["10.40.0.20:9100"]]
    assert [(s["targets"], s["labels"]) for s in jobs["engine"]] == [
        (["10.40.0.11:8000"], {"host": "node1", "replica": "replica-1"}),
        (["10.40.0.12:8000"], {"host": "node2", "replica": "replica-2"})]
    assert [s["targets"] for s in jobs["nginx"]] == [["10.40.0.10:9113"]]
    assert [s["targets"] for s in jobs["dcgm"]] == [["10.40.0.11:9400"]]  # node1 has GPUs, node2 none
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.40.0.10:9093"]


def test_no_signal_label_collides_with_a_target_label(site: tuple[Path, dict[str, dict[str, str]]],
                                                      tmp_path: Path) -> None:
    # A scraped label that a target also sets is renamed to exported_<name> by Prometheus (honor_labels is off), so
    # a query or rule on it would never match: the drained replica's `host` label did exactly that on the sandbox.
    _, out = site
    config = yaml.safe_load(out["gw"]["prometheus.yml"])
    target_labels = {"job", "instance"} | {name for job in config["scrape_configs"]
                                           for static in job["static_configs"] for name in static.get("labels", {})}
    (tmp_path / "org--tiny" / ("a" * 40)).mkdir(parents=True)
    (tmp_path / "org--tiny" / "current").symlink_to("a" * 40)
    metrics = [*signals.firewall_metrics({"egress_public": (1, 60)}), *signals.drained_metrics(["node2"]),
               *signals.cert_metrics(1.0), *signals.weights_metrics(tmp_path / "org--tiny", True),
               *signals.usage_metrics(accesslog.Tally(tokens={("team-a", "org/tiny", "prompt"): 1},
                                                      requests={("team-a", "org/tiny", "200"): 1}))]
    signal_labels = {name for metric in metrics for labels, _ in metric.samples for name in labels}
    assert {"replica_host", "client", "model", "kind", "status"} <= signal_labels and "host" in target_labels
    assert not signal_labels & target_labels, signal_labels & target_labels


def test_servers_listen_on_the_private_address_with_the_inventorys_retention(
        site: tuple[Path, dict[str, dict[str, str]]]) -> None:
    gw = site[1]["gw"]
    assert "--web.listen-address=10.40.0.10:9090" in gw["prometheus.default"]
    assert "--storage.tsdb.retention.time=30d --storage.tsdb.retention.size=20GB" in gw["prometheus.default"]
    assert "--web.listen-address=10.40.0.10:9093 --cluster.listen-address=\"" in gw["prometheus-alertmanager.default"]
    assert "--web.listen-address=10.40.0.11:9100" in site[1]["node1"]["prometheus-node-exporter.default"]
    assert "-web.listen-address=10.40.0.10:9113" in gw["prometheus-nginx-exporter.default"]
    assert "listen 127.0.0.1:8089;" in gw["nginx-stub-status.conf"]


def test_amtool_takes_the_receivers_and_the_password_stays_out(
        site: tuple[Path, dict[str, dict[str, str]]]) -> None:
    tmp, out = site
    proc = tool("amtool", "check-config", str(tmp / "out" / "gw" / "alertmanager.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(out["gw"]["alertmanager.yml"])
    (receiver,) = config["receivers"]
    assert receiver["webhook_configs"] == [{"url": "http://10.40.1.5:9099/hook", "send_resolved": True}]
    assert receiver["email_configs"][0]["auth_password_file"] == "/etc/prometheus/alertmanager-smtp-password"
    assert all("s3cret" not in text for files in out.values() for text in files.values())


def test_no_receiver_renders_a_valid_configuration_that_sends_nowhere(tmp_path: Path) -> None:
    out = rendered_for(tmp_path)
    proc = tool("amtool", "check-config", str(tmp_path / "out" / "gw" / "alertmanager.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(out["gw"]["alertmanager.yml"])
    assert config["route"]["receiver"] == "nobody" and config["receivers"] == [{"name": "nobody"}]


def test_the_stub_status_listener_passes_nginx_t(site: tuple[Path, dict[str, dict[str, str]]],
                                                 tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    status = tmp_path / "stub-status.conf"
    status.write_text(site[1]["gw"]["nginx-stub-status.conf"])
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
                    f"  access_log off;\n  client_body_temp_path {tmp_path};\n  include {status};\n}}\n")
    proc = tool("nginx", "-t", "-q", "-c", str(conf), "-e", "stderr")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("host", "unit"), [("node1", "enclave-signals.service"), ("gw", "enclave-signals.service"),
                                            ("gw", "enclave-signals.timer"),
                                            ("node1", "enclave-dcgm-exporter.service")])
def test_units_pass_systemd_analyze(site: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path, host: str,
                                    unit: str) -> None:
    text = site[1][host][unit]
    # the programs it runs must exist for `verify`; the DCGM exporter is not installed on this machine
    text = text.replace("/usr/bin/dcgm-exporter", require_tool("true"))
    (tmp_path / unit).write_text(text)
    if unit.endswith(".timer"):
        (tmp_path / "enclave-signals.service").write_text(site[1][host]["enclave-signals.service"])
    proc = tool("systemd-analyze", "verify", str(tmp_path / unit))
    assert proc.returncode == 0, proc.stderr


def test_the_signals_unit_passes_each_host_what_it_has(site: tuple[Path, dict[str, dict[str, str]]]) -> None:
    node, gw, stage = (site[1][h]["enclave-signals.service"] for h in ("node1", "gw", "stage"))
    assert "--model-dir /srv/enclave/models/org--tiny " in node and "--drained-file" not in node
    assert "--drained-file /etc/enclave/gateway-drained --cert /etc/nginx/enclave/tls/server.crt" in gw
    assert "--model-dir" not in gw and "--model-dir" not in stage and "--nft-table enclave" in stage
    assert "ReadWritePaths=/var/lib/prometheus/node-exporter" in node
