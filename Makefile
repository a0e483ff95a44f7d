# xapi.backup — one entry point for everything.
#   make demo   the main job (backup + restore + idempotent rerun) on an embedded simulated pool
#   make test   everything: sanity, unit, simulator, helper (on real Python 3.6), integration, molecule, lint
#   make bench  end-to-end benchmarks (not part of `make test`)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT      := $(CURDIR)
VENV      := $(ROOT)/.venv
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip
TMP       := $(ROOT)/.tmp
CACHE     := $(ROOT)/.cache
COLL_BASE := $(TMP)/collections
COLL_LINK := $(COLL_BASE)/ansible_collections/xapi/backup
PYBIN     := $(TMP)/pybin
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
PY36      := $(PYENV_ROOT)/versions/3.6.15/bin/python3.6
VENV36    := $(ROOT)/.venv36
VENV36_NOZSTD := $(ROOT)/.venv36-nozstd
HELPER    := roles/helper/files/xapi-backup-helper
IMAGES    := $(CACHE)/images
APT_PKGS  := openssh-server pigz zstd e2fsprogs iproute2 libxxhash0 time shellcheck qemu-utils

export ANSIBLE_COLLECTIONS_PATH := $(COLL_BASE)
export XAPISIM_IMAGE_DIR := $(IMAGES)
export PATH := $(PYBIN):$(VENV)/bin:$(PATH)

.PHONY: help
help:
	@echo "make demo | make test | make bench | make bench-helper | make sanity | make pytest | make lint"

# ---------------------------------------------------------------- setup
$(VENV)/.stamp: requirements.txt tests/requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -r tests/requirements.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.stamp

# Debian packages the tests and the demo use (sshd for the SSH test hosts, pigz/zstd/gzip for
# side-by-side benchmarks, mkfs.ext4 for realistic disk images).
$(TMP)/.sysdeps:
	@mkdir -p $(TMP)
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $@

.PHONY: sysdeps
sysdeps: $(TMP)/.sysdeps

# ansible-test wants the collection under ansible_collections/<ns>/<name>; pyenv shims break it,
# so a folder of direct interpreter links goes first on PATH.
$(TMP)/.layout:
	mkdir -p $(dir $(COLL_LINK)) $(PYBIN)
	ln -sfn $(ROOT) $(COLL_LINK)
	for v in $(PYENV_ROOT)/versions/3.*; do \
	  b=$$(basename $$v); m=$${b%.*}; ln -sfn $$v/bin/python$$m $(PYBIN)/python$$m; \
	done
	mkdir -p $$HOME/.ansible/test/cache
	cp tests/tools/get_pip_offline.py $$HOME/.ansible/test/cache/get_pip_24_2.py
	touch $@

.PHONY: layout
layout: $(TMP)/.layout

# Realistic guest disks: ext4 filesystems holding real OS files plus free space.
$(IMAGES)/small.img: tests/tools/make-disk-image.sh | $(TMP)/.sysdeps
	mkdir -p $(IMAGES)
	bash tests/tools/make-disk-image.sh $@ 256 small

$(IMAGES)/bench.img: tests/tools/make-disk-image.sh | $(TMP)/.sysdeps
	mkdir -p $(IMAGES)
	bash tests/tools/make-disk-image.sh $@ 2048 full

.PHONY: images
images: $(IMAGES)/small.img

# dom0 runs Python 3.6: the helper is tested on the real interpreter, with and without zstandard.
$(VENV36)/.stamp:
	$(PY36) -m venv $(VENV36)
	$(VENV36)/bin/pip install -q zstandard==0.20.0
	touch $@

$(VENV36_NOZSTD)/.stamp:
	$(PY36) -m venv $(VENV36_NOZSTD)
	touch $@

.PHONY: setup
setup: venv sysdeps layout images $(VENV36)/.stamp $(VENV36_NOZSTD)/.stamp xo-peer-deps

# ---------------------------------------------------------------- tests
.PHONY: test
test: setup helper-compat sanity pytest molecule lint integration-targets
	@echo "make test: all suites passed"

.PHONY: helper-compat
helper-compat: venv
	@test -f $(HELPER) || { echo "missing $(HELPER)"; exit 1; }
	$(VENV)/bin/vermin --no-tips --target=3.6- --violations --eval-annotations $(HELPER)
	$(PY36) -m py_compile $(HELPER)

# Sanity runs on a copy of the files git knows (tracked and new), as they will be shipped.
.PHONY: sanity
SANITY_DIR ?= $(TMP)/sanity
sanity: venv layout
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR)/ansible_collections/xapi/backup
	git ls-files -co --exclude-standard -z -- . ':!bench' ':!.ci' | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C $(SANITY_DIR)/ansible_collections/xapi/backup
	cd $(SANITY_DIR)/ansible_collections/xapi/backup && git init -q && git add -A && \
	  $(VENV)/bin/ansible-test sanity --venv --python 3.11 --color no

