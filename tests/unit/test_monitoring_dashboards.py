"""The Grafana dashboards the kit ships (templates/monitoring/dashboards/*.json): every panel's PromQL is accepted
by a real Prometheus (Debian's binary on loopback, asked through /api/v1/query) and, on an hour of backfilled series
labelled as a deployed site's are, returns series carrying the labels its legend names; every metric a query names
is one the kit really scrapes (the kit's own signals, the DCGM counters it collects, vLLM 0.32.0's names, the node
and nginx exporters' recorded names); the JSON holds together and refers to the datasource the role provisions; the
Grafana files the role writes render and its checks name the setting. Grafana itself is not in Debian and never ran
here."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.hosttools import signals
from tests.host_tools import require_tool
from tests.unit.local_prometheus import prometheus_server
from tests.unit.role_render import REPO, ROLES, render, run_play

DASHBOARDS_DIR = REPO / "templates" / "monitoring" / "dashboards"
DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
FIXTURES = Path(__file__).parent / "fixtures"
ROLE_VARS = yaml.safe_load((ROLES / "monitoring" / "vars" / "main.yml").read_text())

# Grafana's own variables, as a query over the last hour at a 15s scrape interval would see them.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600",
                    "__interval_ms": "15000"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable (label_values(METRIC, LABEL): its METRIC)."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{dashboard['uid']}/{panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert found, f"{dashboard['uid']}: variable {variable['name']}: {query!r} is not label_values(...)"
            yield f"{dashboard['uid']} variable ${variable['name']}", found.group(1)


def substitute(expr: str, variables: set[str]) -> str:
    """The query Grafana sends: its built-ins become durations, a dashboard variable (used in =~ matchers) matches
    anything. A variable the dashboard does not declare is an error."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in variables:
            return ".*"
        raise AssertionError(f"{expr!r} uses ${name}, which neither Grafana nor the dashboard defines")
    return _VARIABLE.sub(value, expr)


def variables_of(dashboard: dict[str, Any]) -> set[str]:
    return {v["name"] for v in dashboard.get("templating", {}).get("list", [])}


ALL_QUERIES = [(path.name, where, substitute(expr, variables_of(load(path))))
               for path in DASHBOARDS for where, expr in queries(load(path))]


# -- a real Prometheus on loopback --------------------------------------------------------------------------------
def api_query(base: str, expr: str, at: int | None = None) -> dict[str, Any]:
    """Prometheus's answer to an instant query (at `at`, else now): a parse or type error is `status: error`."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, **({"time": at} if at else {})})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback, built above)
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


# -- series as Prometheus stores them on a deployed site (target labels from prometheus.yml.j2 added) -----------
START = int(time.time()) - 3600  # an hour of samples, 15 s apart, ending a little before the tests run
STEPS = 200
AT = START + 15 * (STEPS - 20)  # where the queries are evaluated: inside the data, with a full rate window behind
ENGINE = {"job": "engine", "instance": "10.40.0.11:8000", "host": "node1", "replica": "replica-1",
          "model_name": "org/tiny", "engine": "0"}  # vLLM's own labels as in the recorded scrapes
GPU = {"job": "dcgm", "instance": "10.40.0.11:9400", "host": "node1", "UUID": "GPU-0", "modelName": "H200"}
NGINX = {"job": "nginx", "instance": "10.40.0.10:9113", "host": "gw"}


def node_target(host: str) -> dict[str, str]:
    return {"job": "node", "instance": f"{host}:9100", "host": host}


def kit_signals(tmp: Path) -> list[tuple[str, dict[str, str], float]]:
    """The kit's own signals, built by signals.py itself (so their labels are the real ones)."""
    model = tmp / "org--tiny"
    (model / ("a" * 40)).mkdir(parents=True)
    (model / ("a" * 40) / signals.STAMPS_NAME).write_text("{}")
    (model / "current").symlink_to("a" * 40)
    found = []
    for host, metrics in (
            ("node1", [*signals.firewall_metrics({"egress_public": (0, 0), "dropped_egress": (3, 180)}),
                       *signals.weights_metrics(model, True)]),
            ("gw", [*signals.drained_metrics(["node2"]), *signals.cert_metrics(float(START + 40 * 86400))])):
        for metric in metrics:
            found += [(metric.name, {**labels, **node_target(host)}, value) for labels, value in metric.samples]
        found.append(("enclave_signals_error", {"source": "nft", **node_target(host)}, 0.0))
    return found


