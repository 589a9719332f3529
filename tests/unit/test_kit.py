"""The offline site kit, built for real on this machine: apt repository (this machine's apt), signed manifest
(ssh-keygen), verify refusing a tampered or missing file, and a delta that rebuilds a fresh build's manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from enclave.errors import UsageError
from enclave.kit import apt, build, delta, manifest, verify
from enclave.kit.build import KitContent, WeightsSource
from enclave.kit.manifest import KitKey, KitRefused
from enclave.sandbox.tinymodel import make_tiny_model

REV = "0123456789abcdef0123456789abcdef01234567"
LINES: list[str] = []


def _wheel(directory: Path, name: str, body: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-1.0-py3-none-any.whl"
    path.write_bytes(body)
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KitKey, apt.SigningKey]:
    home = tmp_path_factory.mktemp("keys")
    return KitKey(home / "kit-key"), apt.SigningKey(home / "apt-key", uid="test kit <kit@enclave.invalid>")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, keys: tuple[KitKey, apt.SigningKey]) -> build.BuiltKit:
    """One real kit: acl and its dependencies from this machine's apt, an NVIDIA package apt cannot fetch here,
    a local wheelhouse, the tiny model."""
    work = tmp_path_factory.mktemp("kit")
    model = work / "model"
    make_tiny_model(model)
    content = KitContent(packages=("acl",), gpu_packages=("nvidia-open",),
                         wheelsets={"controller": ()}, local_wheels={"controller": (_wheel(work / "w", "tiny", b"x"),)},
                         weights=WeightsSource(repo="org/tiny", revision=REV, source_dir=model))
    return build.build(content, work / "out", key=keys[0], apt_key=keys[1], report=LINES.append)


def _signers(kit: build.BuiltKit) -> str:
    return manifest.allowed_signers_for_pin(kit.path, kit.fingerprint)


def test_a_kit_missing_gpu_packages_says_so(kit: build.BuiltKit) -> None:
    doc = json.loads((kit.path / "KIT.json").read_text())
    assert doc["complete"] is False and doc["missing"] == ["package nvidia-open"]
    assert any("cannot fetch package nvidia-open" in line for line in LINES)
    names = {f["path"] for f in doc["files"]}
    assert {"apt/Packages", "apt/InRelease", "wheels/controller/requirements.txt"} <= names
    assert any(n.startswith("apt/acl_") and n.endswith(".deb") for n in names)
    assert any(n.startswith(f"weights/org--tiny--{REV}/files/") for n in names)
    sums = (kit.path / "KIT.sha256").read_text().splitlines()
    assert len(sums) == len(doc["files"])


def test_the_signature_verifies_with_ssh_keygen(kit: build.BuiltKit, tmp_path: Path) -> None:
    signers = tmp_path / "allowed"
    signers.write_text(_signers(kit))
    proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "enclave-kit", "-n",
                           "enclave-kit", "-s", str(kit.path / "KIT.json.sig")],
                          input=(kit.path / "KIT.json").read_bytes(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert verify.verify_kit(kit.path, _signers(kit))["complete"] is False


def test_apt_resolves_the_packages_from_the_kit_alone(kit: build.BuiltKit, tmp_path: Path) -> None:
    root = tmp_path / "aptroot"
    for d in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/lib/dpkg"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    keyring = tmp_path / "kit.gpg"
    subprocess.run(["gpg", "--batch", "--dearmor", "-o", str(keyring), str(kit.path / build.APT_KEY)], check=True)
    (root / "etc/apt/sources.list").write_text(f"deb [signed-by={keyring}] file:{kit.path / 'apt'} ./\n")
    opts = ["-o", f"Dir={root}", "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
            "-o", "Dir::Etc::trusted=/dev/null", "-o", "Dir::Etc::trustedparts=/dev/null", "-o", "Debug::NoLocking=1"]
    update = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True, check=False)
    assert update.returncode == 0 and "NO_PUBKEY" not in update.stderr, update.stdout + update.stderr
    sim = subprocess.run(["apt-get", *opts, "--simulate", "install", "acl"], capture_output=True, text=True,
                         check=False)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert "Inst acl " in sim.stdout and "Inst libc6 " in sim.stdout


def test_a_tampered_file_is_refused_by_name(kit: build.BuiltKit, tmp_path: Path) -> None:
    copy = tmp_path / "kit"
    shutil.copytree(kit.path, copy)
    target = next((copy / "apt").glob("acl_*.deb"))
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(KitRefused, match=rf"apt/{target.name}: sha256 differs"):
        verify.verify_kit(copy, _signers(kit))


def test_a_missing_file_is_refused_by_name(kit: build.BuiltKit, tmp_path: Path) -> None:
    copy = tmp_path / "kit"
    shutil.copytree(kit.path, copy)
    (copy / "wheels/controller/requirements.txt").unlink()
    with pytest.raises(KitRefused, match=r"wheels/controller/requirements\.txt: missing"):
        verify.verify_kit(copy, _signers(kit))


def test_another_key_and_an_edited_manifest_are_refused(kit: build.BuiltKit, tmp_path: Path) -> None:
    with pytest.raises(KitRefused, match="not the pinned"):
        verify.signers_text(kit.path, pin="SHA256:" + "A" * 43, allowed_signers=None)
    copy = tmp_path / "kit"
    shutil.copytree(kit.path, copy)
    doc = json.loads((copy / "KIT.json").read_text())
    doc["complete"] = True
    (copy / "KIT.json").write_text(manifest.render(doc))
    with pytest.raises(KitRefused, match="verify the signature"):
        verify.verify_kit(copy, _signers(kit))


def test_a_delta_applied_to_the_old_kit_equals_a_fresh_build(keys: tuple[KitKey, apt.SigningKey],
                                                             tmp_path: Path) -> None:
    def content(version: bytes) -> KitContent:
        wheels = (_wheel(tmp_path / "src", "same", b"unchanged"), _wheel(tmp_path / f"v{version!r}", "moving", version))
        return KitContent(wheelsets={"controller": ()}, local_wheels={"controller": wheels})

    key, apt_key = keys
    old = build.build(content(b"1"), tmp_path / "old", key=key, apt_key=apt_key, report=LINES.append)
    fresh = build.build(content(b"2"), tmp_path / "fresh", key=key, apt_key=apt_key, report=LINES.append)
    made = build.build(content(b"2"), tmp_path / "delta", key=key, apt_key=apt_key, report=LINES.append,
                       since=old.path)
    carried = set(manifest.list_files(made.path))
    assert carried == {"wheels/controller/moving-1.0-py3-none-any.whl", "wheels/controller/requirements.txt"}
    signers = manifest.allowed_signers_for_pin(made.path, made.fingerprint)
    delta.apply(old.path, made.path, tmp_path / "new", signers, LINES.append)
    assert (tmp_path / "new/KIT.json").read_bytes() == (fresh.path / "KIT.json").read_bytes()
    verify.verify_kit(tmp_path / "new", signers)
    with pytest.raises(KitRefused, match="made for a base kit"):
        delta.apply(fresh.path, made.path, tmp_path / "wrong", signers, LINES.append)


def test_cli_verify_names_the_tampered_file_and_exits_1(kit: build.BuiltKit, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from enclave.cli import app

    copy = tmp_path / "kit"
    shutil.copytree(kit.path, copy)
    good = CliRunner().invoke(app, ["kit", "verify", str(copy), "--pin", kit.fingerprint])
    assert good.exit_code == 0 and "INCOMPLETE, missing package nvidia-open" in good.output
    (copy / "wheels/controller/requirements.txt").write_text("tampered\n")
    bad = CliRunner().invoke(app, ["kit", "verify", str(copy), "--pin", kit.fingerprint])
    assert bad.exit_code == 1 and "wheels/controller/requirements.txt: size" in bad.output
    assert "Traceback" not in bad.output
    usage = CliRunner().invoke(app, ["kit", "verify", str(copy)])
    assert usage.exit_code == 2 and "--pin FINGERPRINT or --allowed-signers FILE" in usage.output


@pytest.mark.slow
def test_the_controller_lock_installs_the_cli_with_no_index(tmp_path: Path) -> None:
    """The controller wheelhouse (PyPI downloads + the enclave wheel of this checkout) installs `enclave` into a
    fresh venv with --no-index --require-hashes: what the inside does with nothing but the kit."""
    import sys

    from enclave.kit import content, wheels

    source = wheels.checkout()
    assert source is not None
    own = wheels.build_own_wheel(source, tmp_path / "own", isolated=False)
    house = tmp_path / "wheels" / "controller"
    lock = wheels.download(house, content.controller_requirements(), local_wheels=(own,))
    assert "llm-enclave==" in lock.read_text() and "--hash=sha256:" in lock.read_text()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": "/dev/null"}
    done = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "--no-index", "--find-links", str(house), "--require-hashes", "-r", str(lock)],
                          capture_output=True, text=True, timeout=600, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = subprocess.run([str(venv / "bin/enclave"), "kit", "--help"], capture_output=True, text=True,
                         timeout=120, check=False, env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert ran.returncode == 0 and "apply-delta" in ran.stdout, ran.stdout + ran.stderr


PLAN = {"repo": "org/tiny", "revision": REV, "hardware_class": "cpu"}


def _roles(directory: Path, packages: list[str]) -> Path:
    """A roles directory whose one package list is `packages`: the kit check reads lists from the roles."""
    (directory / "base" / "defaults").mkdir(parents=True)
    (directory / "base" / "defaults" / "main.yml").write_text(f"base_packages: {packages}\n")
    return directory


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory, keys: tuple[KitKey, apt.SigningKey]) -> build.BuiltKit:
    """A kit holding everything a cpu plan needs when the roles install only acl (wheels stand in by name:
    the check reads locks and hashes, it installs nothing)."""
    from enclave.kit import check, content

    work = tmp_path_factory.mktemp("full")
    model = work / "model"
    make_tiny_model(model)
    names = ["llm_enclave", *(check._requirement_name(r).replace("-", "_") for r in content.controller_requirements())]
    controller = tuple(_wheel(work / "c", name, name.encode()) for name in names)
    engine = work / content.engine_build(PLAN).name
    vllm = _wheel(engine, "vllm", b"engine")
    (engine / "requirements.txt").write_text(f"vllm==1.0 --hash=sha256:{manifest.sha256_file(vllm)}\n")
    (engine / "bundle.json").write_text("{}\n")
    wanted = KitContent(packages=tuple(apt.role_packages(_roles(work / "roles", ["acl"]), ["base_packages"])),
                        wheelsets={"controller": (), "hub-client": ()},
                        local_wheels={"controller": controller,
                                      "hub-client": (_wheel(work / "h", "huggingface_hub", b"hub"),)},
                        engine_wheelhouse=engine, weights=WeightsSource("org/tiny", REV, source_dir=model))
    return build.build(wanted, work / "kit", key=keys[0], apt_key=keys[1], report=LINES.append)


def test_check_passes_a_kit_holding_what_the_roles_need(full: build.BuiltKit, tmp_path: Path) -> None:
    from enclave.kit import check

    doc = verify.verify_kit(full.path, _signers(full))
    assert check.problems(full.path, doc, PLAN, _roles(tmp_path / "roles", ["acl"])) == []


def test_check_refuses_a_kit_missing_one_package_naming_it(full: build.BuiltKit, tmp_path: Path) -> None:
    from enclave.kit import check

    doc = verify.verify_kit(full.path, _signers(full))
    with pytest.raises(check.KitIncomplete, match=r"package chrony: not in the kit's apt repository") as caught:
        check.check(full.path, doc, PLAN, _roles(tmp_path / "roles", ["acl", "chrony"]))
    assert caught.value.exit_code == 2
    from enclave import paths

    gpu = {**PLAN, "hardware_class": "h200"}  # a GPU plan needs NVIDIA's packages and the CUDA engine build
    roles = _roles(tmp_path / "gpu", ["acl"])
    shutil.copytree(paths.roles_dir() / "nvidia", roles / "nvidia")
    found = check.problems(full.path, doc, gpu, roles)
    assert "package nvidia-open: not in the kit's apt repository (apt/Packages)" in found
    assert "package datacenter-gpu-manager-4-core: not in the kit's apt repository (apt/Packages)" in found
    assert any(p.startswith("wheels/engine/vllm-") and "-cuda-" in p for p in found)


def test_check_finds_a_package_whose_dependency_is_gone(full: build.BuiltKit, tmp_path: Path) -> None:
    from enclave.kit import check

    copy = tmp_path / "kit"
    shutil.copytree(full.path, copy)
    for deb in (copy / "apt").glob("libacl1_*.deb"):
        deb.unlink()
    apt.index(copy / "apt", apt.SigningKey(tmp_path / "key", uid="x <x@enclave.invalid>"), label="t")
    shutil.copy2(tmp_path / "key" / "public.asc", copy / build.APT_KEY)
    found = check.problems(copy, {"files": manifest.hash_tree(copy, LINES.append)}, PLAN,
                           _roles(tmp_path / "roles", ["acl"]))
    assert len(found) == 1 and "apt cannot install the packages from the kit alone" in found[0]
    assert "libacl1" in found[0]


def test_cli_check_exits_2_naming_a_missing_package(full: build.BuiltKit, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from enclave.cli import app
    from enclave.plan import planfile

    inventory = tmp_path / "inv" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text("all: {}\n")
    planfile.write(inventory, PLAN)
    result = CliRunner().invoke(app, ["kit", "check", str(full.path), "-i", str(inventory), "--pin",
                                      full.fingerprint])
    # The real roles install chrony, nginx, nftables...: this kit (acl only) lacks them.
    assert result.exit_code == 2 and "package chrony: not in the kit's apt repository" in result.output
    assert "Traceback" not in result.output


def test_import_settings_point_every_role_at_the_kit_with_pinned_locks(full: build.BuiltKit, tmp_path: Path) -> None:
    import yaml

    from enclave.kit import content, importer

    doc = verify.verify_kit(full.path, _signers(full))
    where = importer.staging_plan(full.path, "http://10.9.0.5:8090/kit/")
    kit_id = manifest.sha256_file(full.path / "KIT.json")[:16]
    assert where.dest == f"/srv/enclave/kit/{kit_id}" and where.url == f"http://10.9.0.5:8090/kit/{kit_id}/"
    engine = content.engine_build(PLAN).name
    inventory = tmp_path / "inv" / "hosts.yml"
    inventory.parent.mkdir()
    written = importer.write_settings(inventory, importer.settings(full.path, doc, PLAN, where, engine))
    assert written == tmp_path / "inv/group_vars/all/enclave_kit.yml"
    values = yaml.safe_load(written.read_text())
    [source] = values["enclave_apt_sources"]
    assert source["uris"] == [f"{where.url}apt/"] and source["suites"] == ["./"]
    assert source["key"] == (full.path / build.APT_KEY).read_text() and values["enclave_apt_sources_exclusive"]
    assert values["engine_wheelhouse_url"] == f"{where.url}wheels/engine/{engine}/"
    assert values["engine_wheelhouse_lock_sha256"] == manifest.sha256_file(
        full.path / f"wheels/engine/{engine}/requirements.txt")
    assert values["weights_hub_client_lock_sha256"] == manifest.sha256_file(
        full.path / "wheels/hub-client/requirements.txt")
    assert values["weights_source"] == {"type": "local",
                                        "path": f"{{{{ offline_kit_root }}}}/{kit_id}/weights/org--tiny--{REV}/files"}
    assert values["offline_kit_root"] + f"/{kit_id}" == where.dest
    # the offline_kit role's settings: what the staging host checks its copy against, where to copy it from, where
    # to serve it
    assert values["offline_kit_sha256"] == manifest.sha256_file(full.path / "KIT.json")
    assert values["offline_kit_source"] == str(full.path.resolve())
    assert (values["offline_kit_port"], values["offline_kit_url_path"]) == (8090, "/kit")
    for bad in ("ftp://x/", "https://10.9.0.5/kit", "http://10.9.0.5:8090/", "http://10.9.0.5/a b",
                "http://10.9.0.5:99999/kit", "http://10.9.0.5/kit?x=1"):
        with pytest.raises(UsageError, match="--serve-url"):
            importer.staging_plan(full.path, bad)


def test_the_kit_is_served_by_the_staging_host_by_default_and_only_by_it(full: build.BuiltKit,
                                                                          tmp_path: Path) -> None:
    from enclave.kit import importer
    from enclave.plan.inventory import Inventory

    inventory = Inventory(tmp_path / "hosts.yml", {"enclave_staging": ["stage"], "enclave_nodes": ["n1"]},
                          {"stage": {"ansible_host": "10.9.0.5"}, "n1": {"ansible_host": "10.9.0.11"}})
    url = importer.default_serve_url(inventory)
    assert url == "http://10.9.0.5:8090/kit"  # the offline_kit role's default port and path
    where = importer.staging_plan(full.path, url, inventory)
    assert where.url == f"http://10.9.0.5:8090/kit/{where.kit_id}/" and where.dest.startswith("/srv/enclave/kit/")
    assert importer.staging_plan(full.path, "http://stage:9000/site/kits/", inventory).url.startswith(
        "http://stage:9000/site/kits/")
    with pytest.raises(UsageError, match=r"served by the staging host stage \(10.9.0.5\)"):
        importer.staging_plan(full.path, "http://10.9.0.11:8090/kit", inventory)
    two = Inventory(tmp_path / "hosts.yml", {"enclave_staging": ["a", "b"]}, {"a": {}, "b": {}})
    with pytest.raises(UsageError, match="must hold exactly one host to serve the kit; has a, b"):
        importer.default_serve_url(two)


def test_import_refuses_an_inventory_that_would_override_the_kit(full: build.BuiltKit, tmp_path: Path) -> None:
    """The example inventory names its own mirrors in group_vars/all/sources.yml, which Ansible would read after
    enclave_kit.yml: the import names each clashing setting; without them the real validator accepts the kit's."""
    import yaml

    from enclave import paths
    from enclave.kit import content, importer
    from enclave.runner.inventory import validate

    inventory = tmp_path / "inv"
    shutil.copytree(paths.share_dir() / "inventory" / "h200-cluster", inventory)
    doc = verify.verify_kit(full.path, _signers(full))
    values = importer.settings(full.path, doc, PLAN, importer.staging_plan(full.path, "http://10.9.0.5:8090/kit"),
                               content.engine_build(PLAN).name)
    sources = inventory / "group_vars/all/sources.yml"
    with pytest.raises(UsageError, match=rf"{sources}: enclave_apt_sources;") as caught:
        importer.write_settings(inventory, values)
    assert f"{sources}: weights_hub_client_lock_sha256" in str(caught.value)
    kept = {k: v for k, v in yaml.safe_load(sources.read_text()).items() if k not in values}
    sources.write_text(yaml.safe_dump(kept))
    importer.write_settings(inventory, values)
    validate(inventory, reachable=False, required=("weights",))


