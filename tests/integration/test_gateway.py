"""The gateway on the session's deployed sandbox, as a client sees it: TLS from the kit's CA, keys, the
allow-list, streaming, failover when an engine stops, and drain/undrain while a stream is in flight."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.checks.runner import run_checks
from enclave.gateway import cert, keys
from enclave.gateway.client import GatewayTarget
from enclave.sandbox.client_keys import LIMITS
from tests.integration.conftest import enclave, mark_dirty, ssh
from tests.integration.nethelpers import (
    Gateway,
    completion_body,
    engine_phase_in_site,
    engines_serve,
    host_address,
    send_completions,
    served_model,
    tcp_probe,
    upstreams,
    wait_until,
)
from tests.required import skip_or_fail

NODES = ("node1", "node2")


@pytest.fixture(scope="module")
def gateway(deployed: subprocess.CompletedProcess[str], inventory: Path) -> Gateway:
    return Gateway.of(inventory)


@pytest.fixture(scope="module")
def model(gateway: Gateway) -> str:
    if not engines_serve(gateway):
        pytest.skip("site.yml has no engine phase yet and no engine answers: nothing to test behind the gateway")
    return served_model(gateway)


def engine_port(inventory: Path) -> int:
    plan = inventory.parent / "group_vars" / "all" / "enclave_plan.yml"
    data = yaml.safe_load(plan.read_text()) if plan.is_file() else None
    return int(((data or {}).get("enclave_plan") or {}).get("port", 8000))


def engine_healthy(inventory: Path, node: str) -> bool:
    """The engine answers /health, asked from the gateway (the only host its port is open to)."""
    url = f"http://{host_address(inventory, node)}:{engine_port(inventory)}/health"
    probe = f"python3 -c 'import urllib.request as u; u.urlopen(\"{url}\", timeout=5)'"
    return ssh(inventory, "gateway", probe, check=False).returncode == 0


# -- TLS, keys, allow-list -----------------------------------------------------------------------------
def test_tls_verifies_with_the_kit_ca_only(gateway: Gateway) -> None:
    status, _, _ = gateway.request("GET", "/health", key=None)
    assert status in (200, 502, 503)  # the TLS handshake and host check passed; the answer is the engines'
    # The system's trust store alone does not know the kit's CA: the certificate is the CA's, not a public one.
    conn = http.client.HTTPSConnection(gateway.address, gateway.port, context=ssl.create_default_context(),
                                       timeout=30)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/health")
    conn.close()


def test_missing_or_wrong_key_is_401(gateway: Gateway) -> None:
    for key in (None, "enc-" + "x" * 40, gateway.key[:-1]):
        status, headers, body = gateway.request("POST", "/v1/completions", {"prompt": "hi"}, key=key)
        assert status == 401, (key is None, status, body[:200])
        assert headers.get("www-authenticate", "").startswith("Bearer")
        assert headers.get("x-request-id")


@pytest.mark.parametrize("path", ["/v1/tokenize", "/metrics", "/docs", "/v1/load_lora_adapter", "/v1/models/x"])
def test_paths_off_the_allow_list_are_404_even_with_a_key(gateway: Gateway, path: str) -> None:
    assert gateway.request("POST", path, {})[0] == 404
    assert gateway.request("GET", path)[0] == 404


def test_keys_never_reach_the_gateway_logs(gateway: Gateway, inventory: Path) -> None:
    gateway.request("POST", "/v1/completions", {"prompt": "hi"}, key=None)
    gateway.request("GET", "/v1/models")
    logs = ssh(inventory, "gateway", "cat /var/log/nginx/*.log").stdout
    assert logs, "the gateway logged nothing"
    for name, key in gateway.keys.items():
        assert key not in logs, f"the key of {name} is in the gateway's logs"
    assert '"client":"sandbox-tests"' in logs, "the access log should name the client by its key's name"


# -- with engines ---------------------------------------------------------------------------------------
def test_valid_key_200(gateway: Gateway, model: str) -> None:
    status, headers, body = gateway.request("POST", "/v1/completions", completion_body(model))
    assert status == 200, body[:300]
    assert json.loads(body)["choices"][0]["text"] is not None
    assert headers.get("x-request-id")
    status, _, body = gateway.request("POST", "/v1/chat/completions",
                                      {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                                       "max_tokens": 4})
    assert status == 200, body[:300]


def stream_events(response: object) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream, as they arrive."""
    while True:
        line = response.readline()  # type: ignore[attr-defined]
        if not line:
            return
        text = line.decode().strip()
        if text.startswith("data:"):
            yield text.removeprefix("data:").strip()