# Two workers (the machine kind has 2 cores; most tests wait on simulators, helpers and playbooks);
# --dist loadfile keeps each file's tests, and their module-scoped pools, on one worker in order.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
.PHONY: pytest
pytest: setup
	$(PY) -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS) tests

.PHONY: molecule
molecule: setup
	@if ls extensions/molecule/*/molecule.yml >/dev/null 2>&1; then \
	  cd extensions && for s in molecule/*/; do n=$$(basename $$s); echo "molecule scenario $$n"; $(VENV)/bin/molecule test -s $$n; done; \
	else echo "no molecule scenarios yet"; fi

.PHONY: lint
# ansible-lint on the whole repository: .ansible-lint excludes only what is not Ansible content
# (the simulator, node_modules, caches, changelogs).
lint: venv layout
	$(VENV)/bin/ansible-lint --profile production
	$(VENV)/bin/antsibull-changelog lint
	cd $(COLL_LINK) && $(VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs .

# ---------------------------------------------------------------- demo and benchmarks
.PHONY: demo
demo: setup
	$(PY) tests/demo/run_demo.py

.PHONY: bench-helper
bench-helper: setup $(IMAGES)/bench.img
	$(PY) bench/bench_helper.py --image $(IMAGES)/bench.img

.PHONY: bench
# every end-to-end row: full/restore speeds, the delta chain (issue 12) and the parallel DR rebuild (issue 13)
bench: setup $(IMAGES)/bench.img
	$(PY) bench/bench_e2e.py --image $(IMAGES)/bench.img
	$(MAKE) --no-print-directory bench-delta bench-dr

.PHONY: clean
clean:
	rm -rf $(TMP) tests/output

# ---------------------------------------------------------------- Xen Orchestra peer (npm)
# The pinned xen-api client for tests/xo_peer, installed from the committed lock file.
XO_PEER := tests/xo_peer
$(XO_PEER)/node_modules/.package-lock.json: $(XO_PEER)/package.json $(XO_PEER)/package-lock.json
	cd $(XO_PEER) && npm ci --no-audit --no-fund

.PHONY: xo-peer-deps
xo-peer-deps: $(XO_PEER)/node_modules/.package-lock.json

# ---------------------------------------------------------------- simulated pool (by hand)
# Runs the sample pool in the foreground (ready line on stdout, Ctrl-C stops it); the state
# survives in .tmp/xapisim until `make clean`.  POOL=tiny for the small one.
POOL ?= sample
.PHONY: xapisim
xapisim: venv images
	$(PY) -m tests.xapisim serve --pool tests/xapisim/pools/$(POOL).yml --state-dir $(TMP)/xapisim-$(POOL)

# ---------------------------------------------------------------- delta backups (issue 12)
# A full then 7 deltas (1 % of the 2 MiB blocks rewritten each time) of the bench image through vm_export
# mode=delta: stored and transfer ratios, wall times, restore of the newest point vs the full alone.
.PHONY: bench-delta
bench-delta: setup $(IMAGES)/bench.img
	$(PY) bench/bench_delta.py --image $(IMAGES)/bench.img --deltas 7 --changed 1

# DR runbook 3 on the simulator: 20 small VMs rebuilt with N=1 and N=4 (issue 13: N=4 <= 60 % of N=1).
.PHONY: bench-dr
bench-dr: setup
	$(PY) bench/bench_dr_rebuild.py --count 20 --concurrency 4

# ---------------------------------------------------------------- execution environment (no container engine)
# The collection tarball of this checkout in dist/, then the ansible-builder build context in
# .tmp/ee-context (`ansible-builder build` where podman/docker exists). tests/awx checks the same.
.PHONY: ee-context
ee-context: venv
	rm -f dist/xapi-backup-*.tar.gz
	$(VENV)/bin/ansible-galaxy collection build --force --output-path dist .
	$(VENV)/bin/ansible-builder create -f execution-environment.yml --context $(TMP)/ee-context
	@ls $(TMP)/ee-context/_build/collections/xapi-backup-*.tar.gz

# ---------------------------------------------------------------- ansible-test integration targets
# tests/integration/targets/ (read-only modules against the simulator, started by setup_xapisim), run
# with --local (no container engine here) on a copy laid out as ansible_collections/xapi/backup.
.PHONY: integration-targets
INTEGRATION_DIR ?= $(TMP)/ansible-test-integration
integration-targets: venv layout
	rm -rf $(INTEGRATION_DIR) && mkdir -p $(INTEGRATION_DIR)/ansible_collections/xapi/backup
	git ls-files -co --exclude-standard -z -- . ':!bench' ':!.ci' | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C $(INTEGRATION_DIR)/ansible_collections/xapi/backup
	cd $(INTEGRATION_DIR)/ansible_collections/xapi/backup && git init -q && git add -A && \
	  $(VENV)/bin/ansible-test integration --local --python 3.11 --color no
