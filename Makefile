# Set-up for rkt on Debian: `make demo` (install, then run a signed pod) and
# `make test` (install, then the whole test suite). Every target is idempotent.

PYTHON ?= python3
PREFIX ?= /opt/rkt
VENV := $(PREFIX)/venv
BIN := /usr/local/bin
export PATH := $(VENV)/bin:$(PATH)

# Debian packages rkt needs at run time (runc is the oci stage1's OCI runtime,
# docs/oci.md), and the extra ones its tests drive for real.
RUNTIME_PACKAGES := gnupg busybox-static systemd-container xz-utils bzip2 zstd \
	qemu-system-x86 linux-image-amd64 kmod \
	python3-venv iproute2 util-linux containernetworking-plugins iptables libseccomp2 \
	runc
# gcc and libc6-dev build the tests' static syscall probes; libcap2-bin has setcap;
# strace lists the syscalls a retain-set test allows; podman and runc are baselines
# of the pod benchmarks
TEST_PACKAGES := ca-certificates docker-registry skopeo curl gcc libc6-dev libcap2-bin \
	strace podman runc

.PHONY: install install-system install-python install-test demo test check bench clean

install: install-system install-python

install-system:
	@scripts/apt-install $(RUNTIME_PACKAGES)

# A regular (not editable) install: pip compiles the bytecode, and start-up does
# not pay for an editable-install import hook. Developers use `pip install -e`.
install-python:
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	@# setuptools builds in the source tree and never empties build/: a module that
	@# was moved or removed would otherwise still be installed from an old build
	rm -rf build stage1_nspawn/build stage1_kvm/build stage1_oci/build testing/build
	$(VENV)/bin/pip install --quiet --disable-pip-version-check . ./stage1_nspawn ./stage1_kvm \
		./stage1_oci
	for tool in rkt actool docker2aci; do ln -sf $(VENV)/bin/$$tool $(BIN)/$$tool; done
	$(VENV)/bin/rkt install

install-test: install
	@scripts/apt-install $(TEST_PACKAGES)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check '.[test]' ./testing

demo: install
	scripts/demo

test: install-test
	scripts/run-tests

check: install-test
	$(VENV)/bin/ruff check core plugins stage1_nspawn stage1_kvm stage1_oci testing tests bench
	$(VENV)/bin/mypy

bench: install-test
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf build dist *.egg-info core/*.egg-info plugins/*.egg-info testing/*.egg-info \
		.pytest_cache .mypy_cache
