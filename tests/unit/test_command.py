from __future__ import annotations

from pathlib import Path

from enclave.runner.command import PlaybookRequest, playbook_args


def test_plain_request_has_no_options() -> None:
    assert playbook_args(PlaybookRequest("site.yml", Path("/inv")), None) == []


def test_every_option_maps_to_ansible_playbook_flags() -> None:
    request = PlaybookRequest("site.yml", Path("/inv"), check=True, diff=True, limit="node1,gw",
                              tags=("base", "weights"), skip_tags=("engine",), verbosity=7, flush_cache=True,
                              vault_password_file=Path("/secret/vault-pass"))
    assert playbook_args(request, Path("/run/x/extra-vars.json")) == [
        "--check", "--diff", "--limit", "node1,gw", "--tags", "base,weights", "--skip-tags", "engine",
        "--flush-cache", "--vault-password-file", "/secret/vault-pass",
        "--extra-vars", "@/run/x/extra-vars.json", "-vvvv"]


def test_extra_var_values_never_appear_in_arguments() -> None:
    request = PlaybookRequest("site.yml", Path("/inv"), extra_vars={"hf_token": "hf_secret_value"})
    args = playbook_args(request, Path("/run/x/extra-vars.json"))
    assert not any("hf_secret_value" in a for a in args)


def test_each_inventory_has_its_own_fact_cache(tmp_path: Path) -> None:
    from enclave.ansible_env import ansible_env

    one, two = tmp_path / "a" / "hosts.yml", tmp_path / "b" / "hosts.yml"
    first, second = ansible_env(one), ansible_env(two)
    assert first["ANSIBLE_CACHE_PLUGIN_CONNECTION"] != second["ANSIBLE_CACHE_PLUGIN_CONNECTION"]
    assert ansible_env(one)["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == first["ANSIBLE_CACHE_PLUGIN_CONNECTION"]