def synthetic_series(tmp: Path) -> str:
    """OpenMetrics text for promtool's backfill: every series a dashboard reads, with the labels it would carry."""
    constant: list[tuple[str, dict[str, str], float]] = [
        ("up", {**node_target("gw")}, 1), ("up", {**node_target("node1")}, 1), ("up", NGINX, 1),
        ("up", {k: ENGINE[k] for k in ("job", "instance", "host", "replica")}, 1),
        ("up", {k: GPU[k] for k in ("job", "instance", "host")}, 1),
        ("vllm:num_requests_running", ENGINE, 3), ("vllm:num_requests_waiting", ENGINE, 1),
        ("vllm:kv_cache_usage_perc", ENGINE, 0.4),
        ("nginx_up", NGINX, 1), ("nginx_connections_active", NGINX, 5), ("nginx_connections_reading", NGINX, 1),
        ("nginx_connections_writing", NGINX, 2), ("nginx_connections_waiting", NGINX, 2),
        ("node_memory_MemAvailable_bytes", node_target("gw"), 8e9),
        ("node_memory_MemTotal_bytes", node_target("gw"), 16e9),
        *kit_signals(tmp)]
    for gpu in ("0", "1"):
        labels = {**GPU, "gpu": gpu}
        constant += [("DCGM_FI_DEV_GPU_UTIL", labels, 90), ("DCGM_FI_DEV_GPU_TEMP", labels, 60),
                     ("DCGM_FI_DEV_FB_USED", labels, 70000), ("DCGM_FI_DEV_POWER_USAGE", labels, 500),
                     ("DCGM_FI_DEV_XID_ERRORS", labels, 13 if gpu == "1" else 0)]
    per_step: list[tuple[str, dict[str, str], float]] = [  # counters: this much more every step
        ("vllm:generation_tokens_total", ENGINE, 500), ("vllm:prompt_tokens_total", ENGINE, 80),
        ("vllm:request_success_total", {**ENGINE, "finished_reason": "stop"}, 2),
        ("vllm:prefix_cache_queries_total", ENGINE, 80), ("vllm:prefix_cache_hits_total", ENGINE, 20),
        ("vllm:num_preemptions_total", ENGINE, 0.1),
        ("nginx_http_requests_total", NGINX, 3), ("nginx_connections_accepted", NGINX, 1),
        ("nginx_connections_handled", NGINX, 1),
        ("node_cpu_seconds_total", {**node_target("gw"), "cpu": "0", "mode": "idle"}, 10),
        ("node_network_receive_bytes_total", {**node_target("gw"), "device": "eth0"}, 1e6),
        ("node_network_transmit_bytes_total", {**node_target("gw"), "device": "eth0"}, 2e6),
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", {**GPU, "gpu": "0"}, 0.01),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", {**GPU, "gpu": "0"}, 0)]
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "inter_token_latency_seconds",
                 "request_queue_time_seconds"):
        for le, share in (("0.1", 0.2), ("0.5", 0.6), ("1.0", 0.9), ("5.0", 1.0), ("+Inf", 1.0)):
            per_step.append((f"vllm:{name}_bucket", {**ENGINE, "le": le}, 2 * share))
        per_step += [(f"vllm:{name}_count", ENGINE, 2), (f"vllm:{name}_sum", ENGINE, 1.2)]
    series = [(name, labels, value, False) for name, labels, value in constant]
    series += [(name, labels, value, True) for name, labels, value in per_step]
    lines = []
    # OpenMetrics wants each family's samples together, and each series' in time order
    for name, labels, value, counter in sorted(series, key=lambda item: (item[0], sorted(item[1].items()))):
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        lines += [f"{name}{{{inner}}} {value * step if counter else value} {START + 15 * step}"
                  for step in range(STEPS)]
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    (tmp / "series.om").write_text(synthetic_series(tmp))
    backfill = subprocess.run([require_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", "-q",
                               str(tmp / "series.om"), str(tmp / "data")], capture_output=True, text=True,
                              timeout=120, check=False)
    assert backfill.returncode == 0, backfill.stderr[-2000:]
    with prometheus_server(tmp) as base:
        yield base


def test_the_dashboards_are_there() -> None:
    assert [p.name for p in DASHBOARDS] == ["enclave-gateway.json", "enclave-gpus.json", "enclave-overview.json",
                                           "enclave-replica.json"]
    assert len(ALL_QUERIES) > 40


