"""A tiny Llama-architecture model in Hugging Face layout, with random weights and made without torch.

The local sandbox has no GPU and no internet, yet the kit must show that it can carry weights, hash them and serve
them with vLLM. This module writes a model small enough for vLLM's CPU build on two cores. For a given seed the output
is byte-identical wherever and however often it is made, so a sha256 manifest of it never changes.

    python -m enclave.sandbox.tinymodel DEST [--seed N] [--shape tiny|1b]

The `1b` shape (about a billion parameters, same tokenizer) is for the GPU smoke check (tests/gpu/gpu_check.py),
where a model that small would measure nothing but overhead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from enclave.errors import EnclaveError, UsageError
from enclave.weights import TINY_MODEL_REPO

HIDDEN_SIZE = 128
NUM_HEADS = 2
NUM_KV_HEADS = 2
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS  # 64; vLLM's CPU attention rejects head_dim 16
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
MAX_POSITIONS = 512


@dataclass(frozen=True)
class Shape:
    """A Llama architecture's sizes. head_dim is hidden / heads."""

    name: str
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    layers: int
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


TINY = Shape("tiny", HIDDEN_SIZE, NUM_HEADS, NUM_KV_HEADS, INTERMEDIATE_SIZE, NUM_LAYERS, MAX_POSITIONS)
# TinyLlama-1.1B's layer sizes (the embeddings are small here: the vocabulary is the tiny one): ~0.97B parameters.
ONE_B = Shape("1b", hidden=2048, heads=32, kv_heads=4, intermediate=5632, layers=22, max_positions=2048)
SHAPES = {shape.name: shape for shape in (TINY, ONE_B)}

TARGET_VOCAB = 512  # what the trainer aims for; config.json records what it actually made
INIT_STD = 0.02

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD)  # ids 0..3; the first three in Llama's own order

SHARD_NAMES = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")

# Plain Jinja with no newline right after a tag, so it renders the same with or without the trim_blocks and
# lstrip_blocks options that transformers turns on. bos_token is in the template because vLLM tokenizes a rendered
# chat without adding special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Written for this module; only its statistics matter. Changing one character changes the tokenizer and so
# every file's hash.
CORPUS = """\
The lighthouse keeper climbed the stairs every evening at six. There were one hundred and twelve steps, and she
counted each of them out loud, because counting kept her breathing steady and her mind on the work.
At the top she wiped the glass, trimmed the wick, and wrote the weather in the log: wind from the west, light rain,
a long swell coming in from the open sea. Ships passed far out, and none of them knew her name.

In the valley below, the farmers were bringing in the last of the harvest. Wheat, barley and oats filled the barns.
The children carried water to the fields in tin buckets, and the dogs ran ahead of them, barking at the crows.
When the sun went down, the families sat together at long wooden tables and shared bread, cheese, apples and soup.
An old man told a story about a winter so cold that the river froze from one bank to the other for forty days.

A computer is a machine that follows instructions. It reads numbers from memory, adds them, compares them, and
writes the results back. A program is a list of such instructions, written by people who hope the machine will do
what they meant and not only what they said. Good programs are small, clear and tested. Bad programs are large,
clever and surprising. Every engineer has written both kinds, usually in the same week.

The cluster stood in a quiet room with no windows and no network cable to the outside world. Every package, every
model file and every line of configuration had to be carried in on a disk, checked against a list of hashes, and
only then unpacked. The operators liked it that way. Nothing left the room, and nothing came in without a receipt.
When a new model arrived, they compared its checksums twice, read its license, and wrote down who had approved it.

Question: What is the capital of France?
Answer: The capital of France is Paris.
Question: How many days are there in a week?
Answer: There are seven days in a week: Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.
Question: What colour is the sky on a clear day?
Answer: On a clear day the sky is blue, because air scatters blue light more than red light.
Question: Can you count from one to ten?
Answer: One, two, three, four, five, six, seven, eight, nine, ten. Or in digits: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.

The recipe is simple. Take two cups of flour, one cup of warm water, a spoon of salt and a little yeast. Mix them in
a bowl, cover it with a cloth, and wait for an hour while the dough rises. Then shape it, bake it in a hot oven for
thirty minutes, and let it cool before you cut it. The smell of fresh bread will fill the whole house.

She asked the assistant a question, and the assistant answered politely. It said that it did not know everything,
but that it would try to help. It explained the steps one at a time, checked its arithmetic, and admitted when it
was unsure. Then it asked whether the answer was useful, and whether there was anything else she wanted to know.

The train left the station at a quarter past nine. Through the window the passengers watched the city give way to
suburbs, the suburbs to fields, and the fields to forest and hills. A conductor walked down the aisle checking
tickets. A baby slept. Two students argued about a book they had both read and neither had finished.
By noon the mountains were close, white at the top and dark green below, and the air in the carriage felt cooler.
"""

