# Two entry points: `make run` (dev node) and `make test` (whole suite). Both set up .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# First interpreter >= 3.11 found on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: run test lint bench setup lock clean sysdeps zk-tools device-wheels

setup: $(STAMP)

# Exactly the versions in requirements.lock (runtime + dev, transitive included), then the project itself
# without dependency resolution, so consensus-critical packages (cbor2, pynacl, numpy, plyvel, libp2p)
# are the same bytes on every node and in CI.
$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 not found on PATH" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# Regenerate requirements.lock: a clean resolve of pyproject.toml (runtime + [dev]) in a throwaway venv.
# LOCK_CHECK: other interpreters to install the new lock on (each in its own throwaway venv); the header
# records where it installed and where it failed. Interpreters that are missing or < 3.11 are skipped.
LOCK_CHECK ?= python3.12 python3.13
lock:
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 not found on PATH" >&2; exit 1; }
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q -e '.[dev]'; \
	ver=$$("$$tmp/venv/bin/python" -c 'import platform as p; print("Python", p.python_version(), "on", p.system(), p.machine())'); \
	"$$tmp/venv/bin/python" -m pip freeze --exclude-editable > "$$tmp/pins"; \
	mine=$$("$$tmp/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	ok=""; bad=""; for p in $(LOCK_CHECK); do \
	  v=$$($$p -c 'import sys; assert sys.version_info >= (3, 11); print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue; \
	  [[ "$$v" != "$$mine".* ]] || continue; \
	  echo "installing the lock on Python $$v ($$p)"; \
	  if $$p -m venv "$$tmp/v$$v" && "$$tmp/v$$v/bin/python" -m pip install -q -r "$$tmp/pins"; \
	  then ok="$$ok, $$v"; else bad="$$bad, $$v"; echo "warning: the lock does not install on $$p" >&2; fi; \
	  rm -rf "$$tmp/v$$v"; done; \
	{ echo "# Exact pins for aitbc-peer: runtime dependencies, the [dev] extra, and everything they pull in."; \
	  echo "# \`make setup\` (so \`make run\`, \`make test\`, CI) installs exactly these, then the project with --no-deps."; \
	  echo "# Consensus-critical (must be identical on every node): cbor2, pynacl, numpy, plyvel, libp2p, rbcl."; \
	  echo "# Do not edit by hand: change pyproject.toml, then regenerate with \`make lock\` (clean resolve in a"; \
	  echo "# throwaway venv: pip install -e '.[dev]'; pip freeze --exclude-editable)."; \
	  echo "# Generated with $$ver.$${ok:+ Also installs on Python $${ok#, }.}$${bad:+ Failed to install on Python $${bad#, } (see the make lock output).}"; \
	  echo "# Not included: the gpu extra (pycuda): pip install -e '.[gpu]' after make setup."; \
	  cat "$$tmp/pins"; } > requirements.lock; \
	echo "wrote requirements.lock ($$(grep -c '==' requirements.lock) pins)"

TEST_JOBS ?= auto  # pytest-xdist workers: one per core

# Wheels for the GPU checks on a lent device (bench/device_check.sh; docs/gpu.md "On a lent GPU"): the
# project's imports the device image lacks, at the lock's versions, for CPython 3.12, and PyCUDA with its
# dependencies from ../shared/wheels. Git-ignored; carried with run(carry=[".device"]).
DEVICE_PKGS := cbor2 pynacl cffi pycparser trio outcome sniffio sortedcontainers attrs idna pytest-trio plyvel rbcl barriers mclbn256
SHARED_WHEELS ?= ../shared/wheels
device-wheels: $(STAMP)
	rm -rf .device/wheels && mkdir -p .device/wheels
	pins=$$(for p in $(DEVICE_PKGS); do grep -i "^$$p==" requirements.lock; done); \
	$(VENV)/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform any -d .device/wheels $$pins
	cp $(SHARED_WHEELS)/pycuda-*-cp312-*.whl $(SHARED_WHEELS)/siphash24-*-cp312-*.whl \
	  $(SHARED_WHEELS)/pytools-*.whl $(SHARED_WHEELS)/platformdirs-*.whl $(SHARED_WHEELS)/mako-*.whl .device/wheels/
	@ls .device/wheels | wc -l | xargs echo "wheels in .device/wheels:"; du -sh .device

run: $(STAMP)
	exec $(VENV)/bin/aitbc-peer run --dev $(ARGS)

# System tools the suite drives for real: Debian's chromium (web pages, via Playwright), prometheus
# (promtool rule tests, a live Prometheus scraping a testnet) and zsh (the zsh completion script).
# Installed with apt-get when missing and running as root; otherwise those tests skip and say what to install.
sysdeps:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v zsh >/dev/null || missing="$$missing zsh"; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: missing$$missing (apt-get install$$missing); their tests will skip" >&2; fi; \
	fi

# The optional prover of zk/ (snarkjs, exactly as in zk/circuits/package-lock.json): the node never needs it,
# the tests that make real proofs do (they skip and say what to install when Node.js is missing).
ZK_TOOLS := zk/circuits/node_modules/.package-lock.json
$(ZK_TOOLS): zk/circuits/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix zk/circuits --no-audit --no-fund --loglevel=error; \
	else echo "warning: npm missing (Node.js >= 18); the zk proving tests will skip" >&2; fi

zk-tools: $(ZK_TOOLS)

test: $(STAMP) sysdeps zk-tools
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.all

clean:
	rm -rf $(VENV) build *.egg-info
