"""The gateway's client API keys as the `enclave keys` verbs keep them: one file beside the inventory.

`group_vars/enclave_gateway/api_keys.yml` holds three variables of the gateway role and nothing else:
gateway_api_keys (name -> key), gateway_retired_api_keys (keys replaced by a rotation, each with its absolute
expiry in seconds since the epoch) and gateway_api_key_dates (name -> created/rotated times, never a key). When
the run has a vault password (the verb's --vault-password-file or --ask-vault-pass, or
ANSIBLE_VAULT_PASSWORD_FILE), or the file is already encrypted, the whole file is ansible-vault encrypted with
Ansible's own vault code, the password read from its file; Ansible decrypts it like any vaulted group_vars file.

The verbs own this file only: keys defined anywhere else in the inventory (inline in hosts.yml, group_vars/all, a
host's vars) would outrank it or be outranked by it, so an edit here could silently do nothing or bring an old
key back; those inventories are refused, naming the file, rather than edited. Writes are atomic (a 0600 temporary
file renamed over the old one). Nothing here prints; a key leaves this module only as the return value of `add`
or `rotate`.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from enclave.errors import UsageError
from enclave.inventory_layout import base_dir
from enclave.plan.inventory import collect_variables, read_bounded
from enclave.roles import role_data

KEYS_FILE = Path("group_vars") / "enclave_gateway" / "api_keys.yml"
KEYS, RETIRED, DATES = "gateway_api_keys", "gateway_retired_api_keys", "gateway_api_key_dates"
VARIABLES = (KEYS, RETIRED, DATES)
VAULT_HEADER = "$ANSIBLE_VAULT"
DEFAULT_GRACE = "24h"
MAX_GRACE = timedelta(days=90)
_GRACE_RE = re.compile(r"(\d{1,7})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
HEADER = ("# Written by `enclave keys` (docs/runbooks/gateway.md): the gateway's client API keys. Edit it with those\n"
          "# verbs; gateway_retired_api_keys' expires are seconds since the epoch (UTC).\n")


@dataclass
class KeyRing:
    """The three variables of the keys file."""

    keys: dict[str, str] = field(default_factory=dict)
    retired: list[dict[str, Any]] = field(default_factory=list)
    dates: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyInfo:
    """What `enclave keys list` shows of one client: never a key."""

    name: str
    created: str
    rotated: str
    retired_until: tuple[datetime, ...]


def keys_file(inventory: Path) -> Path:
    return base_dir(inventory) / KEYS_FILE


def check_name(name: str) -> str:
    """The gateway role's rule for a client name (roles/gateway/vars: gateway_client_pattern)."""
    pattern = str(role_data("gateway", "vars")["gateway_client_pattern"])
    if not re.fullmatch(pattern, name):
        raise UsageError(f"{name[:70]!r} is not a client name: 1-64 of A-Z a-z 0-9 _ . - (gateway_client_pattern)")
    return name


def parse_grace(text: str) -> timedelta:
    """"24h", "90m", "60s", "7d" or "0": how long a rotated-out key stays valid, at most MAX_GRACE."""
    match = _GRACE_RE.fullmatch(text.strip())
    if text.strip() == "0":
        return timedelta(0)
    if not match:
        raise UsageError(f"--grace {text!r}: expected a duration like 60s, 30m, 24h or 7d (or 0)")
    grace = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if grace > MAX_GRACE:
        raise UsageError(f"--grace {text}: at most {MAX_GRACE.days}d; an old key should not outlive that")
    return grace


def new_key() -> str:
    """A fresh key the gateway role's key pattern accepts (URL-safe base64 of 32 random bytes)."""
    return "enc-" + secrets.token_urlsafe(32)


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prune(ring: KeyRing, now: datetime) -> None:
    """Drop retired keys whose time is over (nginx already refuses them): their values leave the file."""
    ring.retired = [r for r in ring.retired if int(r["expires"]) > now.timestamp()]


def add(ring: KeyRing, name: str, now: datetime) -> str:
    check_name(name)
    if name in ring.keys:
        raise UsageError(f"client {name!r} already has a key; `enclave keys rotate {name}` replaces it")
    key = new_key()
    ring.keys[name] = key
    ring.dates[name] = {"created": _stamp(now)}
    prune(ring, now)
    return key


def rotate(ring: KeyRing, name: str, grace: timedelta, now: datetime) -> str:
    """A new key for `name`; the old one is kept as retired until now + grace (not at all for a grace of 0)."""
    _known(ring, name)
    old = ring.keys[name]
    key = new_key()
    ring.keys[name] = key
    if grace > timedelta(0):
        ring.retired.append({"name": name, "key": old, "expires": int((now + grace).timestamp())})
    ring.dates.setdefault(name, {})["rotated"] = _stamp(now)
    prune(ring, now)
    return key


def revoke(ring: KeyRing, name: str, now: datetime) -> None:
    """`name` and every key it had, retired ones too, gone at once."""
    _known(ring, name)
    if len(ring.keys) == 1:  # the role refuses a gateway without keys: the run would fail after the file changed
        raise UsageError(f"{name!r} is the gateway's last client; `enclave keys add` another before revoking it")
    del ring.keys[name]
    ring.retired = [r for r in ring.retired if r["name"] != name]
    ring.dates.pop(name, None)
    prune(ring, now)


def listing(ring: KeyRing, now: datetime) -> list[KeyInfo]:
    out = []
    for name in sorted(ring.keys):
        dates = ring.dates.get(name, {})
        until = tuple(sorted(datetime.fromtimestamp(int(r["expires"]), UTC) for r in ring.retired
                             if r["name"] == name and int(r["expires"]) > now.timestamp()))
        out.append(KeyInfo(name, dates.get("created", "?"), dates.get("rotated", "-"), until))
    return out


