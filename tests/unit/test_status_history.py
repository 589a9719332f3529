"""enclave.status.history against a real Prometheus (Debian's binary) on loopback: it scrapes two tiny vLLM-shaped
/metrics servers run here (counters advancing with the clock), and the reader's tokens/s and requests per replica
come back from its HTTP API. Also: where the URL comes from, and the reasons when there is no history (a closed
port, a server that never answers, something that is not Prometheus)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from enclave.status import history
from enclave.status.history import HistoryUnavailable, prometheus_url, read_history
from tests.unit.local_prometheus import (
    START_WAIT_S,
    Engine,
    running_engines,
    running_prometheus,
    wait_for,
)
from tests.unit.standin_http import free_port


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, Engine]]:
    with running_engines() as found:
        yield found


@pytest.fixture(scope="module")
def prometheus(engines: dict[str, Engine], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prometheus(engines, tmp_path_factory.mktemp("prometheus")) as base:
        yield base



def test_reads_each_replicas_tokens_per_s_and_requests_from_prometheus(prometheus: str) -> None:
    # 1 s scrapes and 2 s steps, so a one-minute window fills in seconds (status itself uses 30 s steps).
    def read() -> history.History:
        return read_history(prometheus, minutes=1, end=time.time(), step_s=2, rate_window_s=5, timeout=5)

    def filled() -> bool:
        found = read()
        return all(r.tokens_per_s.now is not None and len(r.tokens_per_s.samples) >= 3
                   for r in found.replicas.values()) and len(found.replicas) == 2

    assert wait_for(filled, START_WAIT_S), f"no rate for both replicas within {START_WAIT_S} s: {read()}"
    found = read()
    assert found.source == prometheus and found.minutes == 1 and found.step_s == 2
    assert found.end - found.start == 60
    node1, node2 = found.replicas["node1"], found.replicas["node2"]
    assert (node1.replica, node2.replica) == ("replica-1", "replica-2")
    # summed over both engine cores, the `_created` gauges ignored
    assert node1.tokens_per_s.now == pytest.approx(100.0, rel=0.2)
    assert node2.tokens_per_s.now == pytest.approx(40.0, rel=0.2)
    assert (node1.requests.now, node2.requests.now) == (5.0, 1.0)
    low, mean, high = node1.requests.summary() or (0, 0, 0)
    assert low == mean == high == 5.0
    # every sample sits on the step grid inside the window
    times = [t for t, _ in node1.requests.samples]
    assert times == sorted(times) and all(found.start <= t <= found.end and (t - found.start) % 2 == 0
                                          for t in times)
    data = found.as_dict()
    assert data["replicas"]["node1"]["requests"]["now"] == 5.0
    assert data["replicas"]["node2"]["tokens_per_s"]["samples"]


def test_a_closed_port_is_unreachable_with_the_url_named() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(HistoryUnavailable, match=rf"^Prometheus unreachable at {base}: .*refused"):
        read_history(base, minutes=10, end=time.time())


def test_a_server_that_never_answers_times_out_within_the_bound() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(HistoryUnavailable, match=rf"^Prometheus unreachable at {base}: .*timed out"):
            read_history(base, minutes=10, end=time.time(), timeout=0.5)
        assert time.monotonic() - started < 5


def test_a_server_that_does_not_speak_http_is_a_failed_query() -> None:
    with socket.socket() as other:  # answers every connection with an SSH banner, as sshd would
        other.bind(("127.0.0.1", 0))
        other.listen(4)

        def banner() -> None:
            for _ in range(2):
                try:
                    conn, _ = other.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")

        threading.Thread(target=banner, daemon=True).start()
        base = f"http://127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(HistoryUnavailable, match=rf"^Prometheus at {base}: query failed: not an HTTP answer"):
            read_history(base, minutes=10, end=time.time(), timeout=2)


def test_something_else_on_the_port_is_a_failed_query(engines: dict[str, Engine]) -> None:
    base = f"http://127.0.0.1:{engines['node1'].port}"
    with pytest.raises(HistoryUnavailable, match=rf"^Prometheus at {base}: query failed: HTTP 404"):
        read_history(base, minutes=10, end=time.time())


def test_a_query_prometheus_refuses_is_a_failed_query_with_its_words(prometheus: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "queries", lambda step, window=None: {"tokens_per_s": "sum(", "requests": "up"})
    with pytest.raises(HistoryUnavailable, match=r"query failed: HTTP 400: .*parse error"):
        read_history(prometheus, minutes=1, end=time.time())


PLAN = {"monitoring": {"host": "gw01"}}


def test_the_url_is_the_monitoring_hosts_private_address_and_the_roles_port() -> None:
    hostvars = {"gw01": {"ansible_host": "10.40.0.10", "enclave_private_network": "10.40.0.0/24"}}
    assert prometheus_url(PLAN, hostvars) == "http://10.40.0.10:9090"  # monitoring_prometheus_port's default
    hostvars["gw01"]["monitoring_prometheus_port"] = 19090
    assert prometheus_url(PLAN, hostvars) == "http://10.40.0.10:19090"
    assert prometheus_url(PLAN, {"gw01": {"ansible_host": "fd00::10"}}) == "http://[fd00::10]:9090"
    assert prometheus_url(PLAN, {"gw01": {"ansible_host": "gw01.internal"}}) == "http://gw01.internal:9090"


@pytest.mark.parametrize(("plan", "hostvars", "reason"), [
    ({}, {}, r"^monitoring is not deployed \(the plan names no monitoring host\)$"),
    (PLAN, {"gw01": {"ansible_host": "192.0.2.7", "enclave_private_network": "10.40.0.0/24"}},
     r"^gw01: ansible_host 192.0.2.7 is outside enclave_private_network 10.40.0.0/24"),
    (PLAN, {"gw01": {"ansible_host": "10.40.0.10", "monitoring_prometheus_port": "nine"}},
     r"^gw01: monitoring_prometheus_port 'nine' is not a port$"),
])
def test_no_url_says_why(plan: dict, hostvars: dict, reason: str) -> None:
    with pytest.raises(HistoryUnavailable, match=reason):
        prometheus_url(plan, hostvars)


def test_the_step_grows_so_a_window_keeps_to_twenty_points() -> None:
    assert history.step_for(10) == 30 and history.step_for(1) == 30
    assert history.step_for(60) == 180 and history.step_for(history.MAX_MINUTES) == 4320
    assert "[60s]" in history.queries(30)["tokens_per_s"]
