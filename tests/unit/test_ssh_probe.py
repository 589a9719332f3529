"""Whether a host answers SSH, against real sockets on loopback: a slow banner (a busy host) is waited for over a
few probes, a refused connection or a server that is not SSH is an answer at once."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from enclave.ssh_probe import answers_ssh, probe_ssh


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[float]]]:
    """A loopback listener; the test sets, per connection in order, how long it waits before its banner."""
    listener = socket.create_server(("127.0.0.1", 0))
    delays: list[float] = []
    stop = threading.Event()

    def answer(conn: socket.socket, delay: float) -> None:
        with conn:
            if not stop.wait(delay):
                with contextlib.suppress(OSError):  # the probe may have given up first
                    conn.sendall(b"SSH-2.0-test\r\n")

    def serve() -> None:
        listener.settimeout(0.1)
        served = 0
        while not stop.is_set() and served < 10:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            delay = delays[served] if served < len(delays) else 0.0
            served += 1
            threading.Thread(target=answer, args=(conn, delay), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener, delays
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_banner_late_on_the_first_probe_is_waited_for(server: tuple[socket.socket, list[float]]) -> None:
    listener, delays = server
    port = listener.getsockname()[1]
    delays[:] = [1.5, 1.5, 1.5, 0.0]
    assert probe_ssh("127.0.0.1", port, timeout=0.3) == "timed out"  # one short probe takes the host for dead
    assert answers_ssh("127.0.0.1", port, tries=3, timeout=0.3)  # two more slow answers, then one in time


def test_a_refused_connection_is_final() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert not answers_ssh("127.0.0.1", port, tries=3, timeout=0.3)


def test_a_server_that_never_answers_is_given_up_on(server: tuple[socket.socket, list[float]]) -> None:
    listener, delays = server
    delays[:] = [3.0, 3.0, 3.0]
    assert not answers_ssh("127.0.0.1", listener.getsockname()[1], tries=2, timeout=0.2)