def open_stream(gateway: Gateway, model: str, request_id: str, tokens: int) -> tuple[object, object]:
    conn = gateway.connection()
    body = completion_body(model, stream=True, max_tokens=tokens) | {"ignore_eos": True,
                                                                     "stream_options": {"include_usage": True}}
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json",
                          "X-Request-Id": request_id})
    response = conn.getresponse()
    assert response.status == 200, response.read()[:300]
    assert response.getheader("x-request-id") == request_id
    return conn, response


def generated_tokens(events: list[str]) -> int:
    """Completion tokens of a finished stream, from its closing usage event (the engine may put several tokens
    in one event, so events are not counted)."""
    assert events and events[-1] == "[DONE]", "the stream did not end with [DONE]"
    usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    assert usage, "no usage event in the stream"
    return int(usage[-1]["completion_tokens"])


def test_streaming_arrives_as_events(gateway: Gateway, model: str) -> None:
    conn, response = open_stream(gateway, model, f"stream-{uuid.uuid4().hex}", 16)
    events = list(stream_events(response))
    conn.close()  # type: ignore[attr-defined]
    text_events = [e for e in events[:-1] if json.loads(e)["choices"]]
    assert len(text_events) > 1, "the completion arrived in one piece, not streamed"
    assert generated_tokens(events) == 16


def test_engine_port_refuses_all_but_the_gateway(gateway: Gateway, model: str, inventory: Path) -> None:
    port = engine_port(inventory)
    node1 = host_address(inventory, "node1")
    assert tcp_probe(inventory, "gateway", node1, port) == "open"
    assert tcp_probe(inventory, "node2", node1, port) == "filtered"
    assert tcp_probe(inventory, "node1", host_address(inventory, "node2"), port) == "filtered"


@pytest.fixture
def node1_engine_stopped(inventory: Path) -> Iterator[None]:
    ssh(inventory, "node1", "systemctl stop enclave-engine.service")
    yield
    ssh(inventory, "node1", "systemctl start enclave-engine.service")
    assert wait_until(lambda: engine_healthy(inventory, "node1"), 900, step=5), "node1's engine did not come back"


def test_requests_succeed_with_one_engine_stopped(gateway: Gateway, model: str, inventory: Path,
                                                  node1_engine_stopped: None) -> None:
    ids = [f"failover-{uuid.uuid4().hex}" for _ in range(8)]
    send_completions(gateway, model, ids)
    node2 = f"{host_address(inventory, 'node2')}:{engine_port(inventory)}"
    served_by = upstreams(inventory, ids)
    assert len(served_by) == len(ids)
    # nginx may try the stopped replica first and move on ("addr1, addr2"); the answer always came from node2.
    assert all(u.split(", ")[-1] == node2 for u in served_by.values()), served_by


@pytest.fixture
def undrained(inventory: Path) -> Iterator[None]:
    yield
    for node in NODES:
        enclave("undrain", node, "-i", str(inventory), check=True)


