"""Per-client max_tokens caps at the gateway: the role's nginx configuration and usage.js served by a real nginx
with njs on loopback, in front of test_gateway_usage's vLLM-like engine, which records the bytes it received. A
request over its client's cap is refused (400, an OpenAI-style body) before it reaches the engine; one that names no
limit is given the cap; one at or under it is forwarded byte for byte; a client without a cap is untouched; the
class's rate limit counts each request once; accounting still works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.test_gateway_usage import KEYS as USAGE_KEYS
from tests.unit.test_gateway_usage import MODEL, Setup, accounting, chat, post, raw, records

KEYS = {"plain": "pl-" + "p" * 30, "capped": "ca-" + "c" * 30, "free": "fr-" + "f" * 30, "tiny": "ti-" + "t" * 30,
        "counted": "co-" + "o" * 30}
DEFAULT_CAP, CAP = 50, 100
SETTINGS = {"gateway_client_max_tokens": DEFAULT_CAP, "gateway_client_limits": {
    "capped": {"max_tokens": CAP}, "free": {"max_tokens": 0}, "tiny": {"max_tokens": 8},
    "counted": {"max_tokens": CAP, "rate": "1r/m", "burst": 1}}}
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    assert not set(KEYS.values()) & set(USAGE_KEYS.values())
    with accounting(tmp_path_factory.mktemp("max-tokens"), KEYS, SETTINGS) as ready:
        yield ready


def send(setup: Setup, client: str, path: str, data: bytes) -> tuple[int, bytes, str, list[bytes]]:
    """Status, body and request id of the answer, and the bodies the engine received for it."""
    before = len(setup.engine.raws)
    status, answer, rid = post(setup.gateway, path, KEYS[client], data)
    return status, answer, rid, setup.engine.raws[before:]


def refusal(field: str, value: object, cap: int) -> bytes:
    error = {"message": f"{field} {value} is above this API key's limit of {cap}", "type": "invalid_request_error",
             "param": field, "code": 400}
    return json.dumps({"error": error}, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize(("client", "path", "body", "field", "cap"), [
    ("capped", CHAT, chat(max_tokens=CAP + 1), "max_tokens", CAP),
    ("capped", CHAT, chat(max_tokens=None, max_completion_tokens=5000), "max_completion_tokens", CAP),
    ("capped", CHAT, chat(max_tokens=10, max_completion_tokens=CAP + 1), "max_completion_tokens", CAP),
    ("capped", CHAT, chat(stream=True, max_tokens=CAP + 50), "max_tokens", CAP),
    ("plain", COMPLETIONS, chat(max_tokens=DEFAULT_CAP + 1), "max_tokens", DEFAULT_CAP),
])
def test_a_request_over_its_clients_cap_is_400_and_never_reaches_the_engine(
        setup: Setup, client: str, path: str, body: dict[str, Any], field: str, cap: int) -> None:
    status, answer, rid, forwarded = send(setup, client, path, raw(body))
    assert (status, forwarded) == (400, []), answer
    assert answer == refusal(field, body[field], cap)
    record = records(setup.gateway, [rid])[rid]
    assert (record["client"], record["path"], record["status"], record["upstream"], record["completion_tokens"]) \
        == (client, path, 400, "", 0)


def test_a_value_the_gateway_cannot_compare_is_refused(setup: Setup) -> None:
    # vLLM would read "100000" as a whole number: forwarded, it would pass the cap unchecked.
    for value in ("100000", True, {"n": 1}):
        status, answer, _, forwarded = send(setup, "capped", CHAT, raw(chat(max_tokens=value)))
        assert (status, forwarded) == (400, []), answer
        error = json.loads(answer)["error"]
        assert (error["param"], error["code"]) == ("max_tokens", 400) and f"limit is {CAP}" in error["message"]


def test_a_request_that_names_no_limit_is_given_the_cap(setup: Setup) -> None:
    body = chat()
    del body["max_tokens"]
    status, answer, _, forwarded = send(setup, "capped", CHAT, raw(body))
    assert status == 200, answer
    assert forwarded == [raw(body)[:-1] + b',"max_tokens":100}'], "appended as text, the rest as it came"
    # null is no limit to vLLM: the appended key repeats it and wins; likewise a null max_completion_tokens.
    for named in ({"max_tokens": None}, {"max_completion_tokens": None}):
        status, _, _, forwarded = send(setup, "plain", CHAT, raw({**body, **named}))
        assert status == 200
        assert json.loads(forwarded[0])["max_tokens"] == DEFAULT_CAP


def test_a_completion_that_names_none_keeps_the_apis_default_of_16_unless_the_cap_is_lower(setup: Setup) -> None:
    body = {"model": MODEL, "prompt": "hi"}
    assert send(setup, "capped", COMPLETIONS, raw(body))[3] == [raw(body)], "16 is under the cap: unchanged"
    assert json.loads(send(setup, "tiny", COMPLETIONS, raw(body))[3][0])["max_tokens"] == 8
    assert json.loads(send(setup, "capped", COMPLETIONS, raw({**body, "max_tokens": None}))[3][0])["max_tokens"] \
        == CAP


@pytest.mark.parametrize("data", [
    raw(chat(max_tokens=CAP)),
    raw(chat(max_tokens=7)),
    raw(chat(max_tokens=None, max_completion_tokens=CAP)),
    b'{ "messages" : [{"role": "user", "content": "hi"}],\n  "max_tokens" : 3 , "seed": 18446744073709551615 }\n',
])
def test_a_request_at_or_under_the_cap_reaches_the_engine_byte_for_byte(setup: Setup, data: bytes) -> None:
    status, answer, _, forwarded = send(setup, "capped", CHAT, data)
    assert status == 200, answer
    assert forwarded == [data]


@pytest.mark.parametrize("data", [b"not json {", b"[1, 2]", b'{"max_tokens": 5000, "messages": [}'])
def test_a_body_that_is_not_a_json_object_is_forwarded_as_it_came(setup: Setup, data: bytes) -> None:
    assert send(setup, "capped", CHAT, data)[3] == [data]  # vLLM answers it as it would without the gateway


def test_a_client_without_a_cap_and_a_path_without_output_are_untouched(setup: Setup) -> None:
    body = chat()
    del body["max_tokens"]
    for data in (raw(chat(max_tokens=5000)), raw(body)):
        status, _, _, forwarded = send(setup, "free", CHAT, data)  # its own 0 overrides the default cap
        assert (status, forwarded) == (200, [data])
    embedding = raw({"model": MODEL, "input": "hi", "max_tokens": 5000})
    assert send(setup, "capped", "/v1/embeddings", embedding)[:4:3] == (200, [embedding])


def test_a_stream_given_the_cap_is_still_accounted_and_the_client_gets_the_bytes_it_would_have(
        setup: Setup) -> None:
    body = chat(stream=True)
    del body["max_tokens"]
    status, answer, rid, forwarded = send(setup, "capped", CHAT, raw(body))
    assert status == 200, answer
    assert forwarded == [raw(body)[:-1] + b',"max_tokens":100,"stream_options":{"include_usage":true,'
                                          b'"continuous_usage_stats":false}}']
    capped = {**body, "max_tokens": CAP}
    assert answer == b"".join(setup.engine.events(CHAT, capped)), "the stream vLLM sends for the capped request"
    record = records(setup.gateway, [rid])[rid]
    assert (record["client"], record["model"], record["completion_tokens"]) == ("capped", MODEL, CAP)


def test_the_class_rate_limit_counts_each_request_once(setup: Setup) -> None:
    # 1r/m with a burst of 1: two requests pass, the third is 429; one counted twice would leave room for fewer.
    over = send(setup, "counted", CHAT, raw(chat(max_tokens=CAP + 1)))
    within = send(setup, "counted", CHAT, raw(chat(max_tokens=CAP)))
    limited = send(setup, "counted", CHAT, raw(chat(max_tokens=CAP)))
    assert [over[0], within[0], limited[0]] == [400, 200, 429]
    assert len(within[3]) == 1 and limited[3] == []
    log = (setup.gateway.prefix / "logs" / "error.log").read_text()
    assert "js exception" not in log and "js error" not in log, log[-2000:]
