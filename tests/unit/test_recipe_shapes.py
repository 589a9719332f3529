"""docs/planning.md's table of cluster shapes against the vLLM recipe: each row's plan column is what the planner
decides for that cluster, on facts built from nvidia-smi outputs recorded on real machines."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from enclave.plan.facts import host_facts
from enclave.plan.parallelism import ParallelismPlan, PlanRefused, node_hardware, plan_document, plan_parallelism
from enclave.plan.profiles import ModelProfile, load_profile
from tests.unit.recorded_facts import SMI, h200_node, host

DOC = Path(__file__).resolve().parents[2] / "docs" / "planning.md"
REV = "0123456789abcdef0123456789abcdef01234567"
PROFILES = {"Flash": load_profile("deepseek-v4-flash"), "Pro": load_profile("deepseek-v4-pro")}


def h100_node(index: int) -> dict[str, Any]:
    return host(gpus=8, nvswitches=4, summary="h100x8-default-table-565.txt", module_version="565.57.01",
                address=f"10.40.0.{10 + index}/24")


def four_h200(index: int) -> dict[str, Any]:
    """A 4-GPU H200 host: the header and first four rows of the recorded 8xH200 CSV query."""
    raw = host(gpus=4, address=f"10.40.0.{10 + index}/24")
    lines = (SMI / "h200x8-query-csv-570.txt").read_text().splitlines()[:5]
    raw["nvidia_smi"]["query"] = {"present": True, "rc": 0, "stdout": "\n".join(lines) + "\n", "stderr": ""}
    return raw


CLUSTERS: dict[str, tuple[int, Callable[[int], dict[str, Any]]]] = {
    "1x8 H200": (1, lambda i: h200_node(f"10.40.0.{10 + i}/24")),
    "2x8 H200": (2, lambda i: h200_node(f"10.40.0.{10 + i}/24")),
    "1x8 H100": (1, h100_node),
    "2x8 H100": (2, h100_node),
    "4x H200 (one node)": (1, four_h200),
}
EXPECTED_ROWS = {("1x8 H200", "Flash"), ("2x8 H200", "Flash"), ("1x8 H100", "Flash"), ("4x H200 (one node)", "Flash"),
                 ("1x8 H200", "Pro"), ("2x8 H200", "Pro"), ("1x8 H100", "Pro"), ("2x8 H100", "Pro"),
                 ("4x H200 (one node)", "Pro")}


def table_rows() -> list[dict[str, str]]:
    text = DOC.read_text().split("## The plan against the vLLM recipe", 1)[1]
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def shape(plan: ParallelismPlan) -> str:
    """The plan in the table's words: '2 replicas: DP8 + EP', '1 replica: TP8 x PP2'."""
    [form] = {(r.tensor_parallel, r.pipeline_parallel, r.data_parallel, r.expert_parallel) for r in plan.replicas}
    tp, pp, dp, ep = form
    parts = [f"{name}{size}" for name, size in (("TP", tp), ("DP", dp)) if size > 1]
    split = " x ".join(parts + ([f"PP{pp}"] if pp > 1 else []))
    count = len(plan.replicas)
    return f"{count} replica{'s' if count > 1 else ''}: {split}{' + EP' if ep else ''}"


def planned(cluster: str, profile: ModelProfile) -> str:
    count, make = CLUSTERS[cluster]
    nodes = [node_hardware(host_facts(f"gpu{i + 1:02}", make(i + 1))) for i in range(count)]
    try:
        return shape(plan_parallelism(nodes, profile))
    except PlanRefused as exc:
        found = re.search(r"It would fit on (\d+) node\(s\) like", str(exc))
        assert found, str(exc)
        return f"refused: needs {found.group(1)} nodes"


def test_the_table_has_every_row() -> None:
    assert {(r["cluster"], r["model"]) for r in table_rows()} == EXPECTED_ROWS


@pytest.mark.parametrize("row", table_rows(), ids=lambda r: f"{r['cluster']}-{r['model']}")
def test_each_row_is_what_the_planner_decides(row: dict[str, str]) -> None:
    assert planned(row["cluster"], PROFILES[row["model"]]) == row["plan"]


def test_the_plan_carries_the_recipes_flags_for_the_hardware() -> None:
    flash_plan = plan_parallelism([node_hardware(host_facts("gpu01", h200_node("10.40.0.11/24")))], PROFILES["Flash"])
    args = plan_document(PROFILES["Flash"], REV, flash_plan)["replicas"][0]["args"]
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8" and args[args.index("--block-size") + 1] == "256"
    assert '"FULL_AND_PIECEWISE"' in args[args.index("--compilation-config") + 1]
    assert "--speculative-config" not in args  # MTP is opt-in
    pro_plan = plan_parallelism([node_hardware(host_facts("gpu01", h200_node("10.40.0.11/24")))], PROFILES["Pro"])
    args = plan_document(PROFILES["Pro"], REV, pro_plan)["replicas"][0]["args"]
    assert args.count("--compilation-config") == 1  # the Hopper override replaces the strategy's, as on the recipe
    assert args[args.index("--compilation-config") + 1] == '{"mode":0,"cudagraph_mode":"FULL_DECODE_ONLY"}'
    assert "--no-enable-flashinfer-autotune" in args


@pytest.mark.parametrize(("model", "cluster", "tokens"), [("Flash", "1x8 H200", 1), ("Flash", "1x8 H100", 1),
                                                          ("Pro", "1x8 H200", 2)])
def test_mtp_is_an_opt_in_option_with_the_recipes_draft_tokens(model: str, cluster: str, tokens: int) -> None:
    profile = PROFILES[model]
    _, make = CLUSTERS[cluster]
    plan = plan_parallelism([node_hardware(host_facts("gpu01", make(1)))], profile)
    args = plan_document(profile, REV, plan, options=["mtp"])["replicas"][0]["args"]
    assert args[args.index("--speculative-config") + 1] == \
        f'{{"method":"mtp","num_speculative_tokens":{tokens}}}'
    assert args.count("--speculative-config") == 1


def test_flash_mtp_on_blackwell_drafts_two_tokens() -> None:
    assert PROFILES["Flash"].args_for("b200", ["mtp"])[-1] == '{"method":"mtp","num_speculative_tokens":2}'