def test_drain_and_undrain_while_a_request_streams(gateway: Gateway, model: str, inventory: Path,
                                                   undrained: None) -> None:
    port = engine_port(inventory)
    address = {n: f"{host_address(inventory, n)}:{port}" for n in NODES}
    # node2 out: the stream can only go to node1, the replica drained while it streams.
    enclave("drain", "node2", "-i", str(inventory), check=True)
    stream_id = f"drain-{uuid.uuid4().hex}"
    conn, response = open_stream(gateway, model, stream_id, 200)
    events = stream_events(response)
    first = next(events)
    assert first != "[DONE]"

    enclave("undrain", "node2", "-i", str(inventory), check=True)
    drained = enclave("drain", "node1", "-i", str(inventory), check=True)
    assert "node1 drained" in drained.stdout
    after = [f"after-drain-{uuid.uuid4().hex}" for _ in range(6)]
    for request_id in after:
        conn2 = gateway.connection()
        conn2.request("POST", "/v1/completions", body=json.dumps(completion_body(model)),
                      headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json",
                               "X-Request-Id": request_id})
        reply = conn2.getresponse()
        assert reply.status == 200
        reply.read()
        conn2.close()

    rest = list(events)
    conn.close()  # type: ignore[attr-defined]
    assert rest and rest[-1] == "[DONE]", "the stream in flight on the drained replica was cut"
    assert generated_tokens([first, *rest]) == 200
    enclave("undrain", "node1", "-i", str(inventory), check=True)

    served_by = upstreams(inventory, [stream_id, *after])
    assert served_by[stream_id] == address["node1"]
    assert {served_by[i] for i in after} == {address["node2"]}, "a drained replica got new requests"
    back = [f"after-undrain-{uuid.uuid4().hex}" for _ in range(8)]
    for request_id in back:
        conn3 = gateway.connection()
        conn3.request("GET", "/v1/models", headers={"Authorization": f"Bearer {gateway.key}",
                                                    "X-Request-Id": request_id})
        conn3.getresponse().read()
        conn3.close()
    assert set(upstreams(inventory, back).values()) == set(address.values()), "undrain did not restore node1"


# -- per-client limits, seen with the official openai SDK ----------------------------------------------------
def openai_client(gateway: Gateway, client: str) -> Any:
    try:
        import openai
    except ImportError:
        skip_or_fail("needs the openai package (the test extra: pip install -e '.[test]')")
    # No retries: the SDK would otherwise wait out Retry-After itself and hide the 429.
    return openai.OpenAI(base_url=f"https://{gateway.address}:{gateway.port}/v1", api_key=gateway.keys[client],
                         max_retries=0, timeout=120,
                         http_client=openai.DefaultHttpxClient(verify=gateway.context()))


def test_a_client_over_its_rate_gets_429_while_another_keeps_succeeding(gateway: Gateway, model: str) -> None:
    """The sandbox's inventory gives sandbox-limited 1 r/s with a burst of 2 (enclave.sandbox.client_keys.LIMITS)."""
    import openai

    limited, other = openai_client(gateway, "sandbox-limited"), openai_client(gateway, "sandbox-tests")
    served: list[str] = []

    def other_client() -> None:
        for _ in range(3):
            reply = other.completions.create(model=model, prompt="Hello", max_tokens=4, temperature=0)
            served.append(reply.choices[0].text)
            served.extend(m.id for m in other.models.list())

    thread = threading.Thread(target=other_client)
    thread.start()
    refused: list[Any] = []
    for _ in range(10):  # far faster than 1 r/s: /v1/models needs no engine time
        try:
            limited.models.list()
        except openai.RateLimitError as exc:
            refused.append(exc)
    thread.join(300)
    assert not thread.is_alive()
    assert len(served) == 6, "the other client's requests did not all succeed while one client flooded"
    assert 5 <= len(refused) <= 8, f"{10 - len(refused)} of 10 flooding requests passed a 1 r/s burst-2 limit"
    first = refused[0]
    assert first.status_code == 429 and first.response.headers["retry-after"] == "1"
    assert first.body["type"] == "rate_limit_error"  # the SDK hands over the body's "error" object
    # The flood kept the bucket full to its last request: wait out the burst (3 s at 1 r/s), then it is served.
    time.sleep(3)
    assert limited.completions.create(model=model, prompt="Hello", max_tokens=4).choices, \
        "the limited client is served again once its rate allows"


