"""Token accounting at the gateway: the role's nginx configuration and usage.js served by a real nginx with njs on
loopback, in front of a stand-in engine that answers as vLLM 0.32 does (a JSON body with usage; an event stream
whose usage-only last chunk comes only when the forwarded body asked for it, and whose finishing chunk carries
system_fingerprint only when it does not), writing its events in pieces that split them. The gateway asks for usage
only for a stream that did not, hands that client exactly the bytes it would have had without the gateway, and
logs every request's tokens under its client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from enclave.hosttools import accesslog
from tests.host_tools import require_njs, require_tool
from tests.unit.standin_http import KeepAliveHandler, free_port, serve
from tests.unit.test_gateway_nginx import Gateway, lay_out_prefix, rendered, running

KEYS = {"alpha": "al-" + "a" * 30, "beta": "be-" + "b" * 30}
ENGINE = "127.0.0.11"  # node1 of test_gateway_nginx's NODES; node2 is drained
MODEL = "org/tiny"
FINGERPRINT = "fp_vllm_0.32.0"


def prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
    return 3 + len(text) // 4


@dataclass
class VllmLike:
    """Answers /v1/chat/completions, /v1/completions and /v1/embeddings the way vLLM 0.32.0 does
    (vllm/entrypoints/openai/chat_completion/serving.py), deterministically, and records the bodies it got."""

    port: int
    bodies: list[dict[str, Any]] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)  # the same bodies, as the bytes received
    server: ThreadingHTTPServer | None = None

    def events(self, path: str, body: dict[str, Any]) -> list[bytes]:
        """The stream vLLM would send for `body` (as forwarded), one bytes object per event."""
        completion = max(1, int(body.get("max_tokens") or 5))
        options = body.get("stream_options") or {}
        usage = bool(options.get("include_usage"))
        continuous = usage and bool(options.get("continuous_usage_stats"))
        prompt = prompt_tokens(body)
        kind = "chat.completion.chunk" if path.endswith("chat/completions") else "text_completion"
        out = []
        n = int(body.get("n") or 1)
        # With n > 1 choice k is k tokens shorter, so choices finish at different events, as they do in vLLM.
        lengths = [max(1, completion - k) for k in range(n)]
        for i in range(completion):
            for k in range(n):
                if i >= lengths[k]:
                    continue
                last = i == lengths[k] - 1
                choice: dict[str, Any] = {"index": k, "delta": {"content": f"tok{i} \u00e9\u2603"},
                                          "logprobs": None, "finish_reason": "length" if last else None}
                if kind == "text_completion":
                    choice = {"index": k, "text": f"tok{i} \u00e9", "logprobs": None,
                              "finish_reason": "length" if last else None}
                chunk: dict[str, Any] = {"id": "chatcmpl-1", "object": kind, "created": 1700000000,
                                         "model": MODEL, "choices": [choice]}
                if continuous:
                    chunk["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt + i + 1,
                                      "completion_tokens": i + 1}
                if last and not usage:
                    chunk["system_fingerprint"] = FINGERPRINT
                out.append(f"data: {json.dumps(chunk, separators=(',', ':'), ensure_ascii=False)}\n\n".encode())
        completion = sum(lengths)
        if usage:
            final = {"id": "chatcmpl-1", "object": kind, "created": 1700000000, "model": MODEL, "choices": [],
                     "usage": {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                               "completion_tokens": completion}, "system_fingerprint": FINGERPRINT}
            out.append(f"data: {json.dumps(final, separators=(',', ':'))}\n\n".encode())
        out.append(b"data: [DONE]\n\n")
        return out

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        prompt = prompt_tokens(body)
        if path == "/v1/embeddings":
            return {"id": "embd-1", "object": "list", "created": 1700000000, "model": MODEL,
                    "data": [{"index": 0, "object": "embedding", "embedding": [0.1] * 4000}],
                    "usage": {"prompt_tokens": prompt, "total_tokens": prompt, "completion_tokens": 0,
                              "prompt_tokens_details": None}}
        completion = max(1, int(body.get("max_tokens") or 5))
        return {"id": "chatcmpl-2", "object": "chat.completion", "created": 1700000000, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 20000},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                          "completion_tokens": completion, "prompt_tokens_details": None},
                "system_fingerprint": FINGERPRINT, "prompt_logprobs": None, "kv_transfer_params": None}

    def start(self) -> None:
        engine = self

        class Handler(KeepAliveHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                engine.raws.append(raw)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsed": raw.decode("latin-1")}
                engine.bodies.append(body)
                if not isinstance(body, dict) or not isinstance(body.get("stream_options") or {}, dict):
                    self._send(400, b'{"error":{"message":"not an object","code":400}}')
                    return
                if body.get("model") not in (None, MODEL):
                    self._send(404, b'{"error":{"message":"The model does not exist.","code":404}}')
                    return
                if not body.get("stream"):
                    # Compact, as starlette's JSONResponse writes it.
                    self._send(200, json.dumps(engine.answer(self.path, body), separators=(",", ":"),
                                               ensure_ascii=False).encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                data = b"".join(engine.events(self.path, body))
                # Pieces of 7 bytes: events, and UTF-8 characters, split across the gateway's buffers.
                for start in range(0, len(data), 7):
                    piece = data[start:start + 7]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                    if start % 140 == 0:
                        time.sleep(0.001)
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self) -> None:
                self._send(200, json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode())

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = serve(ENGINE, self.port, Handler)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Setup:
    gateway: Gateway
    engine: VllmLike


@contextmanager
def accounting(tmp: Path, keys: dict[str, str], settings: dict[str, Any] | None = None) -> Iterator[Setup]:
    """A real nginx with the role's files for `keys` and any other role `settings` (after `nginx -t`), in front
    of one vLLM-like engine (node2 is drained)."""
    require_tool("nginx")
    require_njs()
    engine_port, https_port = free_port(), free_port()
    files = rendered(tmp, engine_port=engine_port, https_port=https_port, drained=["node2"], make_ca=True,
                     keys=keys, settings=settings)["gw"]
    prefix = lay_out_prefix(tmp, files)
    engine = VllmLike(engine_port)
    engine.start()
    gw = Gateway(prefix, https_port, tmp / "pki" / "ca.crt", {}, files)
    try:
        with running(gw):
            yield Setup(gw, engine)
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with accounting(tmp_path_factory.mktemp("usage"), KEYS) as ready:
        yield ready


def post(gw: Gateway, path: str, key: str, raw: bytes) -> tuple[int, bytes, str]:
    """Status, body bytes as received, and the request id."""
    conn = gw.connection()
    conn.request("POST", path, body=raw, headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, response.getheader("X-Request-Id") or ""


def records(gw: Gateway, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The access log's records of these requests (nginx writes a record once the request ends)."""
    deadline = time.monotonic() + 10
    while True:
        found = {r["request_id"]: r for r in map(json.loads, gw.access_log().splitlines())
                 if r["request_id"] in request_ids}
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def chat(stream: bool | None = None, options: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "secret-prompt-words"}],
                            "max_tokens": 6, **more}
    if stream is not None:
        body["stream"] = stream
    if options is not None:
        body["stream_options"] = options
    return body


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def test_a_stream_without_usage_is_asked_for_it_and_the_client_gets_the_bytes_it_would_have(setup: Setup) -> None:
    body = chat(stream=True)
    setup.engine.bodies.clear()
    status, data, rid = post(setup.gateway, "/v1/chat/completions", KEYS["alpha"], raw(body))
    assert status == 200, data
    forwarded = setup.engine.bodies[-1]
    assert forwarded["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert {k: v for k, v in forwarded.items() if k != "stream_options"} == body
    assert data == b"".join(setup.engine.events("/v1/chat/completions", body)), \
        "the client's stream differs from what vLLM sends a request without usage"
    assert b'"usage"' not in data and data.count(FINGERPRINT.encode()) == 1
    record = records(setup.gateway, [rid])[rid]
    expected = setup.engine.events("/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    usage = json.loads(expected[-2][len(b"data: "):])["usage"]
    assert (record["client"], record["model"], record["prompt_tokens"], record["completion_tokens"]) == \
        ("alpha", MODEL, usage["prompt_tokens"], 6)


def test_a_client_that_asked_for_usage_gets_it_unchanged(setup: Setup) -> None:
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = chat(stream=True, options={"include_usage": True}, max_tokens=4)
        setup.engine.bodies.clear()
        status, data, rid = post(setup.gateway, path, KEYS["beta"], raw(body))
        assert status == 200, data
        assert setup.engine.bodies[-1] == body, "a body that asked for usage is forwarded as it came"
        assert data == b"".join(setup.engine.events(path, body))
        assert b'"choices":[],"usage"' in data
        record = records(setup.gateway, [rid])[rid]
        assert (record["client"], record["prompt_tokens"], record["completion_tokens"]) == \
            ("beta", prompt_tokens(body), 4)


def test_continuous_usage_the_client_did_not_turn_on_stays_off(setup: Setup) -> None:
    body = chat(stream=True, options={"include_usage": False, "continuous_usage_stats": True}, max_tokens=3)
    setup.engine.bodies.clear()
    status, data, rid = post(setup.gateway, "/v1/chat/completions", KEYS["alpha"], raw(body))
    assert status == 200
    assert setup.engine.bodies[-1]["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert data == b"".join(setup.engine.events("/v1/chat/completions", body))
    assert records(setup.gateway, [rid])[rid]["completion_tokens"] == 3


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_a_json_response_is_passed_whole_and_its_usage_logged(setup: Setup, path: str) -> None:
    body = chat(max_tokens=9) if path != "/v1/embeddings" else {"model": MODEL, "input": "x" * 100}
    setup.engine.bodies.clear()
    status, data, rid = post(setup.gateway, path, KEYS["alpha"], raw(body))
    assert status == 200
    assert setup.engine.bodies[-1] == body
    answer = setup.engine.answer(path, body)
    assert json.loads(data) == answer
    record = records(setup.gateway, [rid])[rid]
    assert (record["model"], record["prompt_tokens"], record["completion_tokens"]) == \
        (MODEL, answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])


@pytest.mark.parametrize("data", [
    b"not json at all", b"[1, 2, 3]", b'{"stream": "yes", "model": "org/tiny"}',
    b'{"stream": false, "model": "org/tiny", "seed": 18446744073709551615}',
    b'{"stream": true, "stream_options": 7, "model": "org/tiny"}', b""])
def test_odd_bodies_pass_unchanged_and_are_logged_with_what_the_answer_reported(setup: Setup, data: bytes) -> None:
    setup.engine.bodies.clear()
    status, answer, rid = post(setup.gateway, "/v1/chat/completions", KEYS["alpha"], data)
    got = setup.engine.bodies[-1]
    if data:
        try:
            expected = json.loads(data)
        except ValueError:
            expected = {"unparsed": data.decode()}
        assert got == expected
    else:
        assert got == {"unparsed": ""}
    # Refused (400) or streamed without usage: 0 tokens; answered with JSON usage: that usage.
    reported = json.loads(answer)["usage"]["prompt_tokens"] if status == 200 and answer.startswith(b"{") else 0
    record = records(setup.gateway, [rid])[rid]
    assert (record["client"], record["prompt_tokens"]) == ("alpha", reported)


def test_a_large_stream_body_is_read_whole_and_asked_for_usage(setup: Setup) -> None:
    # Past nginx's default body buffer (16k), which would have put it in a file njs cannot read.
    body = chat(stream=True, seed=18446744073709551615, max_tokens=2,
                messages=[{"role": "user", "content": "y" * 50000}])
    setup.engine.bodies.clear()
    status, data, rid = post(setup.gateway, "/v1/chat/completions", KEYS["beta"], raw(body))
    assert status == 200
    forwarded = setup.engine.bodies[-1]
    assert set(forwarded) == {*body, "stream_options"}, str(forwarded)[:300]
    assert forwarded["seed"] == 18446744073709551615, "an integer past 2^53 was rounded"
    assert forwarded["stream_options"]["include_usage"] is True
    assert data == b"".join(setup.engine.events("/v1/chat/completions", body))
    assert records(setup.gateway, [rid])[rid]["prompt_tokens"] == prompt_tokens(body)


def test_refused_and_failed_requests_log_no_tokens_and_no_secret(setup: Setup) -> None:
    _, _, unknown = post(setup.gateway, "/v1/chat/completions", "wrong-" + "x" * 30, raw(chat()))
    status, _, missing = post(setup.gateway, "/v1/chat/completions", KEYS["alpha"], raw(chat(model="nope")))
    assert status == 404
    found = records(setup.gateway, [unknown, missing])
    assert (found[unknown]["prompt_tokens"], found[unknown]["completion_tokens"], found[unknown]["model"]) == \
        (0, 0, "")
    assert (found[missing]["client"], found[missing]["prompt_tokens"]) == ("alpha", 0)
    log = setup.gateway.access_log()
    for secret in [*KEYS.values(), "secret-prompt-words", "Bearer"]:
        assert secret not in log


def test_every_record_is_json_with_the_token_fields(setup: Setup) -> None:
    with socket.create_connection(("127.0.0.1", setup.gateway.port), timeout=10):
        pass  # a connection without a request logs nothing; every record is one JSON object
    for line in setup.gateway.access_log().splitlines():
        record = json.loads(line)
        assert isinstance(record["prompt_tokens"], int) and isinstance(record["completion_tokens"], int)


def reported_usage(data: bytes) -> dict[str, int]:
    """The usage a response body reported: the JSON's, or a stream's usage chunk's."""
    if not data.startswith(b"data: "):
        return json.loads(data)["usage"]
    chunks = [json.loads(e[len(b"data: "):]) for e in data.split(b"\n\n") if e.startswith(b"data: {")]
    return next(c["usage"] for c in reversed(chunks) if c.get("usage"))


def test_the_counters_and_the_window_sums_equal_the_usage_the_responses_reported(
        setup: Setup, tmp_path: Path) -> None:
    log = setup.gateway.prefix / "logs" / "enclave-access.log"
    state = tmp_path / ".enclave-usage-state.json"
    before = accesslog.read_new(log, state)
    before_tokens = dict(before.tokens)
    time.sleep(1.1)  # the log's times are whole seconds: the window below starts after every earlier record
    since = float(int(time.time()))
    expected: dict[str, list[int]] = {"alpha": [0, 0, 0], "beta": [0, 0, 0]}
    requests = [("alpha", "/v1/chat/completions", chat(max_tokens=7)),
                ("alpha", "/v1/completions", chat(stream=True, max_tokens=3)),
                ("beta", "/v1/chat/completions", chat(stream=True, options={"include_usage": True}, max_tokens=2)),
                ("beta", "/v1/embeddings", {"model": MODEL, "input": "z" * 40})]
    ids = []
    for client, path, body in requests:
        status, data, rid = post(setup.gateway, path, KEYS[client], raw(body))
        assert status == 200
        ids.append(rid)
        if body.get("stream") and not body.get("stream_options"):
            # The client saw no usage: what vLLM reported to the gateway is the same request's with usage on.
            data = b"".join(setup.engine.events(path, {**body, "stream_options": {"include_usage": True}}))
        usage = reported_usage(data)
        expected[client] = [expected[client][0] + 1, expected[client][1] + usage["prompt_tokens"],
                            expected[client][2] + usage["completion_tokens"]]
    assert len(records(setup.gateway, ids)) == len(ids)
    window = accesslog.sums([log], since)["clients"]
    got = {client: [sum(m[k] for m in models.values()) for k in ("requests", "prompt_tokens", "completion_tokens")]
           for client, models in window.items()}
    assert got == expected
    after = accesslog.read_new(log, state)
    for client in expected:
        for index, kind in ((1, "prompt"), (2, "completion")):
            key = (client, MODEL, kind)
            assert after.tokens[key] - before_tokens.get(key, 0) == expected[client][index], key


def test_a_chunked_upload_is_read_whole_and_asked_for_usage(setup: Setup) -> None:
    body = chat(stream=True, max_tokens=2, messages=[{"role": "user", "content": "w" * 40000}])
    data = raw(body)
    setup.engine.bodies.clear()
    conn = setup.gateway.connection()
    conn.request("POST", "/v1/chat/completions", body=iter([data[:1000], data[1000:30000], data[30000:]]),
                 headers={"Authorization": f"Bearer {KEYS['beta']}", "Content-Type": "application/json"},
                 encode_chunked=True)
    response = conn.getresponse()
    received = response.read()
    conn.close()
    assert response.status == 200, received
    assert setup.engine.bodies[-1] == {**body, "stream_options": {"include_usage": True,
                                                                  "continuous_usage_stats": False}}
    assert received == b"".join(setup.engine.events("/v1/chat/completions", body))


def test_a_stream_with_several_choices_keeps_its_bytes_and_counts_every_choice(setup: Setup) -> None:
    body = chat(stream=True, n=3, max_tokens=4)
    setup.engine.bodies.clear()
    status, data, rid = post(setup.gateway, "/v1/chat/completions", KEYS["alpha"], raw(body))
    assert status == 200
    assert setup.engine.bodies[-1]["stream_options"]["include_usage"] is True
    expected = b"".join(setup.engine.events("/v1/chat/completions", body))
    assert expected.count(FINGERPRINT.encode()) == 3  # one per finishing chunk
    assert data == expected
    assert records(setup.gateway, [rid])[rid]["completion_tokens"] == 4 + 3 + 2
