"""rkt's pytest plugin: fixtures for testing rkt and rkt plugins.

Installed with the ``rkt-testing`` distribution (entry point ``pytest11: rkt``), so
a plugin author's tests get:

- ``rkt_env``: an isolated data dir and config dirs, and ``rkt_env.run(...)`` that
  runs the real ``rkt`` command against them (:class:`rkt_testing.env.RktEnv`);
  the cgroups of pods a test did not ``gc`` are removed when it ends;
- ``aci_builder``: builds ACI files (:class:`rkt_testing.aci.AciBuilder`);
- ``gpg``: a throw-away GnuPG home driving the real ``gpg``
  (:class:`rkt_testing.gpg.GpgHome`), shared by the session;
- ``signing_key``: (fingerprint, armored public key file) of a key in ``gpg``;
- ``needs_root``: a mark that skips a test unless it runs as root;
- ``needs_kvm_stage1``: a mark that skips a test unless the kvm stage1 can boot VMs;
- ``needs_oci_stage1``: a mark that skips a test unless the oci stage1 can run pods;
- ``NSPAWN``, ``FLY``, ``KVM``, ``OCI``: the ``rkt run`` flags choosing rkt's stage1s, and
  ``EVERY_STAGE1``: a ``stage1`` parametrization over all four.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing.aci import AciBuilder
from rkt_testing.env import RktEnv
from rkt_testing.gpg import GpgHome

#: mark for tests that need root (namespaces, mounts, systemd-nspawn)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def stage1_image_path(flavor: str) -> Path:
    """Where ``rkt install`` put ``stage1-<flavor>.aci`` (``RKT_STAGE1_IMAGES_DIR``
    overrides the default directory, as it does for rkt)."""
    directory = os.environ.get("RKT_STAGE1_IMAGES_DIR") or "/usr/lib/rkt/stage1-images"
    return Path(directory) / f"stage1-{flavor}.aci"


#: mark for tests that boot the kvm stage1's VMs (qemu, and its image built)
needs_kvm_stage1 = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None
    or not stage1_image_path("kvm").exists(),
    reason="needs root, qemu-system-x86_64 and the kvm stage1 image (rkt install)",
)

#: mark for tests that run pods on the oci stage1 (runc, and its image built: it is
#: its own distribution, rkt-stage1-oci, which a development venv may lack)
needs_oci_stage1 = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None or not stage1_image_path("oci").exists(),
    reason="needs root, runc and the oci stage1 image (pip install ./stage1_oci; rkt install)",
)


#: ``rkt run`` flags choosing each of rkt's own stage1s
NSPAWN = "--stage1-name=coreos.com/rkt/stage1-nspawn"
FLY = "--stage1-name=coreos.com/rkt/stage1-fly"
KVM = "--stage1-name=coreos.com/rkt/stage1-kvm"
OCI = "--stage1-name=coreos.com/rkt/stage1-oci"

#: a test's ``stage1`` argument, once per stage1; kvm (slow) and oci run where
#: their stage1 can
EVERY_STAGE1 = pytest.mark.parametrize("stage1", [
    NSPAWN, FLY, pytest.param(KVM, marks=[pytest.mark.slow, needs_kvm_stage1]),
    pytest.param(OCI, marks=needs_oci_stage1),
], ids=["nspawn", "fly", "kvm", "oci"])


@pytest.fixture
def rkt_env(tmp_path: Path) -> Iterator[RktEnv]:
    env = RktEnv(tmp_path / "rkt")
    for directory in (env.data_dir, env.local_config, env.system_config):
        directory.mkdir(parents=True)
    yield env
    # pods hold host resources until they are collected (a network namespace, CNI
    # leases, iptables rules): collect whatever the test left
    if os.geteuid() == 0 and any((env.data_dir / "pods").glob("*/*")):
        env.run("gc", "--grace-period=0s", "--expire-prepared=0s")
    env.remove_pod_cgroups()


@pytest.fixture
def aci_builder(tmp_path: Path) -> AciBuilder:
    return AciBuilder(tmp_path / "images")


@pytest.fixture(scope="session")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgHome]:
    """A GnuPG home shared by a test session (key generation is the slow part)."""
    home = GpgHome(tmp_path_factory.mktemp("gnupg"))
    yield home
    home.close()


@pytest.fixture(scope="session")
def signing_key(gpg: GpgHome, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(fingerprint, armored public key file) of a key made once per session."""
    fingerprint = gpg.generate_key("rkt test signer <signer@example.com>")
    key_file = tmp_path_factory.mktemp("keys") / "signer.asc"
    key_file.write_bytes(gpg.export_public(fingerprint))
    return fingerprint, key_file