# -- the shipped checks (`enclave verify`) fail on each fault they exist for --------------------------------
CONF = "/etc/nginx/enclave"
# fault: (break it on the gateway, the checks that must fail); every fault is undone from a backup.
GATEWAY_FAULTS = {
    "certificate not from the kit's CA": (
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=impostor"
        f" -keyout {CONF}/tls/server.key -out {CONF}/tls/server.crt 2>/dev/null",
        {"tls_verifies", "no_key_is_401", "off_list_paths_are_404", "key_is_200"}),
    "requests without a key pass": (
        "sed -i 's/default \"\";/default \"anyone\";/' /etc/nginx/nginx.conf", {"no_key_is_401"}),
    "a path off the allow-list reaches the engines": (
        "sed -i 's|location / {|location = /metrics { proxy_pass http://enclave_engines; }\\n\\t\\tlocation / {|'"
        " /etc/nginx/nginx.conf", {"off_list_paths_are_404"}),
    "the engines' key is wrong": (
        f"sed -i 's/Bearer [^\"]*/Bearer wrong-engine-key/' {CONF}/engine-auth.conf", {"key_is_200"}),
}
CHECKS = {"tls_verifies", "no_key_is_401", "off_list_paths_are_404", "key_is_200"}


@pytest.mark.parametrize("fault", list(GATEWAY_FAULTS))
def test_shipped_gateway_checks_fail_on_their_fault(fault: str, gateway: Gateway, inventory: Path) -> None:
    breaks, expected = GATEWAY_FAULTS[fault]
    if not engine_phase_in_site():
        expected = expected - {"key_is_200"}  # the check skips it while site.yml deploys no engines
        if not expected:
            pytest.skip("needs engines: site.yml has no engine phase yet")
    clean, _ = run_checks(inventory, modules=("test_gateway.py",))
    assert {r.check for r in clean if r.outcome == "failed"} == set(), {r.check: r.message for r in clean}
    backup = "/root/enclave-gateway-test-backup"
    ssh(inventory, "gateway", f"rm -rf {backup} && mkdir {backup} && cp -a /etc/nginx/nginx.conf {CONF} {backup}/")
    try:
        ssh(inventory, "gateway", f"{breaks} && nginx -t -q && systemctl reload nginx")
        results, _ = run_checks(inventory, modules=("test_gateway.py",))
    finally:
        ssh(inventory, "gateway", f"cp -a {backup}/nginx.conf /etc/nginx/nginx.conf && rm -rf {CONF}"
                                  f" && cp -a {backup}/enclave {CONF} && rm -rf {backup}"
                                  " && nginx -t -q && systemctl reload nginx")
    failed = {r.check for r in results if r.outcome == "failed"}
    assert failed == expected, {r.check: r.message for r in results}
    # nginx reloads in the background: the repaired gateway passes again once the new workers answer.
    assert wait_until(lambda: not [r for r in run_checks(inventory, modules=("test_gateway.py",))[0]
                                   if r.outcome == "failed"], 30, step=2)


# -- the certificate's lifetime: the check that flags it, and `enclave cert renew` under a stream ------------------
def short_lived_cert(ca_dir: Path, tmp: Path, days: int) -> tuple[str, str]:
    """(certificate, key) PEM signed by the kit's CA with the gateway's own names (the role's .cnf), `days` long."""
    key, csr, crt = tmp / "short.key", tmp / "short.csr", tmp / "short.crt"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", "/O=enclave/CN=gateway"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.crt"), "-CAkey",
                    str(ca_dir / "ca.key"), "-CAcreateserial", "-CAserial", str(tmp / "ca.srl"), "-days", str(days),
                    "-extfile", str(ca_dir / "gateway.cnf"), "-out", str(crt)], check=True, capture_output=True)
    return crt.read_text(), key.read_text()


