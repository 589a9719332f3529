"""A rotated key's grace period and a revoked key, served by a real nginx on loopback from what the gateway role
renders (templates/gateway/api-keys.map.j2 with gateway_retired_api_keys, as `enclave keys rotate` writes them):
during the grace the old and the new key both work, after it nginx refuses the old one by itself (no rerun, no
reload), and a revoke's graceful reload refuses the key at once while a stream in flight finishes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from enclave.gateway import keys
from tests.host_tools import require_tool
from tests.unit.standin_http import free_port
from tests.unit.test_gateway_nginx import (
    Gateway,
    events,
    rendered,
    serving,
    stream,
)

NEW, OLD = "nw-" + "N" * 40, "ol-" + "O" * 40
STEADY, LONG_GONE = "st-" + "s" * 40, "lg-" + "g" * 40
DOOMED, DOOMED_OLD = "dm-" + "d" * 40, "do-" + "D" * 40
KEYS = {"rotated": NEW, "steady": STEADY, "doomed": DOOMED}
# seconds from before rendering: rendering takes ~10 s on an idle machine, several times that when make test runs
# this tier beside the integration tier; the test then waits out the rest
GRACE = 60


@dataclass
class Served:
    gateway: Gateway
    tmp: Path
    engine_port: int
    https_port: int
    expires: int
    retired: list[dict[str, Any]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_tool("nginx")
    tmp = tmp_path_factory.mktemp("keys")
    engine_port, https_port = free_port(), free_port()
    expires = int(time.time()) + GRACE
    retired: list[dict[str, object]] = [{"name": "rotated", "key": OLD, "expires": expires},
                                        {"name": "steady", "key": LONG_GONE, "expires": int(time.time()) - 60},
                                        {"name": "doomed", "key": DOOMED_OLD, "expires": expires + 3600}]
    files = rendered(tmp, engine_port=engine_port, https_port=https_port, drained=[], make_ca=True, keys=KEYS,
                     settings={"gateway_retired_api_keys": retired})["gw"]
    with serving(tmp, files, engine_port, https_port) as gw:
        yield Served(gw, tmp, engine_port, https_port, expires, retired)


def _status(gateway: Gateway, key: str) -> int:
    return gateway.request("GET", "/v1/models", key)[0]


def test_the_old_key_works_during_the_grace_and_not_after(served: Served) -> None:
    gateway = served.gateway
    assert time.time() < served.expires - 3, "rendering took longer than the grace period this test allows"
    assert _status(gateway, OLD) == 200
    assert _status(gateway, NEW) == 200
    assert _status(gateway, LONG_GONE) == 401  # a retired key whose time is over never worked here
    # the old key is the same client: its requests are logged and limited under the client's name
    deadline = time.monotonic() + 5
    while gateway.access_log().count('"client":"rotated"') < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.access_log().count('"client":"rotated"') == 2
    time.sleep(max(0.0, served.expires - time.time()) + 1.5)  # nothing is rerun or reloaded meanwhile
    status, headers, body = gateway.request("GET", "/v1/models", OLD)
    assert status == 401, body
    assert headers.get("www-authenticate") == 'Bearer realm="enclave"'
    assert _status(gateway, NEW) == 200
    assert _status(gateway, "ol-" + "o" * 40) == 401  # keys still match exactly (case)


def test_a_revoke_reloads_gracefully_refusing_the_key_while_a_stream_finishes(served: Served) -> None:
    gateway = served.gateway
    for engine in gateway.engines.values():
        engine.release.clear()
    response, conn = stream(gateway, DOOMED_OLD)  # the client's old key, still in its grace period
    try:
        assert response.status == 200
        assert events(response, 1)[0]["part"] == "first"  # held by the engine: in flight across the reload
        assert _status(gateway, DOOMED) == 200
        # what `enclave keys revoke doomed` leaves in the inventory, rendered by the role and reloaded
        ring = keys.KeyRing(dict(KEYS), [dict(r) for r in served.retired])
        keys.revoke(ring, "doomed", datetime.now(UTC))
        files = rendered(served.tmp / "revoked", engine_port=served.engine_port, https_port=served.https_port,
                         drained=[], keys=ring.keys, settings={"gateway_retired_api_keys": ring.retired})["gw"]
        assert DOOMED not in files["api-keys.map"] and DOOMED_OLD not in files["api-keys.map"]
        (gateway.prefix / "enclave" / "api-keys.map").write_text(files["api-keys.map"])
        reloaded = gateway.nginx("-s", "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        deadline = time.monotonic() + 10
        while _status(gateway, DOOMED) != 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _status(gateway, DOOMED) == 401 and _status(gateway, DOOMED_OLD) == 401
        assert _status(gateway, STEADY) == 200 and _status(gateway, NEW) == 200
    finally:
        for engine in gateway.engines.values():
            engine.release.set()
    assert events(response, 1)[0]["part"] == "last"  # the stream in flight was not dropped
    conn.close()