def _known(ring: KeyRing, name: str) -> None:
    check_name(name)
    if name not in ring.keys:
        raise UsageError(f"no client {name!r} in {KEYS} (clients: {', '.join(sorted(ring.keys)) or 'none'})")


# -- the file -------------------------------------------------------------------------------------------------------
def vault_in_use(given: Path | None) -> Path | None:
    """The run's vault password file, as every Ansible tool of the run gets it (ansible_env)."""
    if given is not None:
        return given
    env = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    return Path(env).expanduser() if env else None


def _vault(password_file: Path) -> Any:
    # Ansible's own vault, so the file is exactly what ansible-vault and ansible-playbook read; its password file
    # may be a script (a vault client), which Ansible's loader runs.
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib, get_file_vault_secret

    secret = get_file_vault_secret(filename=str(password_file), vault_id="default", loader=DataLoader())
    secret.load()
    return VaultLib([("default", secret)]), secret


def decrypt(text: str, password_file: Path | None, where: Path) -> str:
    from ansible.errors import AnsibleError

    if password_file is None:
        raise UsageError(f"{where}: vault-encrypted; pass --vault-password-file FILE or --ask-vault-pass")
    vault, _ = _vault(password_file)
    try:
        return vault.decrypt(text.encode()).decode()
    except AnsibleError as exc:
        raise UsageError(f"{where}: cannot decrypt it with the given vault password ({exc.message})") from None


def encrypt(text: str, password_file: Path) -> str:
    vault, secret = _vault(password_file)
    return vault.encrypt(text.encode(), secret).decode()


def load(path: Path, password_file: Path | None) -> KeyRing:
    """The keys file (an empty ring when there is none yet); a malformed one is refused naming file and key."""
    if not path.exists():
        return KeyRing()
    text = read_bounded(path)
    if text.startswith(VAULT_HEADER):
        text = decrypt(text, password_file, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML ({exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of variables, got {type(data).__name__}")
    other = sorted(str(k) for k in data if k not in VARIABLES)
    if other:
        raise UsageError(f"{path}: holds {', '.join(other)}; this file is `enclave keys`' own and holds only "
                         f"{', '.join(VARIABLES)}: move the others to another group_vars file")
    keys, retired, dates = data.get(KEYS) or {}, data.get(RETIRED) or [], data.get(DATES) or {}
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise UsageError(f"{path}: {KEYS} must map client names to keys (plain strings, not templates)")
    if any("{{" in v for v in keys.values()):
        raise UsageError(f"{path}: {KEYS} holds a template; `enclave keys` edits literal keys only")
    if not isinstance(retired, list) or not all(
            isinstance(r, dict) and set(r) == {"name", "key", "expires"} and isinstance(r["expires"], int)
            for r in retired):
        raise UsageError(f"{path}: {RETIRED} must be a list of {{name, key, expires (epoch seconds)}}")
    if not isinstance(dates, dict):
        raise UsageError(f"{path}: {DATES} must map client names to their dates")
    return KeyRing({str(k): v for k, v in keys.items()}, retired, {str(k): dict(v or {}) for k, v in dates.items()})


def render(ring: KeyRing) -> str:
    return HEADER + yaml.safe_dump({KEYS: dict(sorted(ring.keys.items())),
                                    RETIRED: sorted(ring.retired, key=lambda r: (r["expires"], r["name"])),
                                    DATES: dict(sorted(ring.dates.items()))}, sort_keys=False)


def save(path: Path, ring: KeyRing, password_file: Path | None, *, encrypted: bool) -> None:
    """Replace the keys file in one rename, 0600 from its first byte; vault-encrypted when `encrypted`."""
    text = render(ring)
    if encrypted:
        if password_file is None:
            raise UsageError(f"{path}: to be vault-encrypted, but no vault password was given")
        text = encrypt(text, password_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_encrypted(path: Path) -> bool:
    return path.is_file() and read_bounded(path).startswith(VAULT_HEADER)


def defined_elsewhere(inventory: Path, password_file: Path | None) -> list[str]:
    """Where, other than the keys file, the inventory sets one of its variables: "FILE (group 'x'): NAME"."""
    own = keys_file(inventory).resolve()
    found = []
    for item in collect_variables(inventory):
        if item.file.resolve() == own:
            continue
        names = [v for v in VARIABLES if v in item.values]
        if not names and is_encrypted(item.file) and password_file is not None:
            data = yaml.safe_load(decrypt(read_bounded(item.file), password_file, item.file))
            names = [v for v in VARIABLES if isinstance(data, dict) and v in data]
        found += [f"{item.file} ({item.where}): {name}" for name in names]
    return found


class KeyStore:
    """The keys file of one inventory, read and written with the run's vault password."""

    def __init__(self, inventory: Path, password_file: Path | None) -> None:
        self.inventory = inventory
        self.path = keys_file(inventory)
        self.password_file = vault_in_use(password_file)

    def check_owned(self) -> None:
        """Refuse an inventory that sets the keys anywhere else (exit 2, nothing written)."""
        elsewhere = defined_elsewhere(self.inventory, self.password_file)
        if elsewhere:
            raise UsageError(f"the client keys are set outside {self.path}: " + "; ".join(elsewhere) + ". "
                             "`enclave keys` edits only its own file: move the keys there (one mapping, "
                             f"{KEYS}: {{name: key}}) and remove them from the other file, or edit them by hand")

    def read(self) -> KeyRing:
        return load(self.path, self.password_file)

    def write(self, ring: KeyRing) -> None:
        encrypted = self.password_file is not None or is_encrypted(self.path)
        save(self.path, ring, self.password_file, encrypted=encrypted)

