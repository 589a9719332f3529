"""The gateway's client keys as `enclave keys` keeps them (enclave.gateway.keys): add, rotate with a grace period,
revoke, list; the one file written atomically and privately; ansible-vault encryption checked with the real
`ansible-vault` reading its password from a file; inventories that set the keys elsewhere refused, not edited;
and the regex nginx uses to stop taking a retired key on time (filter_plugins/enclave_keys.py)."""

from __future__ import annotations

import importlib.util
import random
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from enclave.errors import UsageError
from enclave.gateway import keys
from tests.unit.test_inventory import write_inventory

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
VAULT = str(Path(sys.executable).with_name("ansible-vault"))
KEY_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{20,200}$")  # the gateway role's key pattern


def _filters() -> object:
    path = Path(__file__).resolve().parents[2] / "playbooks" / "filter_plugins" / "enclave_keys.py"
    spec = importlib.util.spec_from_file_location("enclave_keys_filters", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_add_gives_a_new_client_a_fresh_key_and_refuses_an_existing_name() -> None:
    ring = keys.KeyRing()
    key = keys.add(ring, "team-a", NOW)
    assert KEY_RE.fullmatch(key) and ring.keys == {"team-a": key}
    assert ring.dates == {"team-a": {"created": "2026-12-05T08:00:00Z"}}
    assert keys.add(ring, "team-b", NOW) != key
    with pytest.raises(UsageError, match="'team-a' already has a key"):
        keys.add(ring, "team-a", NOW)
    assert ring.keys["team-a"] == key


@pytest.mark.parametrize("name", ["", "team a", "a/b", "x" * 65, "-e\n", "team-a\n"])
def test_client_names_follow_the_roles_rule(name: str) -> None:
    with pytest.raises(UsageError, match="is not a client name"):
        keys.add(keys.KeyRing(), name, NOW)


def test_the_name_rule_is_the_one_the_role_and_the_inventory_checks_use() -> None:
    from enclave.roles import role_data

    pattern = role_data("gateway", "vars")["gateway_client_pattern"]
    roles = Path(__file__).resolve().parents[2] / "playbooks" / "roles"
    assert "item.key is ansible.builtin.regex(gateway_client_pattern)" in (
        roles / "gateway" / "tasks" / "validate.yml").read_text()
    settings = (Path(keys.__file__).parents[1] / "plan" / "settings.py").read_text()
    assert "gateway_client_pattern" in settings and "1,64}" not in settings
    assert re.fullmatch(pattern, "a.b_c-9") and not re.fullmatch(pattern, "a b")


def test_rotate_keeps_the_old_key_until_the_grace_ends() -> None:
    ring = keys.KeyRing()
    old = keys.add(ring, "team-a", NOW)
    later = NOW + timedelta(hours=1)
    new = keys.rotate(ring, "team-a", timedelta(hours=24), later)
    assert new != old and ring.keys == {"team-a": new}
    expires = int((later + timedelta(hours=24)).timestamp())
    assert ring.retired == [{"name": "team-a", "key": old, "expires": expires}]
    assert ring.dates["team-a"] == {"created": "2026-12-05T08:00:00Z", "rotated": "2026-12-05T09:00:00Z"}
    [info] = keys.listing(ring, later)
    assert info.retired_until == (datetime.fromtimestamp(expires, UTC),)
    # once the grace is over the next change drops the old key's value from the file
    keys.add(ring, "team-b", later + timedelta(hours=25))
    assert ring.retired == []


def test_rotate_with_no_grace_keeps_nothing_and_unknown_clients_are_refused() -> None:
    ring = keys.KeyRing({"team-a": "a" * 30})
    keys.rotate(ring, "team-a", timedelta(0), NOW)
    assert ring.retired == [] and ring.keys["team-a"] != "a" * 30
    with pytest.raises(UsageError, match=r"no client 'nobody'.*clients: team-a"):
        keys.rotate(ring, "nobody", timedelta(hours=1), NOW)


def test_revoke_removes_the_client_and_its_retired_keys() -> None:
    ring = keys.KeyRing()
    keys.add(ring, "team-a", NOW)
    keys.add(ring, "team-b", NOW)
    keys.rotate(ring, "team-a", timedelta(hours=1), NOW)
    keys.rotate(ring, "team-b", timedelta(hours=1), NOW)
    keys.revoke(ring, "team-a", NOW)
    assert set(ring.keys) == {"team-b"} and [r["name"] for r in ring.retired] == ["team-b"]
    assert "team-a" not in ring.dates
    with pytest.raises(UsageError, match="no client 'team-a'"):
        keys.revoke(ring, "team-a", NOW)
    with pytest.raises(UsageError, match="'team-b' is the gateway's last client"):
        keys.revoke(ring, "team-b", NOW)
    assert set(ring.keys) == {"team-b"}


@pytest.mark.parametrize(("text", "grace"), [("24h", timedelta(hours=24)), ("60s", timedelta(seconds=60)),
                                             ("30m", timedelta(minutes=30)), ("7d", timedelta(days=7)),
                                             ("0", timedelta(0))])
def test_grace_durations(text: str, grace: timedelta) -> None:
    assert keys.parse_grace(text) == grace


@pytest.mark.parametrize("text", ["", "1w", "-5m", "24", "h", "91d", "1.5h"])
def test_bad_grace_durations_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--grace"):
        keys.parse_grace(text)


def test_the_file_is_private_round_trips_and_holds_only_the_keys_variables(tmp_path: Path) -> None:
    path = tmp_path / "group_vars" / "enclave_gateway" / "api_keys.yml"
    ring = keys.KeyRing()
    keys.add(ring, "team-a", NOW)
    keys.rotate(ring, "team-a", timedelta(hours=2), NOW)
    keys.save(path, ring, None, encrypted=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load(path, None) == ring
    assert set(yaml.safe_load(path.read_text())) == {"gateway_api_keys", "gateway_retired_api_keys",
                                                      "gateway_api_key_dates"}
    assert keys.load(tmp_path / "none.yml", None) == keys.KeyRing()


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "api_keys.yml"
    ring = keys.KeyRing()
    keys.add(ring, "team-a", NOW)
    keys.save(path, ring, None, encrypted=False)
    before = path.read_text()
    keys.add(ring, "team-b", NOW)

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys.os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        keys.save(path, ring, None, encrypted=False)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["api_keys.yml"]  # no temporary file left behind


@pytest.mark.parametrize(("text", "message"), [
    ("gateway_api_keys: {a: x}\nengine_api_key: y\n", "holds engine_api_key"),
    ("gateway_api_keys: [a]\n", "must map client names"),
    ("gateway_api_keys: {a: '{{ vault_a }}'}\n", "holds a template"),
    ("gateway_retired_api_keys: [{name: a, key: x}]\n", "gateway_retired_api_keys must be a list"),
    ("[1, 2]\n", "expected a mapping"),
])
def test_a_malformed_file_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "api_keys.yml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        keys.load(path, None)
    assert str(path) in str(caught.value)


def _password(tmp_path: Path, secret: str = "correct horse battery") -> Path:  # noqa: S107 - a test's vault
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "vault-pass"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def test_vault_encrypted_file_is_read_by_the_real_ansible_vault(tmp_path: Path) -> None:
    password = _password(tmp_path)
    inventory = write_inventory(tmp_path)
    store = keys.KeyStore(inventory, password)
    ring = store.read()
    key = keys.add(ring, "team-a", NOW)
    store.write(ring)
    text = store.path.read_text()
    assert text.startswith("$ANSIBLE_VAULT;1.1;AES256") and key not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    shown = subprocess.run([VAULT, "view", "--vault-password-file", str(password), str(store.path)],
                           capture_output=True, text=True, check=True, timeout=120)
    assert yaml.safe_load(shown.stdout)["gateway_api_keys"] == {"team-a": key}
    # and what ansible-vault encrypts, the verbs read; without the password they refuse, naming the file
    plain = tmp_path / "plain.yml"
    plain.write_text(yaml.safe_dump({"gateway_api_keys": {"team-b": "b" * 30}}))
    subprocess.run([VAULT, "encrypt", "--vault-password-file", str(password), str(plain)], capture_output=True,
                   check=True, timeout=120)
    assert keys.load(plain, password).keys == {"team-b": "b" * 30}
    with pytest.raises(UsageError, match=f"{plain}: vault-encrypted; pass --vault-password-file"):
        keys.load(plain, None)
    with pytest.raises(UsageError, match="cannot decrypt it"):
        keys.load(plain, _password(tmp_path / "wrong", "wrong password"))


def test_an_encrypted_file_stays_encrypted_and_the_environments_password_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = _password(tmp_path)
    inventory = write_inventory(tmp_path)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    store = keys.KeyStore(inventory, None)
    ring = store.read()
    keys.add(ring, "team-a", NOW)
    store.write(ring)
    assert store.path.read_text().startswith("$ANSIBLE_VAULT")
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE")
    with pytest.raises(UsageError, match="vault-encrypted"):
        keys.KeyStore(inventory, None).read()
    assert set(keys.KeyStore(inventory, password).read().keys) == {"team-a"}


def test_keys_set_inline_in_the_hosts_file_are_refused(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, all_vars={"gateway_api_keys": {"team-a": "a" * 30}})
    with pytest.raises(UsageError) as caught:
        keys.KeyStore(inventory, None).check_owned()
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert f"{inventory} (group 'all'): gateway_api_keys" in message and "a" * 30 not in message
    assert not keys.keys_file(inventory).exists()


def test_keys_in_another_vars_file_are_refused_even_when_vaulted(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    other = tmp_path / "group_vars" / "all" / "gateway.yml"
    other.parent.mkdir(parents=True)
    other.write_text(yaml.safe_dump({"gateway_api_keys": {"team-a": "a" * 30}}))
    with pytest.raises(UsageError, match=f"{other} \\(group 'all'\\): gateway_api_keys"):
        keys.KeyStore(inventory, None).check_owned()
    password = _password(tmp_path)
    subprocess.run([VAULT, "encrypt", "--vault-password-file", str(password), str(other)], capture_output=True,
                   check=True, timeout=120)
    with pytest.raises(UsageError, match=f"{other} \\(group 'all'\\): gateway_api_keys"):
        keys.KeyStore(inventory, password).check_owned()
    other.unlink()
    keys.KeyStore(inventory, password).check_owned()  # only the verbs' own file: nothing to refuse


def test_before_regex_matches_exactly_the_earlier_epoch_seconds() -> None:
    filters = _filters()
    rng = random.Random(17)  # noqa: S311 - reproducible test cases, not secrets
    for _ in range(5000):
        expiry = rng.randrange(10**9, 10**10)
        for when in (expiry - 1, expiry, expiry + 1, rng.randrange(10**9, 10**10), 10**9, 10**10 - 1):
            regex = filters.before_regex(expiry)  # type: ignore[attr-defined]
            assert "\\" not in regex
            assert bool(re.fullmatch(regex, str(when))) == (when < expiry), (expiry, when)
    assert filters.utc_time(1764921600) == "2025-12-05T08:00:00Z"  # type: ignore[attr-defined]
    from ansible.errors import AnsibleFilterError

    for bad in (0, 10**10, "soon"):
        with pytest.raises(AnsibleFilterError):
            filters.before_regex(bad)  # type: ignore[attr-defined]



def _role_checks(tmp_path: Path, retired: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    from tests.unit.role_render import run_play

    tmp_path.mkdir(parents=True)
    groups = {"enclave_nodes": {"n1": {"ansible_host": "127.0.0.11"}},
              "enclave_gateway": {"gw": {"ansible_host": "127.0.0.10"}}}
    return run_play(tmp_path, roles=["gateway"], groups=groups, hosts="enclave_gateway",
                    task_files=("gateway/tasks/validate.yml",),
                    extra={"enclave_private_network": "127.0.0.0/8", "gateway_engine_api_key": "e" * 30,
                           "gateway_api_keys": {"team-a": "a" * 30}, "gateway_retired_api_keys": retired})


def test_the_roles_own_checks_refuse_a_bad_retired_key(tmp_path: Path) -> None:
    good = {"name": "team-a", "key": "o" * 30, "expires": 1767225600}
    assert _role_checks(tmp_path / "good", [good]).returncode == 0
    for i, (bad, message) in enumerate((({**good, "name": "ghost"}, "entry for 'ghost' must name a client"),
                                        ({**good, "expires": "soon"}, "entry for 'team-a' must name a client"),
                                        ({**good, "key": "a" * 30}, "two gateway_api_keys entries share one key"))):
        proc = _role_checks(tmp_path / f"bad{i}", [bad])
        assert proc.returncode != 0 and message in " ".join(proc.stdout.split()), proc.stdout[-2000:]
        assert "o" * 30 not in proc.stdout  # no_log: the old key never reaches the output


def test_a_sandbox_made_before_keeps_its_keys_in_the_verbs_file(tmp_path: Path) -> None:
    from enclave.sandbox import client_keys as sandbox

    inventory = write_inventory(tmp_path)
    earlier = {name: "enc-" + name[-1] * 40 for name in sandbox.CLIENTS}
    old = tmp_path / "group_vars" / "all" / "gateway.yml"
    old.parent.mkdir(parents=True)
    old.write_text(yaml.safe_dump({"gateway_api_keys": earlier, "gateway_client_limits": sandbox.LIMITS}))
    sandbox.write_gateway_vars(tmp_path)
    assert sandbox.read_gateway_keys(tmp_path) == earlier
    assert "gateway_api_keys" not in yaml.safe_load(old.read_text())
    keys.KeyStore(inventory, None).check_owned()  # the verbs can now edit them
    assert stat.S_IMODE(keys.keys_file(inventory).stat().st_mode) == 0o600