LICENSE_TEXT = """\
MIT License

Copyright (c) enclave sandbox tiny model

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def make_tiny_model(dest: Path, *, seed: int = 0, shape: Shape = TINY) -> list[Path]:
    """Write the whole model into `dest` (new or empty) and return the files written, sorted by name."""
    _prepare_dest(dest)
    tokenizer = train_tokenizer()
    vocab_size = tokenizer.get_vocab_size()
    written = [
        _write_json(dest / "config.json", model_config(tokenizer, shape)),
        _write_json(dest / "generation_config.json", _special_ids(tokenizer)),
        *_write_weights(dest, random_tensors(vocab_size, seed=seed, shape=shape), shape),
        _write_text(dest / "tokenizer.json", tokenizer.to_str(pretty=True)),
        _write_json(dest / "tokenizer_config.json", tokenizer_config(tokenizer, shape)),
        _write_text(dest / "LICENSE", LICENSE_TEXT),
        _write_text(dest / "README.md", _readme(seed, vocab_size, shape)),
    ]
    return sorted(written)


def train_tokenizer() -> Tokenizer:
    """Train a byte-level BPE on the built-in corpus.

    Byte-level means every input has an encoding, so the model never meets text it cannot read. The trainer breaks
    ties between equally frequent pairs by token id, so the result does not depend on thread count (the tests check).
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    # Plain prompts (the completions API) get <s> as Llama's do; rendered chats carry it in the template instead.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return tokenizer


def model_config(tokenizer: Tokenizer, shape: Shape = TINY) -> dict[str, Any]:
    """config.json. `vocab_size` must equal the embedding rows, or vLLM fails an assertion at engine start."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": INIT_STD,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "use_cache": True,
        "vocab_size": tokenizer.get_vocab_size(),
        **_special_ids(tokenizer),
    }


def tokenizer_config(tokenizer: Tokenizer, shape: Shape = TINY) -> dict[str, Any]:
    """tokenizer_config.json: what transformers (and so vLLM) needs beyond tokenizer.json to load and chat."""
    added = {
        str(tokenizer.token_to_id(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": shape.max_positions,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def tensor_shapes(vocab_size: int, shape: Shape = TINY) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of a Llama checkpoint with its shape (out, in for linears), in a fixed order.

    The order is part of the output: random values are drawn in it.
    """
    h, attn, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    yield "model.embed_tokens.weight", (vocab_size, h)
    for layer in range(shape.layers):
        prefix = f"model.layers.{layer}"
        yield f"{prefix}.self_attn.q_proj.weight", (attn, h)
        yield f"{prefix}.self_attn.k_proj.weight", (kv, h)
        yield f"{prefix}.self_attn.v_proj.weight", (kv, h)
        yield f"{prefix}.self_attn.o_proj.weight", (h, attn)
        yield f"{prefix}.mlp.gate_proj.weight", (shape.intermediate, h)
        yield f"{prefix}.mlp.up_proj.weight", (shape.intermediate, h)
        yield f"{prefix}.mlp.down_proj.weight", (h, shape.intermediate)
        yield f"{prefix}.input_layernorm.weight", (h,)
        yield f"{prefix}.post_attention_layernorm.weight", (h,)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (vocab_size, h)