@pytest.mark.parametrize(("name", "where", "expr"), ALL_QUERIES, ids=[q[1] for q in ALL_QUERIES])
def test_prometheus_accepts_every_query(prometheus: str, name: str, where: str, expr: str) -> None:
    answer = api_query(prometheus, expr)
    assert answer["status"] == "success", f"{name} {where}: {expr}\n{answer.get('error')}"


def variable_values(base: str, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each variable's first value, found as Grafana finds it (label_values(METRIC, LABEL)) in the series above."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        metric, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"]).groups()
        answer = api_query(base, f"group by ({label}) ({metric})", at=AT)
        found = sorted(r["metric"].get(label, "") for r in answer["data"]["result"])
        assert found and found[0], f"{dashboard['uid']}: ${variable['name']} finds no {label} on {metric}"
        values[variable["name"]] = found[0]  # host and replica names: nothing a regex would read specially
    return values


def drawn_queries() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in DASHBOARDS:
        dashboard = load(path)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                yield path.name, f"{dashboard['uid']}/{panel['id']} {panel['title']!r} {target['refId']}", target


DRAWN = list(drawn_queries())


@pytest.mark.parametrize(("name", "where", "target"), DRAWN, ids=[d[1] for d in DRAWN])
def test_every_query_draws_series_with_its_legend_labels(prometheus: str, name: str, where: str,
                                                         target: dict[str, Any]) -> None:
    # On series labelled as a deployed site's are, each query returns something, with the variable set the way
    # Grafana sets it, and every label its legend names: a label missing from the data or lost in an aggregation
    # would draw an empty panel or a blank legend.
    dashboard = load(DASHBOARDS_DIR / name)
    values = variable_values(prometheus, dashboard)
    expr = _VARIABLE.sub(lambda m: GRAFANA_BUILTINS.get(m.group(1) or m.group(2))
                         or values[m.group(1) or m.group(2)], target["expr"])
    answer = api_query(prometheus, expr, at=AT)
    assert answer["status"] == "success", (where, expr, answer)
    result = answer["data"]["result"]
    assert result, f"{where}: {expr} returns nothing"
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
        assert all(label in series["metric"] for series in result), f"{where}: no {label} in {result}"


def test_the_data_check_catches_a_label_the_series_lack(prometheus: str) -> None:
    # Guards the check above: vLLM's series carry no `gpu` label, so grouping by it leaves the legend blank.
    answer = api_query(prometheus, "sum by (gpu) (vllm:num_requests_running)", at=AT)
    assert answer["data"]["result"] and "gpu" not in answer["data"]["result"][0]["metric"]
    answer = api_query(prometheus, 'vllm:num_requests_running{replica="replica-9"}', at=AT)
    assert answer["status"] == "success" and answer["data"]["result"] == []


@pytest.mark.parametrize("broken", [
    "histogram_quantile(0.95, sum by (le replica) (rate(vllm:e2e_request_latency_seconds_bucket[1m])))",
    "rate(vllm:generation_tokens_total)",  # a range function given an instant vector
    "rate(vllm:generation_tokens_total[$__rate_interval])",  # a variable Grafana would have substituted
])
def test_prometheus_refuses_a_broken_query(prometheus: str, broken: str) -> None:
    # Guards the harness: the same API call says `error` for a query that would draw nothing in Grafana.
    answer = api_query(prometheus, broken)
    assert answer["status"] == "error" and answer["errorType"] == "bad_data", answer


def test_an_undeclared_variable_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"uses \$node"):
        substitute('up{host=~"$node"}', {"host"})
    assert substitute('rate(x{host=~"${host}"}[$__rate_interval])', {"host"}) == 'rate(x{host=~".*"}[1m])'


