"""Real pods (nspawn stage1, the ``default`` CNI network) and a real
``rkt metadata-service`` on a private socket and port: issue 9's acceptance 5.

Each pod reaches the service at its network's gateway (the host's side of its
veth) and is told apart from other pods by its own 172.16.28.x address and its
token. Pods talk to the test through a host volume.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, wait_for_file
from rkt_testing.metadata import MetadataServiceProcess
from rkt_testing.plugin import FLY, NSPAWN, needs_root

pytestmark = [
    needs_root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]

V1 = "$AC_METADATA_URL/acMetadata/v1"


@pytest.fixture
def service(rkt_env: RktEnv, tmp_path: Path) -> Iterator[MetadataServiceProcess]:
    process = MetadataServiceProcess(rkt_env, tmp_path / "mds" / "mds.sock").start()
    yield process
    process.close()


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    path = tmp_path / "shared"
    path.mkdir()
    return path


def script_image(aci_builder: AciBuilder, name: str, script: str) -> Path:
    return aci_builder.build(f"{name}.aci", name=f"example.com/{name}", busybox=True,
                             exec_=["/bin/sh", "-c", script])


def mds_run_args(service: MetadataServiceProcess, shared: Path, image: Path) -> list[str]:
    return ["--insecure-options=image", "run", NSPAWN, "--net=default", "--mds-register",
            f"--mds-socket={service.socket_path}", f"--volume=shared,kind=host,source={shared}",
            str(image), "--mount=volume=shared,target=/shared"]


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> str:
    return wait_for_file(path, timeout=timeout, process=process).read_text().strip()


def spawn(env: RktEnv, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([env.rkt_binary(), *env.global_flags(), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_pod_reads_its_uuid_and_signs_and_verifies(
    rkt_env: RktEnv, aci_builder: AciBuilder, service: MetadataServiceProcess, shared: Path,
    tmp_path: Path,
) -> None:
    image = script_image(aci_builder, "mds-client", f"""
        echo "url=$AC_METADATA_URL"
        uuid=$(wget -qO- {V1}/pod/uuid); echo "uuid=$uuid"
        echo "id=$(wget -qO- {V1}/apps/$AC_APP_NAME/image/id)"
        sig=$(wget -qO- --post-data "content=hello pod" {V1}/pod/hmac/sign)
        wget -qO- --post-data "content=hello pod&signature=$sig&uuid=$uuid" \
            {V1}/pod/hmac/verify && echo verified
        wget -qO- --post-data "content=forged&signature=$sig&uuid=$uuid" \
            {V1}/pod/hmac/verify 2>/dev/null || echo forged-refused
    """)
    uuid_file = tmp_path / "uuid"
    result = rkt_env.run(*mds_run_args(service, shared, image), f"--uuid-file-save={uuid_file}")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    assert lines["uuid"] == uuid_file.read_text().strip()
    url = lines["url"]
    assert url.startswith(f"http://172.16.28.1:{service.port}/") and not url.endswith("/")
    assert lines["id"].startswith("sha512-")
    assert "verified" in result.stdout.split()
    assert "forged-refused" in result.stdout.split()
    # the pod ended: it is unregistered
    assert list((rkt_env.data_dir / "metadata-service").iterdir()) == []


def test_a_pod_cannot_read_another_pods_metadata(
    rkt_env: RktEnv, aci_builder: AciBuilder, service: MetadataServiceProcess, shared: Path,
) -> None:
    first = script_image(aci_builder, "first", """
        echo "$AC_METADATA_URL" > /shared/first-url
        while [ ! -e /shared/done ]; do sleep 0.1; done
    """)
    second = script_image(aci_builder, "second", f"""
        wget -qO- "$(cat /shared/first-url)/acMetadata/v1/pod/manifest" || echo refused
        echo "own=$(wget -qO- {V1}/pod/uuid)"
        touch /shared/done
    """)
    pod_a = spawn(rkt_env, mds_run_args(service, shared, first))
    try:
        wait_for(shared / "first-url", pod_a)
        # the second pod even knows the first one's token: its address gives it away
        result = rkt_env.run(*mds_run_args(service, shared, second))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == "refused"
        assert "PodManifest" not in result.stdout
        assert result.stdout.split()[1].startswith("own=") and len(result.stdout.split()[1]) > 10
    finally:
        (shared / "done").touch()
        pod_a.communicate(timeout=60)
    assert pod_a.returncode == 0


def test_the_service_killed_while_a_pod_runs(
    rkt_env: RktEnv, aci_builder: AciBuilder, service: MetadataServiceProcess, shared: Path,
    tmp_path: Path,
) -> None:
    image = script_image(aci_builder, "long", f"""
        echo "$AC_METADATA_URL" > /shared/url
        wget -qO- {V1}/pod/uuid > /shared/before
        while [ ! -e /shared/go ]; do sleep 0.1; done
        wget -qO- {V1}/pod/uuid > /shared/after
    """)
    uuid_file = tmp_path / "uuid"
    pod = spawn(rkt_env, [*mds_run_args(service, shared, image), f"--uuid-file-save={uuid_file}"])
    try:
        uuid = wait_for(shared / "before", pod)
        # rkt enter gets the app's environment, AC_METADATA_URL included
        entered = rkt_env.run("enter", uuid, "/bin/sh", "-c", "echo $AC_METADATA_URL")
        assert entered.returncode == 0, entered.stderr
        assert entered.stdout.strip() == (shared / "url").read_text().strip() != ""
        service.kill()
        restarted = MetadataServiceProcess(rkt_env, service.socket_path, service.port).start()
        try:
            (shared / "go").touch()
            assert wait_for(shared / "after", pod) == uuid
            pod.communicate(timeout=60)
            assert pod.returncode == 0
            assert list((rkt_env.data_dir / "metadata-service").iterdir()) == []
        finally:
            restarted.close()
    finally:
        (shared / "go").touch()
        if pod.poll() is None:
            pod.communicate(timeout=60)
    assert uuid == uuid_file.read_text().strip()


def test_a_stage1_without_a_private_network_cannot_register(
    rkt_env: RktEnv, aci_builder: AciBuilder, service: MetadataServiceProcess,
) -> None:
    image = script_image(aci_builder, "fly", "true")
    result = rkt_env.run("--insecure-options=image", "run", FLY, "--mds-register",
                         f"--mds-socket={service.socket_path}", image)
    assert_one_line_error(result, "--mds-register flag does not work with --net=host")
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []
