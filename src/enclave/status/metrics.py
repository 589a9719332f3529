"""The engine's Prometheus `/metrics` page, read for what `enclave status` shows (pure functions).

vLLM (v1 engine) exports one series per engine core, labelled model_name and engine; a node running several
cores (data parallel) has several series of each name, so values are summed. Counters also come with a
`<name>_created` gauge (a Unix time), which must never be mistaken for the counter itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
GENERATED = "vllm:generation_tokens_total"  # a counter: tokens/s needs two samples

# name, optional {labels}, value, optional timestamp (exposition format 0.0.4)
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$")


@dataclass(frozen=True)
class EngineLoad:
    """One sample of an engine's load; None where the page lacks the series."""

    at: float  # the host's clock when the page was read
    running: float | None
    waiting: float | None
    generated_tokens: float | None


def sample_sums(text: str) -> dict[str, float]:
    """Every sample name on the page with its values summed over label sets; unparsable lines are skipped."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        if math.isnan(value):
            continue
        name = match.group("name")
        sums[name] = sums.get(name, 0.0) + value
    return sums


def engine_load(text: str, at: float) -> EngineLoad:
    sums = sample_sums(text)
    return EngineLoad(at=at, running=sums.get(RUNNING), waiting=sums.get(WAITING),
                      generated_tokens=sums.get(GENERATED))


def tokens_per_second(earlier: EngineLoad | None, later: EngineLoad | None) -> float | None:
    """Generated tokens per second between two samples of the same engine; None when it cannot be told
    (a missing sample or series, no time between them, or a counter that went down: the engine restarted)."""
    if earlier is None or later is None or earlier.generated_tokens is None or later.generated_tokens is None:
        return None
    elapsed = later.at - earlier.at
    delta = later.generated_tokens - earlier.generated_tokens
    if elapsed <= 0 or delta < 0:
        return None
    return delta / elapsed