def test_cli_build_refuses_bad_input_before_downloading(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from enclave.cli import app
    from enclave.plan import planfile

    inventory = tmp_path / "inv" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text("all: {}\n")
    runner = CliRunner()
    no_plan = runner.invoke(app, ["kit", "build", "-i", str(inventory), "--out", str(tmp_path / "k")])
    assert no_plan.exit_code == 2 and "no plan for" in no_plan.output
    planfile.write(inventory, PLAN)
    (tmp_path / "exists").mkdir()
    taken = runner.invoke(app, ["kit", "build", "-i", str(inventory), "--out", str(tmp_path / "exists")])
    assert taken.exit_code == 2 and "exists; a kit is built into a new directory" in taken.output
    since = runner.invoke(app, ["kit", "build", "-i", str(inventory), "--out", str(tmp_path / "k"),
                                "--since", str(tmp_path)])
    assert since.exit_code == 2 and "no KIT.json there" in since.output
    assert not (tmp_path / "k").exists()


def test_check_names_cpu_only_wheels_in_a_gpu_plans_engine_wheelhouse(keys: tuple[KitKey, apt.SigningKey],
                                                                      tmp_path: Path) -> None:
    """A build machine whose pip found PyTorch's +cpu wheels first makes a CUDA wheelhouse GPU nodes cannot use:
    the self-test names the wheel (measured here: this machine's pip finds links with torch+cpu)."""
    from enclave.kit import check, content

    gpu = {**PLAN, "hardware_class": "h200"}
    engine = tmp_path / content.engine_build(gpu).name
    wheels = [_wheel(engine, "vllm", b"engine"), _wheel(engine, "torch", b"cpu torch")]
    torch = wheels[1].rename(engine / wheels[1].name.replace("-1.0-", "-2.13.0+cpu-"))
    (engine / "requirements.txt").write_text(
        f"vllm==1.0 --hash=sha256:{manifest.sha256_file(wheels[0])}\n"
        f"torch==2.13.0+cpu --hash=sha256:{manifest.sha256_file(torch)}\n")
    (engine / "bundle.json").write_text("{}\n")
    made = build.build(KitContent(engine_wheelhouse=engine), tmp_path / "kit", key=keys[0], apt_key=keys[1],
                       report=LINES.append)
    from enclave import paths

    roles = tmp_path / "roles"
    shutil.copytree(paths.roles_dir() / "nvidia", roles / "nvidia")
    found = check.problems(made.path, verify.verify_kit(made.path, _signers(made)), gpu, roles)
    lock = f"wheels/engine/{engine.name}/requirements.txt"
    assert f"{lock}: torch==2.13.0+cpu is a CPU-only build (the GPU nodes would run without their GPUs)" in found
    assert not any("vllm==1.0" in p for p in found)