def random_tensors(vocab_size: int, *, seed: int, shape: Shape = TINY) -> dict[str, np.ndarray]:
    """Float16 weights: normal(0, INIT_STD) for matrices, ones for the RMS norms (their usual start).

    numpy's legacy RandomState, not default_rng: its stream is frozen by numpy's compatibility policy, so the same
    seed gives the same bytes under any numpy version; default_rng's streams may change between releases.
    """
    rng = np.random.RandomState(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, dims in tensor_shapes(vocab_size, shape):
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(dims, dtype=np.float16)
        else:
            tensors[name] = (rng.standard_normal(dims) * INIT_STD).astype(np.float16)
    return tensors


def shard_of(name: str, shape: Shape = TINY) -> str:
    """Embeddings and the first half of the layers in shard 1, the rest and the head in shard 2.

    Two shards, though the model would fit in one, so the sandbox exercises the index file real checkpoints use.
    """
    if name.startswith("model.layers."):
        return SHARD_NAMES[0] if int(name.split(".")[2]) < shape.layers // 2 else SHARD_NAMES[1]
    return SHARD_NAMES[0] if name == "model.embed_tokens.weight" else SHARD_NAMES[1]


def _write_weights(dest: Path, tensors: dict[str, np.ndarray], shape: Shape = TINY) -> list[Path]:
    """The two shards and model.safetensors.index.json (total_size counts tensor bytes, as transformers does)."""
    weight_map = {name: shard_of(name, shape) for name in tensors}
    written = []
    for shard in SHARD_NAMES:
        part = {name: tensor for name, tensor in tensors.items() if weight_map[name] == shard}
        # "format": "pt" is what transformers requires of a safetensors file; nothing else goes in the header.
        save_file(part, str(dest / shard), metadata={"format": "pt"})
        # safetensors leaves the file 0600; a serving user other than the maker must be able to read it.
        (dest / shard).chmod(0o644)
        written.append(dest / shard)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    written.append(_write_json(dest / "model.safetensors.index.json", index))
    return written


def _special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """bos/eos/pad ids taken from the trained tokenizer, so config and tokenizer cannot disagree."""
    return {
        "bos_token_id": tokenizer.token_to_id(BOS),
        "eos_token_id": tokenizer.token_to_id(EOS),
        "pad_token_id": tokenizer.token_to_id(PAD),
    }


def _readme(seed: int, vocab_size: int, shape: Shape = TINY) -> str:
    return (
        f"# {TINY_MODEL_REPO}\n\n"
        "Random weights for testing: this model knows nothing and answers with gibberish.\n\n"
        f"Made by `python -m enclave.sandbox.tinymodel DEST --seed {seed}"
        + ("" if shape == TINY else f" --shape {shape.name}")
        + "`, without torch, so that enclave's local\n"
        "sandbox can carry, hash and serve a model end to end on CPUs. The same seed gives byte-identical files.\n\n"
        f"Llama architecture: {shape.layers} layers, hidden {shape.hidden}, {shape.heads} heads of {shape.head_dim}, "
        "float16.\n"
        f"Tokenizer: byte-level BPE of {vocab_size} tokens trained on a few paragraphs of built-in text.\n\n"
        "License: MIT (see LICENSE).\n"
    )


def _prepare_dest(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} is not an empty directory; give a new or empty one for the tiny model")
    dest.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    """Sorted keys, fixed indent and a final newline: the same data always gives the same bytes."""
    return _write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def _write_text(path: Path, text: str) -> Path:
    """UTF-8 with exactly one final newline, written as bytes so no platform newline translation applies."""
    path.write_bytes((text.rstrip("\n") + "\n").encode("utf-8"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m enclave.sandbox.tinymodel",
        description=f"Write the random-weight test model {TINY_MODEL_REPO} into DEST.",
    )
    parser.add_argument("dest", type=Path, metavar="DEST", help="a new or empty directory")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: 0)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=TINY.name,
                        help="tiny (default: the sandbox's) or 1b (about a billion parameters, for GPUs)")
    args = parser.parse_args(argv)
    try:
        written = make_tiny_model(args.dest, seed=args.seed, shape=SHAPES[args.shape])
    except EnclaveError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {len(written)} files to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
