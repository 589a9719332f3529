"""Model profiles: data files, so a fact about a model is one edit.

Shipped profiles live in the package (src/enclave/profiles/*.yml); an operator adds or replaces one with a file of
the same shape in `<inventory dir>/profiles/NAME.yml` (found first). Every key is checked; an error names the file
and the key. The schema, with what each key means, is in docs/planning.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enclave.errors import InventoryError, UsageError
from enclave.inventory_layout import kit_dir
from enclave.revision import RULE, is_revision

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
OPERATOR_SUBDIR = "profiles"  # next to the inventory: <dir>/profiles/*.yml (<dir>/.profiles in a directory inventory)
# A model name is a profile's file name in a profiles directory: no path, so it never reaches outside them.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
PARALLELISM_STYLES = ("data-expert", "tensor")
# cpu: nodes without GPUs (the sandbox); the rest are GPU classes as enclave.plan.parallelism names them.
_CLASS_RE = re.compile(r"[a-z][a-z0-9]*")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_KEYS = {"name", "repo", "revision", "served_model_name", "size_gb", "min_gpu_memory_gb", "moe",
         "readiness_timeout_s", "parallelism", "engine", "hardware", "options", "description"}
_ENGINE_KEYS = {"args", "single_host_args", "env"}
_OPTION_KEYS = {"description", "args", "env", "hardware"}
_OPTION_RE = re.compile(r"[a-z][a-z0-9-]*")
# Flags the plan or the engine role set themselves: a profile that sets them would fight the planner.
_RESERVED_FLAGS = ("--model", "--host", "--port", "--api-key", "--served-model-name", "--tensor-parallel-size",
                   "-tp", "--pipeline-parallel-size", "-pp", "--data-parallel-size", "-dp",
                   "--enable-expert-parallel", "--nnodes", "--node-rank", "--master-addr", "--headless")


class ProfileError(InventoryError):
    """A model profile that cannot be used; `problems` names each key."""


@dataclass(frozen=True)
class EngineSettings:
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Added only to replicas on one host: flags that break a replica spanning hosts (on CPU, --enforce-eager
    # fails pipeline parallel at the first request, see the shared notes) but save time where they are safe.
    single_host_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileOption:
    """An opt-in setting (the inventory's enclave_model_options names it), such as MTP speculative decoding: the
    recipe leaves it off by default. A hardware class's entry replaces the option's own flags on that class."""

    description: str = ""
    settings: EngineSettings = EngineSettings()
    hardware: Mapping[str, EngineSettings] = field(default_factory=dict)

    def for_class(self, hardware_class: str) -> EngineSettings:
        return self.hardware.get(hardware_class, self.settings)


@dataclass(frozen=True)
class ModelProfile:
    name: str
    repo: str
    size_gb: float
    min_gpu_memory_gb: float
    revision: str | None = None  # None: the inventory must pin one (enclave_model_revision)
    served_model_name: str = ""
    moe: bool = False
    readiness_timeout_s: int = 600
    parallelism: str = "tensor"  # how one node's devices are split by default: data-expert | tensor
    engine: EngineSettings = EngineSettings()  # every hardware class
    hardware: Mapping[str, EngineSettings] = field(default_factory=dict)  # per class, added to `engine`
    options: Mapping[str, ProfileOption] = field(default_factory=dict)  # opt-in, by name
    source: Path | None = None

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb * 1e9)

    @property
    def hardware_classes(self) -> tuple[str, ...]:
        return tuple(sorted(self.hardware))

    def args_for(self, hardware_class: str, options: Iterable[str] = (), *,
                 single_host: bool = False) -> tuple[str, ...]:
        args = self.engine.args + self.hardware[hardware_class].args
        if single_host:
            args += self.engine.single_host_args + self.hardware[hardware_class].single_host_args
        return args + tuple(a for name in options for a in self.options[name].for_class(hardware_class).args)

    def env_for(self, hardware_class: str, options: Iterable[str] = ()) -> dict[str, str]:
        chosen = {k: v for name in options for k, v in self.options[name].for_class(hardware_class).env.items()}
        return {**self.engine.env, **self.hardware[hardware_class].env, **chosen}

    def check_options(self, value: Any, where: str) -> tuple[str, ...]:
        """The inventory's enclave_model_options for this profile: a list of its option names."""
        if value in (None, ""):
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where} must be a list of option names such as [mtp], got {value!r}")
        unknown = [v for v in value if v not in self.options]
        if unknown:
            known = ", ".join(f"{k} ({o.description})" if o.description else k for k, o in sorted(self.options.items()))
            raise UsageError(f"{where}: {', '.join(map(repr, unknown))} is not an option of the model profile "
                             f"{self.name} (its options: {known or 'none'})")
        return tuple(dict.fromkeys(value))


