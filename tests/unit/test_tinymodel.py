from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from safetensors import safe_open
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from enclave.errors import UsageError
from enclave.sandbox import tinymodel
from enclave.sandbox.tinymodel import HIDDEN_SIZE, INTERMEDIATE_SIZE, NUM_LAYERS, SHARD_NAMES, make_tiny_model

# Pinned so a dependency upgrade that changes the bytes (numpy's RandomState stream, safetensors' header layout)
# is noticed here rather than as a manifest mismatch on a cluster.
SEED0_SHARD1_SHA256 = "028bc693318f6bacbdf73be8cf3398205915bd7c4e9c48ab15b719e9a1eeadb6"


def digests(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.iterdir())}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_model(dest)
    return dest


@pytest.fixture(scope="module")
def tensors(model_dir: Path) -> dict[str, np.ndarray]:
    merged: dict[str, np.ndarray] = {}
    for shard in SHARD_NAMES:
        merged.update(load_file(str(model_dir / shard)))
    return merged


def test_same_seed_gives_the_same_bytes_in_and_out_of_process(model_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    written = make_tiny_model(again)
    assert [p.name for p in written] == sorted(digests(model_dir))
    # Another process with one tokenizer thread and another hash seed: training and dict order must not matter.
    env = {**os.environ, "RAYON_RS_NUM_CPUS": "1", "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, "-m", "enclave.sandbox.tinymodel", str(tmp_path / "sub"), "--seed", "0"],
        check=True,
        env=env,
        capture_output=True,
    )
    assert digests(again) == digests(model_dir) == digests(tmp_path / "sub")
    assert digests(model_dir)["model-00001-of-00002.safetensors"] == SEED0_SHARD1_SHA256


def test_another_seed_changes_the_weights_only(model_dir: Path, tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "seed1", seed=1)
    first, other = digests(model_dir), digests(tmp_path / "seed1")
    changed = {name for name in first if first[name] != other[name]}
    assert changed == {*SHARD_NAMES, "README.md"}


def test_vocab_size_matches_embeddings_head_and_tokenizer(model_dir: Path, tensors: dict[str, np.ndarray]) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    vocab = config["vocab_size"]
    assert 512 <= vocab <= 1024
    assert vocab == tokenizer.get_vocab_size() == tensors["model.embed_tokens.weight"].shape[0]
    assert vocab == tensors["lm_head.weight"].shape[0]
    assert config["head_dim"] * config["num_attention_heads"] == config["hidden_size"]
    assert config["head_dim"] == 64  # vLLM's CPU attention rejects 16


def test_special_ids_agree_with_the_tokenizer(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    generation = json.loads((model_dir / "generation_config.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    for role in ("bos", "eos", "pad"):
        token_id = tokenizer.token_to_id(tok_config[f"{role}_token"])
        assert config[f"{role}_token_id"] == generation[f"{role}_token_id"] == token_id
    assert tokenizer.token_to_id(tok_config["unk_token"]) is not None
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_config["model_max_length"] == config["max_position_embeddings"]


def test_index_covers_every_tensor_and_counts_their_bytes(model_dir: Path) -> None:
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    in_shards: dict[str, str] = {}
    total = 0
    for shard in SHARD_NAMES:
        with safe_open(str(model_dir / shard), framework="numpy") as f:
            assert f.metadata() == {"format": "pt"}
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                in_shards[name] = shard
                total += f.get_tensor(name).nbytes
    assert index["weight_map"] == in_shards
    assert index["metadata"]["total_size"] == total


def test_tensors_have_llama_names_shapes_and_float16(tensors: dict[str, np.ndarray]) -> None:
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    assert {name: array.shape for name, array in tensors.items()} == dict(tinymodel.tensor_shapes(vocab))
    assert len(tensors) == 3 + 9 * NUM_LAYERS
    assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (HIDDEN_SIZE, INTERMEDIATE_SIZE)
    assert all(array.dtype == np.float16 for array in tensors.values())
    weights = tensors["model.layers.0.self_attn.q_proj.weight"].astype(np.float32)
    assert 0.01 < weights.std() < 0.03 and np.isfinite(weights).all()


def test_tokenizer_round_trips_a_sentence(model_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    sentence = "The operators checked every hash twice, then served the model: ünïcode too!"
    encoding = tokenizer.encode(sentence)
    assert encoding.ids[0] == tokenizer.token_to_id("<s>")
    assert tokenizer.token_to_id("<unk>") not in encoding.ids
    assert tokenizer.decode(encoding.ids) == sentence


@pytest.mark.parametrize("trim", [False, True], ids=["plain", "transformers-options"])
def test_chat_template_renders_a_conversation(model_dir: Path, trim: bool) -> None:
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    env = ImmutableSandboxedEnvironment(trim_blocks=trim, lstrip_blocks=trim)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    rendered = env.from_string(tok_config["chat_template"]).render(
        messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )
    assert rendered == "<s><|system|>\nBe brief.</s>\n<|user|>\nHello?</s>\n<|assistant|>\n"


def test_license_and_readme_travel_with_the_weights(model_dir: Path) -> None:
    license_text = (model_dir / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "Copyright (c) enclave sandbox tiny model" in license_text
    assert "random weights" in (model_dir / "README.md").read_text().lower()


def test_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty directory"):
        make_tiny_model(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_reports_a_bad_destination_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("")
    assert tinymodel.main([str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("UsageError: ")


def test_the_1b_shape_for_the_gpu_check_has_about_a_billion_parameters() -> None:
    shapes = dict(tinymodel.tensor_shapes(512, tinymodel.ONE_B))
    params = sum(math.prod(dims) for dims in shapes.values())
    assert 0.9e9 < params < 1.1e9
    assert shapes["model.layers.21.self_attn.k_proj.weight"] == (4 * 64, 2048)
    assert tinymodel.shard_of("model.layers.11.mlp.up_proj.weight", tinymodel.ONE_B) == SHARD_NAMES[1]
    assert tinymodel.shard_of("model.layers.10.mlp.up_proj.weight", tinymodel.ONE_B) == SHARD_NAMES[0]
