"""Each replica's recent load from Prometheus, for `enclave status`: tokens/s and requests over the last minutes.

The monitoring role runs Prometheus on the plan's monitoring host, on its private address (the firewall admits the
controller), and scrapes every replica head's /metrics as job `engine`, labelled host and replica. Two range
queries of its HTTP API (standard library only) give, per replica head, the rate of generated tokens and the
requests in the batch plus queued, on a grid of steps ending now. Every request has a timeout, so a silent
monitoring host delays status by seconds, never hangs it; anything that goes wrong becomes one reason in
HistoryUnavailable, which status shows in place of the history while its direct reads go on.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enclave.errors import EnclaveError
from enclave.roles import role_data

DEFAULT_MINUTES = 10
MAX_MINUTES = 24 * 60
MIN_STEP_S = 30
# Points per series at most: the grid gets coarser for longer windows, so a sparkline stays a few characters wide.
MAX_POINTS = 20
TIMEOUT_S = 3.0
ENGINE_JOB = "engine"  # the scrape job of templates/monitoring/prometheus.yml.j2


class HistoryUnavailable(EnclaveError):
    """Prometheus gave no history; the message says why (not deployed, unreachable, the query failed)."""


def step_for(minutes: int) -> int:
    """Seconds between points: 30 s, or coarser so that `minutes` fit in MAX_POINTS steps."""
    return max(MIN_STEP_S, math.ceil(minutes * 60 / MAX_POINTS))


def queries(step_s: int, rate_window_s: int | None = None) -> dict[str, str]:
    """PromQL per series name, summed per replica head (vLLM exports one series per engine core). The rate's
    window spans two steps (one at the least), so each point rests on several scrapes at the default 15 s."""
    window = rate_window_s or 2 * step_s
    job = f'{{job="{ENGINE_JOB}"}}'
    return {"tokens_per_s": f"sum by (host, replica) (rate(vllm:generation_tokens_total{job}[{window}s]))",
            "requests": f"sum by (host, replica) (vllm:num_requests_running{job})"
                        f" + sum by (host, replica) (vllm:num_requests_waiting{job})"}


def prometheus_url(plan: Mapping[str, Any], hostvars: Mapping[str, Mapping[str, Any]]) -> str:
    """Where the controller reaches Prometheus: the plan's monitoring host at its inventory address (which must be
    its private one: Prometheus listens nowhere else), on `monitoring_prometheus_port` (the inventory's, else the
    monitoring role's default)."""
    host = (plan.get("monitoring") or {}).get("host")
    if not host:
        raise HistoryUnavailable("monitoring is not deployed (the plan names no monitoring host)")
    own: Mapping[str, Any] = hostvars.get(host) or {}
    address = str(own.get("ansible_host") or host)
    port_value = own.get("monitoring_prometheus_port", role_data("monitoring")["monitoring_prometheus_port"])
    try:
        port = int(port_value)
    except (TypeError, ValueError):
        raise HistoryUnavailable(f"{host}: monitoring_prometheus_port {port_value!r} is not a port") from None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"http://{address}:{port}"  # a DNS name: the resolver decides
    network = own.get("enclave_private_network")
    if network:
        try:
            inside = ip in ipaddress.ip_network(str(network), strict=False)
        except ValueError:
            inside = True  # inventory validation names a malformed network; not this read's business
        if not inside:
            raise HistoryUnavailable(f"{host}: ansible_host {address} is outside enclave_private_network {network},"
                                     " and Prometheus listens on the private address only")
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"


@dataclass(frozen=True)
class Trend:
    """One series on the step grid: (Unix time, value) where Prometheus had a value; `now` is the last grid
    point's value, None when the series has none there (the engine is down or not scraped)."""

    samples: list[tuple[float, float]]
    now: float | None

    def summary(self) -> tuple[float, float, float] | None:
        """(min, mean, max) over the samples; None without samples."""
        values = [v for _, v in self.samples]
        if not values:
            return None
        return min(values), sum(values) / len(values), max(values)

    def as_dict(self) -> dict[str, Any]:
        low, mean, high = self.summary() or (None, None, None)
        return {"now": self.now, "min": low, "avg": mean, "max": high,
                "samples": [[t, v] for t, v in self.samples]}


@dataclass(frozen=True)
class ReplicaHistory:
    host: str
    replica: str
    tokens_per_s: Trend
    requests: Trend


@dataclass
class History:
    source: str  # Prometheus's base URL
    minutes: int
    step_s: int
    start: float
    end: float
    replicas: dict[str, ReplicaHistory] = field(default_factory=dict)  # by head host

    def as_dict(self) -> dict[str, Any]:
        """The `history` object of `enclave status --json` (docs/runbooks/verify.md)."""
        return {"source": self.source, "minutes": self.minutes, "step_s": self.step_s, "start": self.start,
                "end": self.end,
                "replicas": {host: {"replica": r.replica, "tokens_per_s": r.tokens_per_s.as_dict(),
                                    "requests": r.requests.as_dict()} for host, r in sorted(self.replicas.items())}}


def _get(base: str, path: str, params: dict[str, str], timeout: float) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http to the plan's host
            body = response.read()
    except urllib.error.HTTPError as exc:
        # Prometheus answers a bad query with 400/422 and a JSON error; anything else on that port is not it
        detail = exc.read()[:300].decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(detail).get("error") or detail)
        raise HistoryUnavailable(f"Prometheus at {base}: query failed: HTTP {exc.code}: {detail.strip()}") from None
    except urllib.error.URLError as exc:
        raise HistoryUnavailable(f"Prometheus unreachable at {base}: {exc.reason}") from None
    except OSError as exc:  # a timeout while reading the answer, a reset connection
        raise HistoryUnavailable(f"Prometheus unreachable at {base}: {exc or 'timed out'}") from None
    except http.client.HTTPException as exc:  # something that does not speak HTTP listens there
        raise HistoryUnavailable(f"Prometheus at {base}: query failed: not an HTTP answer "
                                 f"({type(exc).__name__}: {exc})") from None
    except ValueError as exc:  # a URL urllib refuses (an odd ansible_host)
        raise HistoryUnavailable(f"Prometheus at {base}: bad URL: {exc}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise HistoryUnavailable(f"Prometheus at {base}: query failed: the answer is not JSON") from None
    if not isinstance(answer, dict) or answer.get("status") != "success":
        why = answer.get("error") if isinstance(answer, dict) else None
        raise HistoryUnavailable(f"Prometheus at {base}: query failed: {why or 'no success status'}")
    return answer.get("data")


def _series(data: Any, base: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(host, replica) -> samples, from a query_range answer's matrix; NaN points dropped."""
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise HistoryUnavailable(f"Prometheus at {base}: query failed: the answer is not a matrix")
    found = {}
    try:
        for item in data["result"]:
            labels = item.get("metric") or {}
            samples = []
            for t, v in item.get("values") or []:
                value = float(v)
                if not math.isnan(value):
                    samples.append((float(t), value))
            found[(str(labels.get("host", "?")), str(labels.get("replica", "?")))] = samples
    except (AttributeError, TypeError, ValueError):
        raise HistoryUnavailable(f"Prometheus at {base}: query failed: a malformed series in the answer") from None
    return found


def _trend(samples: list[tuple[float, float]], last_point: float) -> Trend:
    now = samples[-1][1] if samples and samples[-1][0] >= last_point else None
    return Trend(samples, now)


def read_history(base: str, *, minutes: int = DEFAULT_MINUTES, end: float, step_s: int | None = None,
                 rate_window_s: int | None = None, timeout: float = TIMEOUT_S) -> History:
    """Per replica head, tokens/s and requests from `end - minutes` to `end` (Unix seconds). Raises
    HistoryUnavailable with the reason when Prometheus cannot be reached or a query fails."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be 1..{MAX_MINUTES}, got {minutes}")
    step = step_s or step_for(minutes)
    end = float(math.floor(end))
    start = end - minutes * 60
    last_point = start + ((end - start) // step) * step
    read = {}
    for name, promql in queries(step, rate_window_s).items():
        params = {"query": promql, "start": f"{start:.0f}", "end": f"{end:.0f}", "step": f"{step}s"}
        read[name] = _series(_get(base, "/api/v1/query_range", params, timeout), base)
    history = History(base, minutes, step, start, end)
    for key in sorted(set(read["tokens_per_s"]) | set(read["requests"])):
        host, replica = key
        history.replicas[host] = ReplicaHistory(host, replica, _trend(read["tokens_per_s"].get(key, []), last_point),
                                                _trend(read["requests"].get(key, []), last_point))
    return history


def history_or_reason(plan: Mapping[str, Any], hostvars: Mapping[str, Mapping[str, Any]], *, minutes: int,
                      end: float) -> tuple[History | None, str]:
    """(history, "") from the plan's Prometheus, or (None, why there is none)."""
    try:
        return read_history(prometheus_url(plan, hostvars), minutes=minutes, end=end), ""
    except HistoryUnavailable as exc:
        return None, str(exc)