def served_serial(gateway: Gateway) -> str:
    return cert.served(GatewayTarget(gateway.address, gateway.port, gateway.ca)).serial


def test_a_certificate_near_expiry_fails_its_check_and_cert_renew_replaces_it_under_a_stream(
        gateway: Gateway, model: str, inventory: Path, tmp_path: Path) -> None:
    pem, key = short_lived_cert(gateway.ca.parent, tmp_path, days=2)
    ssh(inventory, "gateway", f"cat > {CONF}/tls/server.crt", stdin=pem)
    ssh(inventory, "gateway", f"cat > {CONF}/tls/server.key", stdin=key)  # the key never on a command line
    ssh(inventory, "gateway", "nginx -t -q && systemctl reload nginx")
    short = cert.from_peer(ssl._ssl._test_decode_cert(str(tmp_path / "short.crt"))).serial  # type: ignore[attr-defined]
    renewed = False
    try:
        # Old workers answer handshakes with the old certificate for a moment after a reload: wait until several
        # handshakes in a row see the short-lived one.
        assert wait_until(lambda: all(served_serial(gateway) == short for _ in range(5)), 30, step=1), (
            "nginx did not serve the short-lived certificate")
        assert cert.days_left(cert.served(GatewayTarget(gateway.address, gateway.port, gateway.ca)),
                              datetime.now(UTC)) < 3
        results, _ = run_checks(inventory, modules=("test_gateway.py",))
        failed = {r.check: r.message for r in results if r.outcome == "failed"}
        assert set(failed) == {"tls_certificate_is_not_about_to_expire"}, failed
        assert "expires within 21 days" in failed["tls_certificate_is_not_about_to_expire"], failed

        # A stream opened on the short-lived certificate finishes across the renewal's reload.
        conn, response = open_stream(gateway, model, f"renew-{uuid.uuid4().hex}", 200)
        events = stream_events(response)
        first = next(events)
        proc = enclave("cert", "renew", "-i", str(inventory))
        renewed = proc.returncode == 0
        assert renewed, proc.stdout[-3000:] + proc.stderr[-2000:]
        rest = list(events)
        conn.close()  # type: ignore[attr-defined]
        assert generated_tokens([first, *rest]) == 200, "the stream in flight was cut by the renewal"
        new = served_serial(gateway)
        assert new != short, "cert renew left the short-lived certificate in place"
        assert f"serial {short} -> {new}" in proc.stdout, proc.stdout
        print(proc.stdout.strip().splitlines()[-1])
        assert not [r for r in run_checks(inventory, modules=("test_gateway.py",))[0] if r.outcome == "failed"]
    finally:
        if not renewed and enclave("cert", "renew", "-i", str(inventory)).returncode != 0:
            mark_dirty("test_gateway: the gateway may still serve a short-lived certificate")


# -- key lifecycle: rotate with a grace period, revoke, under streams ----------------------------------------
# The rotation (a short playbook on the gateway: about 5 s under mitogen's strategy) must end well inside the grace,
# which the test then waits out: 30 s leaves it 25.
GRACE_S = 30
NEW_KEY = re.compile(r"shown only now\): (\S+)")


def status_with(gateway: Gateway, key: str) -> int:
    return gateway.request("GET", "/v1/models", key=key, timeout=30)[0]


def open_stream_with(gateway: Gateway, model: str, key: str, tokens: int) -> tuple[object, Iterator[str], str]:
    """A completion streaming with `key`, its first event already read: in flight from here on."""
    conn = gateway.connection()
    body = completion_body(model, stream=True, max_tokens=tokens) | {"ignore_eos": True,
                                                                     "stream_options": {"include_usage": True}}
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()[:300]
    events = stream_events(response)
    return conn, events, next(events)


