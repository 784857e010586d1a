"""The kvm stage1 through the real ``rkt`` command: real qemu VMs, under TCG here.

The pod behaviour every stage1 shares (env, volumes, users, several apps, event
handlers, interactive, Ctrl+], enter, stop, gc) runs on kvm in
``test_run.py``'s matrix. These tests are the kvm stage1's own: choosing it by
every stage1 flag, exit codes and status, enter's output and exit code, the
VM's end leaving no qemu behind, and its bad input. Each boots at most one VM.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, wait_for_file
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import KVM, needs_kvm_stage1, needs_root, stage1_image_path

pytestmark = [needs_kvm_stage1, pytest.mark.slow]



def qemu_processes(data_dir: Path) -> list[int]:
    """qemu processes whose command line names a pod under ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and str(data_dir) in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def env(rkt_env: RktEnv) -> Iterator[RktEnv]:
    yield rkt_env
    # however a test ended its pod, no VM may outlive it
    assert qemu_processes(rkt_env.data_dir) == []


@pytest.fixture
def hello(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("hello.aci", name="example.com/hello", busybox=True,
                             exec_=["/bin/sh", "-c", "echo hello from the vm; exit 3"])


def run(target: RktEnv, *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return target.run("--insecure-options=image", *args, **kwargs)  # type: ignore[arg-type]


def pod_dirs(env: RktEnv) -> list[Path]:
    return list((env.data_dir / "pods").glob("*/*"))


def only_rkt_lines(stderr: str) -> bool:
    """Everything rkt itself says starts with "rkt: " (the TCG line, the warning)."""
    return all(line.startswith("rkt: ") for line in stderr.splitlines())


def test_run_prints_the_output_exits_with_the_code_and_status_shows_it(
    env: RktEnv, hello: Path, tmp_path: Path
) -> None:
    """Acceptance 1."""
    uuid_file = tmp_path / "uuid"
    result = run(env, "run", KVM, f"--uuid-file-save={uuid_file}", hello)
    assert result.stdout == "hello from the vm\n", result.stderr
    assert result.returncode == 3
    assert only_rkt_lines(result.stderr), result.stderr
    uuid = uuid_file.read_text()
    status = env.run("status", uuid).stdout
    assert "state=exited" in status and "app-hello=3" in status
    env.run("gc", "--grace-period=0s", check=True)
    assert pod_dirs(env) == []


@pytest.mark.parametrize("flag", ["image", "hash", "url"])
def test_every_stage1_flag_selects_the_kvm_image(env: RktEnv, hello: Path, flag: str) -> None:
    """Acceptance 5: ``--stage1-image=<stage1 images dir>/stage1-kvm.aci`` and the
    other ways of naming the same image."""
    path = stage1_image_path("kvm")
    if flag == "image":
        chosen = f"--stage1-image={path}"
    elif flag == "url":
        chosen = f"--stage1-url=file://{path}"
    else:
        # the image is in the store once any pod used it; prepare imports it
        run(env, "prepare", "--quiet", KVM, hello, check=True)
        rows = env.run("image", "list", "--no-legend", "--full").stdout.splitlines()
        image_id = next(r.split()[0] for r in rows if "stage1-kvm" in r)
        chosen = f"--stage1-hash={image_id}"
    result = run(env, "run", chosen, hello)
    assert (result.returncode, result.stdout) == (3, "hello from the vm\n"), result.stderr
    manifests = list((env.data_dir / "pods" / "run").glob("*/stage1/manifest"))
    assert [json.loads(m.read_text())["name"] for m in manifests] == [
        "coreos.com/rkt/stage1-kvm"]


def test_enter_relays_output_and_exit_code_and_stop_ends_the_vm(
    env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    """Acceptance 4, and ``rkt stop`` shutting the guest down cleanly."""
    image = aci_builder.build("sleeper.aci", name="example.com/sleeper", busybox=True,
                              exec_=["/bin/sh", "-c", "echo up; exec sleep 1000"])
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "--insecure-options=image", "run", KVM,
         f"--uuid-file-save={uuid_file}", image],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        uuid = wait_for_file(uuid_file, process=pod).read_text()
        assert "state=running" in env.run("status", "--wait-ready=30s", uuid).stdout
        entered = env.run("enter", uuid, "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
        assert entered.returncode == 7, entered.stderr
        assert (entered.stdout, entered.stderr) == ("out\n", "err\n")
        stopped = env.run("stop", uuid)
        assert stopped.returncode == 0, stopped.stderr
        out, err = pod.communicate(timeout=120)
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait()
    assert out == "up\n", err
    assert pod.returncode == 0  # stopped on request, as under nspawn
    status = env.run("status", uuid).stdout
    assert "app-sleeper=143" in status, status  # SIGTERM, from the guest's supervisor
    env.run("gc", "--grace-period=0s", check=True)
    assert pod_dirs(env) == []


def test_net_host_is_refused_and_none_has_loopback_only(env: RktEnv,
                                                       aci_builder: AciBuilder) -> None:
    image = aci_builder.build(busybox=True, exec_=["/bin/sh", "-c", "ls /sys/class/net"])
    assert_one_line_error(run(env, "run", KVM, "--net=host", image),
                          "the kvm stage1 supports only CNI networks, --net=none; "
                          "not --net=host")
    result = run(env, "run", KVM, "--net=none", image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lo"]


def _get(url: str, timeout: float = 300) -> str:
    """The page at ``url``, retried while the guest (TCG: slow) is still booting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=10) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@needs_root
def test_the_default_network_reaches_the_guest_and_gc_leaves_nothing(
        env: RktEnv, aci_builder: AciBuilder, tmp_path: Path) -> None:
    manifest = image_manifest(
        "example.com/kvm-web", exec_=["/bin/sh", "-c",
                                      "ip -4 -o addr show dev eth0; mkdir -p /www; "
                                      "echo hello from the guest > /www/index.html; "
                                      "exec httpd -f -p 80 -h /www"],
        app={"ports": [{"name": "http", "protocol": "tcp", "port": 80}]})
    image = aci_builder.build("kvm-web.aci", name="example.com/kvm-web", busybox=True,
                              manifest=manifest)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    links_before = set(os.listdir("/sys/class/net"))
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "--insecure-options=image", "run", KVM,
         f"--uuid-file-save={uuid_file}", f"--port=http:{port}", str(image)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        uuid = wait_for_file(uuid_file, timeout=60, process=pod).read_text()
        status = json.loads(env.run("status", "--format=json", uuid, check=True).stdout)
        ip = status["networks"][0]["ip"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("172.16.28.0/24")
        listed = env.run("list", "--no-legend", "--full", check=True).stdout
        assert f"default:ip4={ip}" in listed
        # the host reaches the guest's httpd at the pod's CNI address
        assert _get(f"http://{ip}/") == "hello from the guest\n"
        # and through the port stage0 forwards to it
        assert _get(f"http://127.0.0.1:{port}/") == "hello from the guest\n"
        env.run("stop", uuid, check=True)
        out, err = pod.communicate(timeout=120)
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait()
    # the app saw the address on eth0, with the default network's prefix
    fields = out.split()
    assert fields[1] == "eth0" and fields[3] == f"{ip}/24", (out, err)
    env.run("gc", "--grace-period=0s", check=True)
    assert not list(Path("/var/run/netns").glob(f"rkt-{uuid}*"))
    # the network's bridge stays, as CNI's bridge plugin leaves it (when this test
    # is the first to use the default network); no other link may
    assert {link for link in set(os.listdir("/sys/class/net")) - links_before
            if not Path(f"/sys/class/net/{link}/bridge").exists()} == set()


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route on the host touches (other engineers' pods)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=True).stdout
    used = [ipaddress.ip_network(line.split()[0], strict=False)
            for line in routes.splitlines() if line[:1].isdigit()]
    while True:
        candidate = ipaddress.ip_network(f"10.{random.randint(100, 250)}."
                                         f"{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate


@needs_root
def test_a_user_network_gives_the_guest_its_address_and_route(
        env: RktEnv, aci_builder: AciBuilder, tmp_path: Path) -> None:
    name = f"kvm-test-{os.getpid()}-{random.randint(0, 9999)}"
    subnet = _free_subnet()
    net_d = env.local_config / "net.d"
    net_d.mkdir(exist_ok=True)
    (net_d / "10-kvm.conf").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": name, "type": "ptp", "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": str(subnet), "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": str(tmp_path / "leases")},
    }))
    image = aci_builder.build(busybox=True, exec_=["/bin/sh", "-c",
                                                   "ip -4 -o addr show dev eth0; ip route"])
    result = run(env, "run", KVM, f"--net={name}", image)
    env.run("gc", "--grace-period=0s", check=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    address = ipaddress.ip_interface(lines[0].split()[3])
    assert address.network == subnet
    assert f"default via {subnet[1]} dev eth0" in [line.strip() for line in lines[1:]]


def test_a_vm_that_does_not_boot_in_time_is_killed(env: RktEnv, hello: Path) -> None:
    result = run(env, "run", KVM, hello, env={"RKT_KVM_BOOT_TIMEOUT": "1"})
    assert result.returncode == 254
    assert result.stderr.splitlines()[-1].startswith(
        "rkt: the pod's VM did not boot within 1s"), result.stderr
    # the env fixture checks that no qemu outlived it


def test_a_guest_that_panics_shows_its_console(env: RktEnv, hello: Path) -> None:
    uuid = run(env, "prepare", "--quiet", KVM, hello).stdout.strip()
    # an initramfs the kernel cannot unpack: it boots to "cannot mount root" and panics
    initrd = env.data_dir / "pods" / "prepared" / uuid / "stage1" / "rootfs" / "kvm" / "initrd.cpio"
    initrd.write_bytes(b"not a cpio archive\n" * 64)
    result = env.run("run-prepared", uuid)
    assert result.returncode == 254
    assert result.stderr.splitlines()[-1].startswith(
        "rkt: the pod's VM ended before its apps did"), result.stderr
    console = [line for line in result.stderr.splitlines() if line.startswith("rkt: kvm: console:")]
    assert any("Kernel panic" in line for line in console), result.stderr


def test_a_vm_larger_than_the_host_is_refused(env: RktEnv, hello: Path) -> None:
    # the app's limit fits the host (stage0 checks that); with the guest's own
    # memory on top, the VM does not
    host_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:"))
    result = run(env, "run", KVM, hello, f"--memory={host_kib // 1024 - 16}Mi")
    assert_one_line_error(result, "but the host has")
    assert "resource/memory" in result.stderr


def test_missing_qemu_is_named(env: RktEnv, hello: Path, tmp_path: Path) -> None:
    # a PATH with every tool of the host's but qemu
    tools = tmp_path / "bin"
    tools.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else ():
            if not tool.name.startswith("qemu-system"):
                (tools / tool.name).unlink(missing_ok=True)
                (tools / tool.name).symlink_to(tool)
    result = run(env, "run", KVM, hello, env={"PATH": str(tools)})
    assert_one_line_error(result, "qemu-system-x86_64 is not installed (Debian package "
                                  "qemu-system-x86)")


def test_a_kernel_that_is_not_there_is_named_with_its_key(env: RktEnv, tmp_path: Path) -> None:
    (env.local_config / "stage1.d").mkdir()
    (env.local_config / "stage1.d" / "kvm.json").write_text(json.dumps({
        "rktKind": "stage1", "rktVersion": "v1",
        "options": {"kvm": {"kernel": "/nonexistent/vmlinuz"}},
    }))
    images = tmp_path / "images"
    result = env.run("install", env={"RKT_STAGE1_IMAGES_DIR": str(images)})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "kvm" in line]
    assert len(errors) == 1, result.stderr
    assert "options.kvm.kernel" in errors[0] and "linux-image-amd64" in errors[0]
    # the other stage1s are built all the same, and no half kvm image is left
    assert (images / "stage1-nspawn.aci").exists()
    # (each beside what it was built from, so 'rkt install' rebuilds only a changed one)
    # (other installed stage1s, such as oci, are built too)
    names = {p.name for p in images.iterdir()}
    assert {"stage1-fly.aci", "stage1-fly.aci.source", "stage1-nspawn.aci",
            "stage1-nspawn.aci.source"} <= names
    assert not any("kvm" in name for name in names)
    assert all(f"{name}.source" in names for name in names if name.endswith(".aci"))
