# enclave: the two commands a user needs are `make demo` and `make test`.
# Each installs what it needs on a fresh Debian 12 machine (a .venv here, host packages through apt).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The one list of Debian packages a fresh machine needs for `make demo` and `make test`: the tools the sandbox
# runs (debootstrap, systemd-nspawn, ip, gpg, apt-ftparchive, chronyd), the real validators and servers the unit
# tests run (nginx, nft, systemd-analyze, openssl, promtool, amtool), what the integration tests and the controller
# side of the roles run (tc, pgrep, ssh, rsync). tests/host_tools.py maps each tool to its package and
# tests/unit/test_host_packages.py fails when a tool the code runs is missing here.
HOST_PACKAGES := debootstrap systemd-container iproute2 openssh-client gnupg apt-utils chrony nftables systemd \
	nginx libnginx-mod-http-js openssl procps rsync coreutils dpkg apt git prometheus prometheus-alertmanager

.PHONY: demo test unit integration lint bench host-packages print-host-packages check-fresh venv clean sandbox-down

demo: venv host-packages
	$(BIN)/enclave sandbox up
	$(BIN)/enclave plan
	$(BIN)/enclave deploy
	$(BIN)/enclave verify
	$(BIN)/enclave status
	$(BIN)/enclave chat --client sandbox-demo "In one sentence: what is an air-gapped network?"

# The unit tier runs on every core (pytest-xdist, each module whole on one worker, so module fixtures are built once
# and a module's tests never race each other): its tests mostly wait on subprocesses (ansible-playbook, nginx,
# promtool). The integration tier stays serial: its modules share one deployed sandbox.
# The tiers overlap (tests/tiers.py): once the integration tier's first deploy is done, the rest of that tier keeps
# the CPU only about half busy, and the unit tier fills those gaps beside it at a lower priority (nice 10). Its
# output is printed once both are done. Both tiers always run; make test fails when either does; Ctrl-C stops both.
test: venv host-packages
	$(BIN)/python -m tests.tiers

unit: venv
	$(BIN)/pytest -n auto --dist loadfile tests/unit

integration: venv host-packages
	ENCLAVE_INTEGRATION=required $(BIN)/pytest tests/integration

lint: venv
	$(BIN)/ruff check src tests bench
	PATH="$(CURDIR)/$(BIN):$$PATH" ansible-lint --profile production --offline playbooks

bench: venv host-packages
	$(BIN)/python bench/noop_rerun.py

sandbox-down: venv
	$(BIN)/enclave sandbox down

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,sandbox]'
	touch $@

host-packages:
	@missing=""; for p in $(HOST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing host packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

print-host-packages:
	@echo $(HOST_PACKAGES)

# Rehearses a fresh machine without one: a bare Debian 12 root (debootstrap minbase) plus only HOST_PACKAGES
# must hold every tool tests/host_tools.py maps (about 3 minutes; the bare root is cached).
check-fresh: venv host-packages
	$(BIN)/python -m tests.check_fresh $(HOST_PACKAGES)

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache src/*.egg-info

# The GPU smoke check (docs/runbooks/gpu-check.md); ENCLAVE_GPU_CHECK_WHEELHOUSE adds a vLLM run. On a machine
# without a GPU it prints one line saying it was skipped and exits 0.
.PHONY: gpu-check
gpu-check: venv
	$(BIN)/python -m tests.gpu.gpu_check