# -- every metric is one the kit scrapes ------------------------------------------------------------------------
_SUFFIXES = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def vllm_names() -> set[str]:
    """vLLM 0.32.0's series names: the wheel's definitions with prometheus_client's suffixes."""
    names = set()
    for line in (FIXTURES / "vllm-metrics" / "loggers-0.32.0-names.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, kind = line.split()
            names |= {name + suffix for suffix in _SUFFIXES[kind]}
    return names


def signal_names() -> set[str]:
    text = (REPO / "src" / "enclave" / "hosttools" / "signals.py").read_text()
    return set(re.findall(r'Metric\(\s*"([a-z_]+)"', text))


def dcgm_names() -> set[str]:
    lines = (REPO / "templates" / "monitoring" / "dcgm-counters.csv.j2").read_text().splitlines()
    return {line.split(",")[0].strip() for line in lines if line.strip() and not line.startswith("#")}


def recorded(name: str) -> set[str]:
    return set((FIXTURES / "exporter-metrics" / name).read_text().split())


def scraped_names() -> set[str]:
    return ({"up"} | vllm_names() | signal_names() | dcgm_names()
            | recorded("node-exporter-1.5.0-names.txt") | recorded("nginx-exporter-0.11.0-names.txt"))


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords, label names (in
    matchers and in by/without/on/ignoring lists) or parts of strings and durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()
        if following.startswith("(") or match.group(0).lower() in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def test_metric_names_reads_selectors_not_functions_or_labels() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, replica) (rate(vllm:e2e_request_latency_seconds_bucket'
            '{replica=~".*", model_name="a b"}[1m]))) / on (host) group_left max(up{job="engine"}) or vector(0)')
    assert metric_names(expr) == {"vllm:e2e_request_latency_seconds_bucket", "up"}


def test_the_vllm_suffix_rule_matches_the_recorded_scrapes() -> None:
    # The names list comes from vLLM's source; the two real /metrics outputs show how its objects are served.
    served = set()
    for path in (FIXTURES / "vllm-metrics").glob("*.txt"):
        if path.name.startswith("loggers-"):
            continue
        served |= {line.split("{")[0].split()[0] for line in path.read_text().splitlines()
                   if line.startswith("vllm:")}
    served = {name for name in served if not name.endswith("_created")}
    assert len(served) >= 10 and served <= vllm_names(), served - vllm_names()


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_every_metric_a_dashboard_names_is_scraped(path: Path) -> None:
    known = scraped_names()
    dashboard = load(path)
    unknown = {f"{where}: {name}" for where, expr in queries(dashboard)
               for name in metric_names(substitute(expr, variables_of(dashboard))) if name not in known}
    assert not unknown, sorted(unknown)


def test_an_invented_metric_is_caught() -> None:
    # e.g. a per-client series nobody exports (docs/runbooks/monitoring.md: the gap token accounting fills)
    invented = 'sum by (client) (rate(enclave_gateway_client_requests_total{host=~".*"}[1m]))'
    assert metric_names(invented) - scraped_names() == {"enclave_gateway_client_requests_total"}


def test_the_gateway_dashboard_says_there_is_no_per_client_series() -> None:
    known = scraped_names()
    assert not {n for n in known if "client" in n}  # if one appears, the gateway dashboard should chart it
    description = load(DASHBOARDS_DIR / "enclave-gateway.json")["description"]
    assert "Per-client series: none" in description and "issue #17" in description


# -- the JSON holds together --------------------------------------------------------------------------------------
def test_uids_titles_and_panel_ids_are_unique() -> None:
    dashboards = [load(p) for p in DASHBOARDS]
    uids = [d["uid"] for d in dashboards]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids)
    assert len({d["title"] for d in dashboards}) == len(dashboards)
    for path, dashboard in zip(DASHBOARDS, dashboards, strict=True):
        assert path.stem == dashboard["uid"]
        ids = [p["id"] for p in panels(dashboard)]
        assert len(set(ids)) == len(ids), dashboard["uid"]
        for panel in panels(dashboard):
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert len(set(refs)) == len(refs), (dashboard["uid"], panel["title"])


def datasource_uids(node: Any) -> Iterator[str]:
    """Every datasource reference anywhere in a dashboard (panels, targets, variables)."""
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]["uid"]
        elif "datasource" in node:
            yield str(node["datasource"])
        for value in node.values():
            yield from datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_uids(item)


@pytest.fixture(scope="module")
def grafana_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("grafana")
    out = render(tmp, roles=["monitoring"], groups={"enclave_gateway": {"gw": {"ansible_host": "10.40.0.10"}}},
                 templates={name: f"monitoring/{name}.j2" for name in (
                     "grafana.ini", "grafana-datasources.yml", "grafana-dashboards.yml")},
                 extra={"enclave_private_network": "10.40.0.0/24", "monitoring_grafana": True,
                        "monitoring_grafana_admin_password": "s3cret-grafana-admin",
                        "enclave_plan": {"monitoring": {"host": "gw"}}})
    return out["gw"]