def search_dirs(inventory: Path | None) -> list[Path]:
    """Where profiles are looked up, first match wins: the operator's directory beside the inventory, then ours."""
    dirs = []
    if inventory is not None:
        dirs.append(kit_dir(inventory, OPERATOR_SUBDIR))
    return [*dirs, PROFILES_DIR]


def available(directories: Iterable[Path] = (PROFILES_DIR,)) -> list[str]:
    return sorted({p.stem for d in directories if d.is_dir() for p in d.glob("*.yml")})


def check_model_name(value: object, where: str) -> str:
    """A model name is a profile name: letters, digits and `._-`, no `/` and no `..`."""
    if not (isinstance(value, str) and NAME_RE.fullmatch(value) and ".." not in value):
        raise UsageError(f"{where} must be a model profile name (letters, digits, '._-'; no '/' or '..'), "
                         f"got {value!r}"[:300])
    return value


def load_profile(name: str, directory: Path | Iterable[Path] = PROFILES_DIR) -> ModelProfile:
    check_model_name(name, "enclave_model")
    directories = [directory] if isinstance(directory, Path) else list(directory)
    for where in directories:
        path = where / f"{name}.yml"
        if path.is_file():
            return parse_profile(path)
    raise UsageError(f"unknown model profile {name!r} (enclave_model); known: {', '.join(available(directories))}"
                     f" (looked in {', '.join(str(d) for d in directories)})")


def parse_profile(path: Path) -> ModelProfile:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a model profile is a mapping of keys, got {type(data).__name__}")
    problems: list[str] = []
    profile = _profile_from(data, path, problems)
    if problems or profile is None:
        raise ProfileError(f"{path}: invalid model profile", problems)
    return profile


def _profile_from(data: dict[str, Any], path: Path, problems: list[str]) -> ModelProfile | None:
    def bad(key: str, why: str) -> None:
        problems.append(f"key '{key}': {why}")

    for key in sorted(set(map(str, data)) - _KEYS):
        bad(key, f"unknown (known keys: {', '.join(sorted(_KEYS))})")
    for key in ("repo", "size_gb", "min_gpu_memory_gb"):
        if key not in data:
            bad(key, "required")
    name = str(data.get("name", path.stem))
    if name != path.stem:
        bad("name", f"{name!r} differs from the file name {path.stem!r}")
    repo = data.get("repo")
    if "repo" in data and not (isinstance(repo, str) and REPO_RE.fullmatch(repo)):
        bad("repo", f"must be 'org/name', got {repo!r}")
    revision = data.get("revision")
    if revision is not None and not is_revision(revision):
        bad("revision", f"must be {RULE} (or null: the inventory pins it), got {revision!r}")
    numbers = {}
    for key in ("size_gb", "min_gpu_memory_gb", "readiness_timeout_s"):
        value = data.get(key)
        if key in data and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            bad(key, f"must be a number >= 0, got {value!r}")
        else:
            numbers[key] = value
    if "readiness_timeout_s" in data and isinstance(numbers.get("readiness_timeout_s"), int | float) \
            and numbers["readiness_timeout_s"] < 1:
        bad("readiness_timeout_s", "must be at least 1 second")
    moe = data.get("moe", False)
    if not isinstance(moe, bool):
        bad("moe", f"must be true or false, got {moe!r}")
    style = data.get("parallelism", "tensor")
    if style not in PARALLELISM_STYLES:
        bad("parallelism", f"must be one of {', '.join(PARALLELISM_STYLES)}, got {style!r}")
    served = data.get("served_model_name", name)
    if not isinstance(served, str) or not served.strip():
        bad("served_model_name", f"must be a non-empty string, got {served!r}")
    engine = _engine(data.get("engine") or {}, "engine", bad)
    hardware: dict[str, EngineSettings] = {}
    raw_hardware = data.get("hardware")
    if not isinstance(raw_hardware, dict) or not raw_hardware:
        bad("hardware", "required: a mapping of hardware class (cpu, h100, h200, b200, ...) to {args, env}")
    else:
        for klass, settings in raw_hardware.items():
            if not (isinstance(klass, str) and _CLASS_RE.fullmatch(klass)):
                bad(f"hardware.{klass}", "a hardware class is a lower-case name such as cpu, h100, h200, b200")
                continue
            hardware[klass] = _engine(settings or {}, f"hardware.{klass}", bad)
    options = _options(data.get("options") or {}, set(hardware), bad)
    if problems:
        return None
    return ModelProfile(name=name, repo=str(repo), size_gb=float(numbers["size_gb"]),
                        min_gpu_memory_gb=float(numbers["min_gpu_memory_gb"]), revision=revision,
                        served_model_name=str(served), moe=bool(moe),
                        readiness_timeout_s=int(numbers.get("readiness_timeout_s") or 600), parallelism=str(style),
                        engine=engine, hardware=hardware, options=options, source=path)


