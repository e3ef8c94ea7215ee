# `make demo` and `make test` bootstrap .venv by themselves on a fresh machine, installing
# exactly what requirements.lock names (versions and hashes); `make lock` refreshes the lock
# from pyproject.toml's ranges, `make test-latest` runs the suite on the newest releases the
# ranges allow (in .venv-latest), so drift is found here before a user meets it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
LIBVIRT_LOCK := requirements-libvirt.lock
LATEST := .venv-latest
TOOLS  := .venv-tools
UV_VERSION := 0.13.9

# a module per worker (its servers are module fixtures); PYTEST_ARGS='-n 0' runs in one process
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test test-latest lint lock bench clean conformance

$(STAMP): $(LOCK) $(LIBVIRT_LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	@if pkg-config --exists libvirt 2>/dev/null; then \
	  echo "$(BIN)/pip install --require-hashes --no-deps -r $(LIBVIRT_LOCK)"; \
	  $(BIN)/pip install --quiet --require-hashes --no-deps -r $(LIBVIRT_LOCK); \
	else echo "libvirt-python not installed (the libvirt driver needs: apt-get install libvirt-dev pkg-config)"; fi
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# the newest releases pyproject.toml's ranges allow, resolved afresh every time
$(LATEST)/.installed: pyproject.toml
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,libvirt]'
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/versions.txt
	touch $@

define checks
	$(1)/ruff check .
	$(1)/lint-imports
	$(1)/mypy
endef

demo: $(STAMP)
	$(BIN)/infracloud demo $(ARGS)

test: $(STAMP)
	$(call checks,$(BIN))
	$(BIN)/pytest $(PYTEST_ARGS)

test-latest:
	rm -f $(LATEST)/.installed
	$(MAKE) --no-print-directory $(LATEST)/.installed
	@echo "test-latest: versions in $(LATEST)/versions.txt; differences from the lock:"
	@$(LATEST)/bin/python tools/lock_diff.py $(LOCK) $(LATEST)/versions.txt
	$(call checks,$(LATEST)/bin)
	$(LATEST)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(call checks,$(BIN))

# the OpenStack clients' own functional suites (shipped in openstacksdk and
# python-openstackclient) against a demo of its own, judged by tools/conformance/skips.txt;
# their extra imports (tempest.lib, testtools, ...) go into an overlay, not into .venv.
# ARGS=--update-skips rewrites the list's 'fails:' lines; ARGS='--tests ID' runs one test.
CONFORMANCE := .venv-conformance
CONFORMANCE_LOCK := tools/conformance/requirements.lock
$(CONFORMANCE)/.installed: $(CONFORMANCE_LOCK) $(STAMP)
	rm -rf $(CONFORMANCE)
	$(BIN)/pip install --quiet --require-hashes --no-deps --target $(CONFORMANCE) \
	  -r $(CONFORMANCE_LOCK)
	touch $@

conformance: $(STAMP) $(CONFORMANCE)/.installed
	$(BIN)/python -m tools.conformance $(ARGS)

# refresh the lock: every runtime and dev dependency (all extras), exact versions with hashes,
# for every platform and Python this package supports
lock:
	test -x $(TOOLS)/bin/uv || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(TOOLS)/bin/uv pip compile pyproject.toml tools/build-requirements.in --extra dev \
	  --extra postgres --generate-hashes --universal --python-version 3.11 --no-header \
	  --quiet -o $(LOCK)
	@sed -i '1i # The exact versions `make demo`, `make test` and .ci/run install. Refresh with `make lock`.' $(LOCK)
	$(TOOLS)/bin/uv pip compile tools/libvirt-requirements.in --no-deps --generate-hashes \
	  --universal --python-version 3.11 --no-header --quiet -o $(LIBVIRT_LOCK)
	@sed -i '1i # libvirt-python (builds against libvirt-dev), installed where libvirt is. `make lock`.' $(LIBVIRT_LOCK)

bench: $(STAMP)
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/images.py
	$(BIN)/python bench/compute.py
	$(BIN)/python bench/hardware.py
	$(BIN)/python bench/pool.py
	$(BIN)/python bench/pool_failover.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/caches.py
	$(BIN)/python bench/hostwake.py
	$(BIN)/python bench/libvirt.py
	$(BIN)/python bench/drill.py
	$(BIN)/python bench/ha.py

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) $(CONFORMANCE) var build *.egg-info src/*.egg-info

# the tiny test guest the libvirt driver's tests boot (and `demo` can upload): built from
# Debian packages by tools/guest/build.sh, cached in ~/.cache/infracloud/guest (or GUEST_DIR)
.PHONY: guest-image
guest-image:
	tools/guest/build.sh $(GUEST_DIR)
