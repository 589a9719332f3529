"""Model profiles: every shipped one loads; operator profiles are found first; bad ones are named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.errors import UsageError
from enclave.plan.profiles import ProfileError, available, load_profile, search_dirs


def test_every_shipped_profile_loads() -> None:
    names = available()
    assert {"deepseek-v4-flash", "deepseek-v4-flash-base", "deepseek-v4-pro", "deepseek-v4-pro-base",
            "sandbox-tiny"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.hardware and profile.readiness_timeout_s >= 1


def test_recipe_facts_are_in_the_flash_profile() -> None:
    flash = load_profile("deepseek-v4-flash")
    assert flash.repo == "deepseek-ai/DeepSeek-V4-Flash" and flash.min_gpu_memory_gb == 170 and flash.moe
    args = flash.args_for("h200")
    for flag in ("--trust-remote-code", "--enable-auto-tool-choice"):
        assert flag in args
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8" and args[args.index("--block-size") + 1] == "256"
    assert args[args.index("--tokenizer-mode") + 1] == "deepseek_v4"
    assert flash.env_for("h200")["VLLM_ENGINE_READY_TIMEOUT_S"] == "3600"
    assert flash.revision is None  # the operator pins it: enclave_model_revision


def test_sandbox_profile_carries_the_cpu_facts() -> None:
    tiny = load_profile("sandbox-tiny")
    assert tiny.hardware_classes == ("cpu",)
    args = tiny.args_for("cpu")
    assert args[args.index("--max-model-len") + 1] == "256"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.2"
    assert tiny.env_for("cpu") == {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    # Eager only where a replica sits on one host (pipeline parallel across CPU hosts fails eager).
    assert "--enforce-eager" not in args
    assert tiny.args_for("cpu", single_host=True) == (*args, "--enforce-eager")


def test_operator_profile_beside_the_inventory_wins(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "sandbox-tiny.yml").write_text(
        "repo: acme/tiny\nrevision: " + "a" * 40 + "\nsize_gb: 1\nmin_gpu_memory_gb: 0\n"
        "hardware: {cpu: {args: [--max-model-len, '128']}}\n")
    profile = load_profile("sandbox-tiny", search_dirs(inventory))
    assert profile.repo == "acme/tiny" and profile.revision == "a" * 40
    assert profile.source == tmp_path / "profiles" / "sandbox-tiny.yml"
    assert "sandbox-tiny" in available(search_dirs(inventory))


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown model profile 'nope'.*deepseek-v4-flash"):
        load_profile("nope")


@pytest.mark.parametrize(("text", "expected"), [
    ("size_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\n", "key 'repo': required"),
    ("repo: x\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\n", "key 'repo': must be 'org/name'"),
    ("repo: a/b\nrevision: main\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\n",
     "key 'revision': must be a 40-hex commit id"),
    ("repo: a/b\nsize_gb: big\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\n", "key 'size_gb': must be a number"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\n", "key 'hardware': required"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {args: [--max-model-len, 256]}}\n",
     "key 'hardware.cpu.args': must be a list of strings"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {env: {VLLM_CPU_KVCACHE_SPACE: 1}}}\n",
     "key 'hardware.cpu.env.VLLM_CPU_KVCACHE_SPACE': values are strings"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nengine: {args: [--port, '1']}\nhardware: {cpu: {}}\n",
     "--port is set by the planner or the engine role"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {single_host_args: [--headless]}}\n",
     "key 'hardware.cpu.single_host_args': --headless is set by the planner or the engine role"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {single_host_args: --enforce-eager}}\n",
     "key 'hardware.cpu.single_host_args': must be a list of strings"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nparallelism: wide\nhardware: {cpu: {}}\n",
     "key 'parallelism': must be one of data-expert, tensor"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardwares: {}\nhardware: {cpu: {}}\n", "key 'hardwares': unknown"),
    ("name: other\nrepo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\n",
     "key 'name': 'other' differs from the file name"),
    ("repo: a/b\nsize_gb: [1\n", "invalid YAML"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\noptions: {mtp: {argz: []}}\n",
     "key 'options.mtp.argz': unknown"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\noptions: {mtp: {hardware: {h200: {}}}}\n",
     "key 'options.mtp.hardware.h200': the profile has no hardware class 'h200'"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\noptions: {Mtp: {}}\n",
     "key 'options.Mtp': an option name is lower case"),
    ("repo: a/b\nsize_gb: 1\nmin_gpu_memory_gb: 0\nhardware: {cpu: {}}\noptions: {mtp: {args: [--port, '1']}}\n",
     "--port is set by the planner or the engine role"),
])
def test_bad_profiles_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "mine.yml").write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profile("mine", tmp_path)
    assert str(tmp_path / "mine.yml") in str(caught.value) and expected in str(caught.value)
    assert caught.value.exit_code == 2


def test_an_option_is_chosen_by_name_and_an_unknown_one_is_refused_naming_the_known() -> None:
    flash = load_profile("deepseek-v4-flash")
    assert flash.check_options(["mtp", "mtp"], "inv: enclave_model_options") == ("mtp",)
    assert flash.check_options(None, "inv") == ()
    with pytest.raises(UsageError, match=r"inv: enclave_model_options: 'mpt' is not an option of the model profile "
                                         r"deepseek-v4-flash \(its options: mtp \(MTP speculative decoding\)\)"):
        flash.check_options(["mpt"], "inv: enclave_model_options")
    with pytest.raises(UsageError, match="must be a list of option names"):
        flash.check_options("mtp", "inv: enclave_model_options")
