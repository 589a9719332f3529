"""A real Prometheus (Debian's binary) on loopback scraping tiny vLLM-shaped /metrics servers run in the test, for
the status history's tests (test_status_history.py, test_cli_status.py). Started on a free port with its own
storage, stopped by its PID; every wait is bounded."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from enclave.status.history import HistoryUnavailable
from tests.host_tools import require_tool
from tests.unit.standin_http import free_port

START_WAIT_S = 60  # Prometheus's start and first scrapes on a loaded 2-core machine



class Engine:
    """/metrics as vLLM's v1 engine shapes it (two engine cores, `_created` gauges beside the counters), with
    generated tokens growing at `tokens_per_s` (split over the cores) and fixed running and waiting requests."""

    def __init__(self, tokens_per_s: float, running: int, waiting: int) -> None:
        started = time.time()

        def page() -> str:
            half = tokens_per_s * (time.time() - started) / 2
            lines = ["# TYPE vllm:num_requests_running gauge", "# TYPE vllm:num_requests_waiting gauge",
                     "# TYPE vllm:generation_tokens counter"]
            for core, (run, wait) in enumerate([(running, waiting), (0, 0)]):
                labels = f'engine="{core}",model_name="tiny-chat"'
                lines += [f"vllm:num_requests_running{{{labels}}} {run}",
                          f"vllm:num_requests_waiting{{{labels}}} {wait}",
                          f"vllm:generation_tokens_total{{{labels}}} {half}",
                          f"vllm:generation_tokens_created{{{labels}}} {started}"]
            return "\n".join(lines) + "\n"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page().encode() if self.path == "/metrics" else b"not here\n"
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (OSError, HistoryUnavailable):
            pass
        time.sleep(0.5)
    return False


@contextmanager
def running_engines(first: str = "node1", second: str = "node2") -> Iterator[dict[str, Engine]]:
    """Two replica heads: the first generating 100 tokens/s with 3 running and 2 waiting, the second 40 tokens/s,
    1 running and none waiting."""
    found = {first: Engine(100.0, 3, 2), second: Engine(40.0, 1, 0)}
    try:
        yield found
    finally:
        for engine in found.values():
            engine.close()


@contextmanager
def running_prometheus(engines: dict[str, Engine], tmp: Path) -> Iterator[str]:
    """A real Prometheus on a free loopback port scraping the engines every second as job `engine`, labelled as
    templates/monitoring/prometheus.yml.j2 labels them (host, replica-N); its base URL."""
    targets = "\n".join(f'      - targets: ["127.0.0.1:{e.port}"]\n'
                        f"        labels: {{host: {host}, replica: replica-{i}}}"
                        for i, (host, e) in enumerate(sorted(engines.items()), start=1))
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: engine\n    static_configs:\n{targets}\n")
    with prometheus_server(tmp) as base:
        yield base


@contextmanager
def prometheus_server(tmp: Path) -> Iterator[str]:
    """A real Prometheus on a free loopback port with `tmp`/prometheus.yml and its data in `tmp`/data (which may
    hold backfilled blocks already); its base URL. Stopped by its own process handle."""
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen([require_tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:  # noqa: S310 - loopback
                return bool(response.status == 200)

        assert wait_for(ready, START_WAIT_S), "Prometheus never got ready: " + Path(log.name).read_text()[-2000:]
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