def test_a_rotated_key_works_for_its_grace_then_401_and_a_revoked_one_at_once_under_streams(
        gateway: Gateway, model: str, inventory: Path) -> None:
    client = "sandbox-demo"  # not the key the other tests use (sandbox-tests)
    path = keys.keys_file(inventory)
    saved = path.read_bytes()
    old = gateway.keys[client]
    restored = False
    try:
        # rotate while a stream with the old key is in flight: the reload lets it finish
        conn, events, first = open_stream_with(gateway, model, old, 200)
        started = time.monotonic()  # the expiry is written during the verb: between this and its end, + grace
        proc = enclave("keys", "rotate", client, "--grace", f"{GRACE_S}s", "-i", str(inventory))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        [new] = NEW_KEY.findall(proc.stdout)
        assert old not in proc.stdout + proc.stderr
        rest = list(events)
        conn.close()  # type: ignore[attr-defined]
        assert generated_tokens([first, *rest]) == 200, "the stream in flight was cut by the rotation's reload"
        # the reload has returned; new workers take new connections within moments
        assert wait_until(lambda: status_with(gateway, new) == 200, 10), "the new key does not work"
        assert time.monotonic() - started < GRACE_S - 5, "the rotation took too long to see its grace period"
        assert status_with(gateway, old) == 200, "the old key stopped working before its grace ended"
        # nothing is run after the rotation: the gateway stops taking the old key by itself
        assert wait_until(lambda: status_with(gateway, old) == 401, GRACE_S + 10, step=1), \
            "the old key still works after its grace period"
        assert time.monotonic() - started >= GRACE_S - 2, "the old key stopped working before its grace ended"
        assert status_with(gateway, new) == 200

        # revoke while a stream with the revoked key is in flight: refused at once, the stream finishes
        conn, events, first = open_stream_with(gateway, model, new, 200)
        proc = enclave("keys", "revoke", client, "-i", str(inventory))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert new not in proc.stdout + proc.stderr
        assert wait_until(lambda: status_with(gateway, new) == 401, 10), "the revoked key still works"
        rest = list(events)
        conn.close()  # type: ignore[attr-defined]
        assert generated_tokens([first, *rest]) == 200, "the stream in flight was cut by the revoke's reload"
        assert status_with(gateway, gateway.key) == 200  # other clients unaffected
    finally:
        path.write_bytes(saved)
        path.chmod(0o600)
        restored = enclave("keys", "apply", "-i", str(inventory)).returncode == 0
        if not restored or not wait_until(lambda: status_with(gateway, old) == 200, 10):
            mark_dirty("test_gateway: the sandbox's client keys may differ from its inventory")