def _options(raw: Any, classes: set[str], bad: Any) -> dict[str, ProfileOption]:
    if not isinstance(raw, dict):
        bad("options", f"must be a mapping of option name to {{description, args, env, hardware}}, got "
                       f"{type(raw).__name__}")
        return {}
    found = {}
    for name, spec in raw.items():
        key = f"options.{name}"
        if not (isinstance(name, str) and _OPTION_RE.fullmatch(name)):
            bad(key, "an option name is lower case letters, digits and -")
            continue
        if not isinstance(spec, dict):
            bad(key, f"must be a mapping with description, args, env, hardware; got {type(spec).__name__}")
            continue
        for extra in sorted(set(map(str, spec)) - _OPTION_KEYS):
            bad(f"{key}.{extra}", f"unknown (known: {', '.join(sorted(_OPTION_KEYS))})")
        settings = _engine({k: spec[k] for k in _ENGINE_KEYS if k in spec}, key, bad)
        per_class: dict[str, EngineSettings] = {}
        raw_classes = spec.get("hardware") or {}
        if not isinstance(raw_classes, dict):
            bad(f"{key}.hardware", f"must be a mapping of hardware class to {{args, env}}, got "
                                   f"{type(raw_classes).__name__}")
            raw_classes = {}
        for klass, entry in raw_classes.items():
            if klass not in classes:
                bad(f"{key}.hardware.{klass}", f"the profile has no hardware class {klass!r} (it has: "
                                               f"{', '.join(sorted(classes))})")
                continue
            per_class[klass] = _engine(entry or {}, f"{key}.hardware.{klass}", bad)
        found[name] = ProfileOption(str(spec.get("description") or ""), settings, per_class)
    return found


def _engine(raw: Any, key: str, bad: Any) -> EngineSettings:
    if not isinstance(raw, dict):
        bad(key, f"must be a mapping with 'args', 'single_host_args' and/or 'env', got {type(raw).__name__}")
        return EngineSettings()
    for extra in sorted(set(map(str, raw)) - _ENGINE_KEYS):
        bad(f"{key}.{extra}", f"unknown (known: {', '.join(sorted(_ENGINE_KEYS))})")
    args, single_host_args = (_args(raw, f"{key}.{name}", name, bad) for name in ("args", "single_host_args"))
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        bad(f"{key}.env", f"must be a mapping of NAME: \"value\", got {type(env).__name__}")
        env = {}
    for name, value in env.items():
        if not (isinstance(name, str) and _ENV_NAME_RE.fullmatch(name)):
            bad(f"{key}.env.{name}", "an environment variable name is upper case, digits and _")
        elif not isinstance(value, str):
            bad(f"{key}.env.{name}", f"values are strings (quote them: \"{value}\")")
    return EngineSettings(args, {str(k): str(v) for k, v in env.items()}, single_host_args)


def _args(raw: dict[str, Any], key: str, name: str, bad: Any) -> tuple[str, ...]:
    args = raw.get(name) or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        bad(key, "must be a list of strings (quote numbers: \"256\")")
        return ()
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _RESERVED_FLAGS:
            bad(key, f"{flag} is set by the planner or the engine role, not by a profile")
    return tuple(args)
