"""What a kit must hold for one inventory, decided from its plan and the roles' own defaults (never re-decided):
the roles' package lists (nvidia's only when the plan's hardware has GPUs), the controller's and the hub client's
wheels, the engine wheelhouse for the plan's engine build, the plan's model at its pinned revision."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from enclave.engine.build import EngineBuild
from enclave.kit import apt
from enclave.kit.build import KitContent, WeightsSource

PACKAGE_LISTS = apt.HOST_PACKAGE_LISTS  # GPU hosts add the nvidia role's (gpu_packages)
HUB_CLIENT = "huggingface_hub"


def has_gpus(plan: dict[str, Any]) -> bool:
    return str(plan.get("hardware_class", "cpu")) != "cpu"


def engine_build(plan: dict[str, Any]) -> EngineBuild:
    """The engine build the plan's hardware runs: CUDA on GPUs, the CPU build otherwise (the sandbox's)."""
    return EngineBuild(kind="cuda" if has_gpus(plan) else "cpu")


def gpu_packages(roles_dir: Path) -> list[str]:
    """The nvidia role's driver (its default for the cuda source and module), fabric manager and DCGM packages."""
    role = roles_dir / "nvidia"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    internal = yaml.safe_load((role / "vars" / "main.yml").read_text()) or {}
    branch = str(defaults["nvidia_driver_branch"])
    driver = defaults.get("nvidia_driver_packages") or internal["nvidia_default_driver_packages"][
        defaults["nvidia_package_source"]][defaults["nvidia_kernel_module"]]
    fabric = str(defaults["nvidia_fabricmanager_package"]).replace("{{ nvidia_driver_branch }}", branch)
    names = [str(p).replace("{branch}", branch) for p in driver] + [fabric]
    return sorted({*names, *(str(p) for p in defaults.get("nvidia_dcgm_packages") or [])})


def controller_requirements() -> list[str]:
    """The enclave CLI's own dependencies as its installed metadata declares them (extras left out)."""
    found = metadata.requires("llm-enclave") or []
    return [r.split(";")[0].strip() for r in found if "extra ==" not in r]


def hub_client_requirement() -> str:
    return f"{HUB_CLIENT}=={metadata.version(HUB_CLIENT)}"


def plan_packages(plan: dict[str, Any], roles_dir: Path, *,
                  gpu: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every host's packages, the GPU hosts' NVIDIA packages) the roles install for this plan."""
    return (tuple(apt.role_packages(roles_dir, PACKAGE_LISTS)),
            tuple(gpu_packages(roles_dir)) if gpu and has_gpus(plan) else ())


def for_plan(plan: dict[str, Any], roles_dir: Path, *, gpu: bool = True, weights_source: Path | None = None,
             endpoint: str | None = None, with_weights: bool = True, engine_wheelhouse: Path | None = None,
             own_wheel: Path | None = None, split_bytes: int | None = None) -> KitContent:
    weights = None
    if with_weights:
        weights = WeightsSource(repo=str(plan["repo"]), revision=str(plan["revision"]), source_dir=weights_source,
                                endpoint=endpoint)
    packages, gpu_only = plan_packages(plan, roles_dir, gpu=gpu)
    return KitContent(
        packages=packages, gpu_packages=gpu_only,
        wheelsets={"controller": tuple(controller_requirements()), "hub-client": (hub_client_requirement(),)},
        local_wheels={"controller": (own_wheel,)} if own_wheel else {},
        engine_wheelhouse=engine_wheelhouse, weights=weights, split_bytes=split_bytes)