# -- token accounting: what `enclave usage` and the usage counters say equals what the responses reported ----
def usage_counters(inventory: Path) -> dict[tuple[str, str], float]:
    """{(client, kind): tokens} from the gateway's signals file, rewritten now (the timer's own service)."""
    text = ssh(inventory, "gateway", "systemctl start enclave-signals.service && "
                                     "cat /var/lib/prometheus/node-exporter/enclave.prom").stdout
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("enclave_gateway_tokens_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            key = (labels["client"].strip('"'), labels["kind"].strip('"'))
            found[key] = found.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return found


def test_usage_per_client_equals_what_the_responses_reported(gateway: Gateway, model: str,
                                                            inventory: Path) -> None:
    """Two clients through the official openai SDK: a plain completion, a stream that asked for usage and one
    that did not (the gateway asks vLLM for it and hides it). ignore_eos makes every answer exactly max_tokens
    long, so the hidden stream's tokens are known: its prompt's (from the same request unstreamed) and 5."""
    counters_before = usage_counters(inventory)
    time.sleep(1.1)  # the access log's times are whole seconds: the window starts after every earlier record
    since = datetime.now(UTC).replace(microsecond=0)
    expected: dict[str, dict[str, int]] = {}

    def add(client: str, prompt: int, completion: int) -> None:
        row = expected.setdefault(client, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        row["requests"] += 1
        row["prompt_tokens"] += prompt
        row["completion_tokens"] += completion

    common: dict[str, Any] = {"model": model, "max_tokens": 5, "temperature": 0, "extra_body": {"ignore_eos": True}}
    for client, prompt in (("sandbox-tests", "Count: one two three"), ("sandbox-demo", "Hello there, gateway")):
        sdk = openai_client(gateway, client)
        messages = [{"role": "user", "content": prompt}]
        plain = sdk.chat.completions.create(messages=messages, **common)
        assert plain.usage is not None and plain.usage.completion_tokens == 5
        add(client, plain.usage.prompt_tokens, plain.usage.completion_tokens)

        asked = list(sdk.chat.completions.create(messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, **common))
        reported = [c.usage for c in asked if c.usage is not None]
        assert len(reported) == 1 and asked[-1].choices == [], "a client that asked gets the usage chunk, last"
        add(client, reported[0].prompt_tokens, reported[0].completion_tokens)

        hidden = list(sdk.chat.completions.create(messages=messages, stream=True, **common))
        assert hidden and all(c.usage is None and c.choices for c in hidden), "a client that did not ask saw usage"
        add(client, plain.usage.prompt_tokens, 5)

    proc = enclave("usage", "-i", str(inventory), "--since", since.isoformat(), "--json", check=True, timeout=300)
    rows = {row["client"]: row for row in json.loads(proc.stdout)["clients"]}
    for client, want in expected.items():
        got = {k: rows.get(client, {}).get(k) for k in want}
        assert got == want, f"{client}: enclave usage says {got}, the responses reported {want}"
    only = enclave("usage", "-i", str(inventory), "--since", since.isoformat(), "--json", "--client", "sandbox-demo",
                   check=True, timeout=300)
    assert [row["client"] for row in json.loads(only.stdout)["clients"]] == ["sandbox-demo"]

    counters_after = usage_counters(inventory)
    for client, want in expected.items():
        for kind in ("prompt", "completion"):
            delta = counters_after.get((client, kind), 0) - counters_before.get((client, kind), 0)
            assert delta == want[f"{kind}_tokens"], (client, kind, delta, want)


def test_a_capped_client_is_refused_above_its_max_tokens_and_held_to_it_when_it_names_none(
        gateway: Gateway, model: str) -> None:
    """sandbox-limited may ask for at most 16 tokens (enclave.sandbox.client_keys.LIMITS); sandbox-tests has no cap.
    ignore_eos makes vLLM generate until its limit, so the tokens generated show the limit it was given."""
    import openai

    cap = LIMITS["sandbox-limited"]["max_tokens"]
    capped, free = openai_client(gateway, "sandbox-limited"), openai_client(gateway, "sandbox-tests")
    messages = [{"role": "user", "content": "Count: one two three"}]
    common: dict[str, Any] = {"model": model, "temperature": 0, "extra_body": {"ignore_eos": True}}
    time.sleep(3)  # the rate test drained this client's 1 r/s burst-2 bucket: three requests fit again after 3 s

    with pytest.raises(openai.BadRequestError) as refused:
        capped.chat.completions.create(messages=messages, max_tokens=cap + 1, **common)
    assert refused.value.status_code == 400 and refused.value.body["param"] == "max_tokens"
    assert f"above this API key's limit of {cap}" in refused.value.body["message"]

    named = capped.chat.completions.create(messages=messages, max_tokens=cap, **common)
    assert named.usage is not None and named.usage.completion_tokens == cap
    unnamed = capped.chat.completions.create(messages=messages, **common)
    assert unnamed.usage is not None and unnamed.usage.completion_tokens == cap, \
        "a capped client that named no max_tokens was not held to its cap"

    longer = free.chat.completions.create(messages=messages, max_tokens=cap + 8, **common)
    assert longer.usage is not None and longer.usage.completion_tokens == cap + 8, "a client without a cap was capped"