def test_every_dashboard_uses_the_provisioned_datasource(grafana_files: dict[str, str]) -> None:
    (source,) = yaml.safe_load(grafana_files["grafana-datasources.yml"])["datasources"]
    assert source["uid"] == ROLE_VARS["monitoring_grafana_datasource_uid"] == "enclave-prometheus"
    assert source["type"] == "prometheus" and source["url"] == "http://10.40.0.10:9090"
    for path in DASHBOARDS:
        uids = set(datasource_uids(load(path)))
        assert uids == {source["uid"]}, (path.name, uids)


def test_grafana_listens_on_the_private_address_and_keeps_the_password_out(grafana_files: dict[str, str]) -> None:
    ini = grafana_files["grafana.ini"]
    parsed = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    parsed.read_string(ini)  # Grafana's settings are ini: a stray line would be a parse error here too
    assert dict(parsed["server"]) == {"http_addr": "10.40.0.10", "http_port": "3000"}
    assert "http_addr = 10.40.0.10\nhttp_port = 3000\n" in ini
    assert "admin_password = $__file{/etc/grafana/enclave-admin-password}\n" in ini
    for setting in ("reporting_enabled = false", "check_for_updates = false", "external_enabled = false",
                    "news_feed_enabled = false", "plugin_admin_enabled = false"):
        assert setting in ini
    assert all("s3cret" not in text for text in grafana_files.values())
    provider = yaml.safe_load(grafana_files["grafana-dashboards.yml"])["providers"][0]
    assert provider["options"]["path"] == ROLE_VARS["monitoring_grafana_dashboards_dir"].replace(
        "{{ monitoring_grafana_etc_dir }}", ROLE_VARS["monitoring_grafana_etc_dir"])


# -- the role refuses a Grafana it cannot install, before touching the host ----------------------------------------
GW = {"enclave_gateway": {"gw": {"ansible_host": "10.40.0.10"}}}
PLAN = {"enclave_private_network": "10.40.0.0/24", "enclave_plan": {"monitoring": {"host": "gw"}}}


def test_the_role_refuses_grafana_without_an_admin_password(tmp_path: Path) -> None:
    proc = run_play(tmp_path, roles=["monitoring"], groups=GW, task_files=("monitoring/tasks/validate.yml",),
                    extra={**PLAN, "monitoring_grafana": True})
    assert proc.returncode != 0
    assert ("gw: monitoring_grafana is true but monitoring_grafana_admin_password is not set (keep it in vault: "
            'docs/runbooks/monitoring.md, "Grafana")') in " ".join(proc.stdout.split())


def test_the_role_refuses_grafana_given_as_a_string(tmp_path: Path) -> None:
    proc = run_play(tmp_path, roles=["monitoring"], groups=GW, task_files=("monitoring/tasks/validate.yml",),
                    extra={**PLAN, "monitoring_grafana": "yes", "monitoring_grafana_admin_password": "x" * 20})
    assert proc.returncode != 0 and "monitoring_grafana must be true or false (got 'yes')" in proc.stdout


def test_the_role_takes_grafana_with_a_password(tmp_path: Path) -> None:
    proc = run_play(tmp_path, roles=["monitoring"], groups=GW, task_files=("monitoring/tasks/validate.yml",),
                    extra={**PLAN, "monitoring_grafana": True, "monitoring_grafana_admin_password": "x" * 20})
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert re.search(r"TASK \[Check Grafana has an admin password\] \*+\nok: \[gw\]", proc.stdout), proc.stdout


def test_a_package_no_apt_source_offers_is_named_with_the_setting(tmp_path: Path) -> None:
    # This machine's real apt-cache: a name no source knows, as Grafana is on a site whose mirror lacks it.
    proc = run_play(tmp_path, roles=["monitoring"], groups=GW, task_files=("monitoring/tasks/grafana_source.yml",),
                    extra={**PLAN, "monitoring_grafana_packages": ["enclave-no-such-grafana"]})
    said = " ".join(proc.stdout.split())
    assert proc.returncode != 0
    assert ("gw: monitoring_grafana is true but no apt source configured on this host offers the package "
            "'enclave-no-such-grafana' (Grafana is not in Debian)") in said


def test_a_package_an_apt_source_offers_passes_the_check(tmp_path: Path) -> None:
    # coreutils: installed and offered wherever these tests run (Debian), so apt-cache names a candidate.
    proc = run_play(tmp_path, roles=["monitoring"], groups=GW, task_files=("monitoring/tasks/grafana_source.yml",),
                    extra={**PLAN, "monitoring_grafana_packages": ["coreutils"]})
    assert proc.returncode == 0, proc.stdout[-2000:]
