"""``rkt run`` and friends with the real stage1s (systemd-nspawn, fly, kvm), as root.

Images carry the host's static busybox. Every test checks what a user sees: the
app's output, exit codes, the state commands, and that nothing (no pod
directory, no mount) is left behind.

The tests parametrized with ``EVERY_STAGE1`` are the pod behaviour matrix: they run
on every stage1 that claims the behaviour. kvm runs boot a real qemu VM (under
TCG where KVM is unusable), once per test, and are marked slow. What fly does
not do, and so is tested on nspawn (and kvm) only:

- several apps in one pod (fly runs exactly one);
- a hostname of the pod's own, or the default ``rkt-<uuid>`` (fly shares the
  host's UTS namespace);
- a PID namespace, an IPC namespace, a network namespace (``--net=none``);
- hiding the stage1 from the app, and ``enter``'s confinement to the app's
  namespaces beyond the mount namespace.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.stage1 import INTERFACE_VERSION
from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, wait_for_file
from rkt_testing.plugin import (
    EVERY_STAGE1,
    FLY,
    KVM,
    NSPAWN,
    OCI,
    needs_kvm_stage1,
    needs_oci_stage1,
    needs_root,
    stage1_image_path,
)

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
    pytest.mark.skipif(not stage1_image_path("nspawn").exists(),
                       reason="stage1 images not installed (run rkt install)"),
]

#: the behaviour fly does not have (the list in this module's docstring)
CONTAINED = pytest.mark.parametrize("stage1", [
    NSPAWN, pytest.param(KVM, marks=[pytest.mark.slow, needs_kvm_stage1]),
    pytest.param(OCI, marks=needs_oci_stage1),
], ids=["nspawn", "kvm", "oci"])


def mounts_mentioning(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line for line in handle if str(path) in line]


def processes_mentioning(path: Path) -> list[str]:
    """Command lines naming ``path``: a pod's nspawn or qemu names its pod directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            if str(path) in cmdline:
                found.append(cmdline)
    return found


@pytest.fixture
def env(rkt_env: RktEnv) -> Iterator[RktEnv]:
    yield rkt_env
    # whatever a test did, it must not leave mounts under its data dir, nor a
    # process (a container, a VM) running on it
    assert mounts_mentioning(rkt_env.data_dir) == []
    assert processes_mentioning(rkt_env.data_dir) == []


@pytest.fixture
def busybox_image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build(
        "busybox.aci", name="example.com/busybox", busybox=True,
        exec_=["/bin/sh", "-c", "echo hello from the pod"],
        files={"etc/passwd": "root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n",
               "etc/group": "root:x:0:\nusers:x:1000:\nextra:x:2000:user\n",
               "data/": b""},
    )


def run(target: RktEnv, *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return target.run("--insecure-options=image", *args, **kwargs)  # type: ignore[arg-type]


def pod_dirs(env: RktEnv) -> list[Path]:
    return [p for p in (env.data_dir / "pods").glob("*/*")]


# -- acceptance 1: run, exit codes, signatures, hash, env, volumes -----------------------
@EVERY_STAGE1
def test_run_prints_output_and_exits_with_the_app_code(env: RktEnv, aci_builder: AciBuilder,
                                                       stage1: str) -> None:
    image = aci_builder.build(busybox=True, exec_=["/bin/sh", "-c", "echo out; exit 3"])
    result = run(env, "run", stage1, image)
    assert result.stdout == "out\n", result.stderr
    assert result.returncode == 3


def test_signed_image_runs_and_signature_flag_works(
    env: RktEnv, aci_builder: AciBuilder, gpg, signing_key, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    env.trust("example.com/hello", key_file)
    image = aci_builder.build(busybox=True, exec_=["/bin/echo", "signed hello"])
    signature = gpg.sign_detached(fingerprint, image, tmp_path / "elsewhere.asc")
    refused = env.run("run", image)
    assert_one_line_error(refused, "no signature")
    result = env.run("run", image, "--signature", signature)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "signed hello\n"
    rows = env.run("image", "list", "--no-legend", "--full").stdout.splitlines()
    image_id = next(row.split()[0] for row in rows if "example.com/hello" in row)
    by_hash = env.run("run", image_id[:20])
    assert by_hash.returncode == 0 and by_hash.stdout == "signed hello\n"
    by_name = env.run("run", "example.com/hello:1.0.0")
    assert by_name.stdout == "signed hello\n"


@EVERY_STAGE1
def test_environment_precedence(env: RktEnv, aci_builder: AciBuilder, tmp_path: Path,
                                stage1: str) -> None:
    image = aci_builder.build(busybox=True, manifest=_env_manifest())
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nB=file\nC=file\n\n; other comment\n")
    result = run(env, "run", stage1, "--inherit-env", f"--set-env-file={env_file}",
                 "--set-env=C=flag", image, "--environment=D=app",
                 env={"INHERITED": "from-rkt", "A": "from-rkt"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["image", "file", "flag", "app", "from-rkt", "env"]
    without = run(env, "run", stage1, image, env={"INHERITED": "from-rkt"})
    assert "from-rkt" not in without.stdout


def _env_manifest() -> dict[str, object]:
    from rkt_testing.aci import image_manifest

    return image_manifest(
        "example.com/env", exec_=["/bin/sh", "-c", "echo $A $B $C $D $INHERITED $AC_APP_NAME"],
        app={"environment": [{"name": n, "value": "image"} for n in "ABCD"]},
    )


@EVERY_STAGE1
def test_host_volume_read_write_and_read_only(env: RktEnv, aci_builder: AciBuilder,
                                              tmp_path: Path, stage1: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("host says hi\n")
    image = aci_builder.build(busybox=True, exec_=[
        "/bin/sh", "-c", "cat /mnt/from-host && echo written > /mnt/from-pod"])
    result = run(env, "run", stage1, f"--volume=data,kind=host,source={shared}", image,
                 "--mount=volume=data,target=/mnt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "host says hi\n"
    assert (shared / "from-pod").read_text() == "written\n"
    read_only = run(env, "run", stage1,
                    f"--volume=data,kind=host,source={shared},readOnly=true", image,
                    "--mount=volume=data,target=/mnt")
    assert read_only.returncode != 0
    assert "Read-only file system" in read_only.stderr


@EVERY_STAGE1
def test_user_group_and_working_dir(env: RktEnv, busybox_image: Path, stage1: str) -> None:
    result = run(env, "run", stage1, busybox_image, "--user=user", "--group=extra",
                 "--working-dir=/data", "--exec=/bin/sh", "--", "-c", "id -u; id -g; pwd")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "2000", "/data"]


@CONTAINED
def test_hostname_and_app_isolation(env: RktEnv, busybox_image: Path, stage1: str) -> None:
    result = run(env, "run", stage1, "--hostname=podhost", busybox_image, "--exec=/bin/sh", "--",
                 "-c", "hostname; ls /; test -e /rkt && echo STAGE1-VISIBLE; "
                 "grep -c . /etc/hosts")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "podhost"
    assert "STAGE1-VISIBLE" not in lines
    assert {"bin", "dev", "proc", "sys", "etc"} <= set(lines)


def test_default_hostname_is_rkt_uuid(env: RktEnv, busybox_image: Path, tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    result = run(env, "run", f"--uuid-file-save={uuid_file}", busybox_image, "--exec=/bin/hostname")
    assert result.stdout.strip() == f"rkt-{uuid_file.read_text().strip()}"


def test_app_capabilities_are_the_spec_default(env: RktEnv, busybox_image: Path) -> None:
    result = run(env, "run", busybox_image, "--exec=/bin/grep", "--", "CapBnd", "/proc/self/status")
    # appc-spec/ace.md's 14 default capabilities
    assert result.stdout.split()[1] == "00000000a80425fb"


# -- acceptance 2: interactive, Ctrl+] -----------------------------------------------------
def _spawn(env: RktEnv, *args: str | Path) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        os.execvp(env.rkt_binary(), [env.rkt_binary(), *env.global_flags(),
                                     "--insecure-options=image", *map(str, args)])
    return pid, fd


def _read_until(fd: int, marker: bytes, timeout: float = 90) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@EVERY_STAGE1
def test_interactive_shell_gives_a_prompt_and_exit_code(env: RktEnv, busybox_image: Path,
                                                        stage1: str) -> None:
    pid, fd = _spawn(env, "run", stage1, "--interactive", busybox_image, "--exec=/bin/sh",
                     "--", "-i")
    try:
        assert b"# " in _read_until(fd, b"# ")
        os.write(fd, b"echo $((6*7))\n")
        assert b"42" in _read_until(fd, b"42")
        os.write(fd, b"exit 5\n")
        assert _wait(pid, 60) == 5
    finally:
        os.close(fd)


@EVERY_STAGE1
def test_ctrl_bracket_three_times_kills_the_pod(env: RktEnv, busybox_image: Path,
                                                stage1: str) -> None:
    pid, fd = _spawn(env, "run", stage1, busybox_image, "--exec=/bin/sh", "--", "-c",
                     "echo started; exec sleep 1000")
    try:
        assert b"started" in _read_until(fd, b"started")
        os.write(fd, b"\x1d\x1d\x1d")
        start = time.monotonic()
        assert _wait(pid, 5) is not None
        assert time.monotonic() - start < 2
    finally:
        os.close(fd)


# -- acceptance 3: two apps sharing a volume ----------------------------------------------
@CONTAINED
def test_two_apps_run_at_once_and_share_a_volume(env: RktEnv, busybox_image: Path,
                                                 stage1: str) -> None:
    # written aside and renamed: the other app never sees the file created but empty
    handshake = ("echo {me} > /shared/.{me}; mv /shared/.{me} /shared/{me}; i=0; "
                 "while [ ! -e /shared/{other} ]; do "
                 "i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.1; done; "
                 "echo {me} saw $(cat /shared/{other})")
    result = run(env, "run", stage1, "--volume=shared,kind=empty",
                 busybox_image, "--name=alpha", "--mount=volume=shared,target=/shared",
                 "--exec=/bin/sh", "--", "-c", handshake.format(me="alpha", other="beta"), "---",
                 busybox_image, "--name=beta", "--mount=volume=shared,target=/shared",
                 "--exec=/bin/sh", "--", "-c", handshake.format(me="beta", other="alpha"))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["alpha saw beta", "beta saw alpha"]


@CONTAINED
def test_failing_app_code_wins_and_status_shows_each_app(env: RktEnv, busybox_image: Path,
                                                         tmp_path: Path, stage1: str) -> None:
    uuid_file = tmp_path / "uuid"
    # A failing app stops the others, so "bad" fails only once "ok" has finished
    # (it leaves a file just before exiting): otherwise, on a loaded machine, "ok"
    # may still be starting when "bad" fails, and is stopped (143).
    wait_then_fail = ("i=0; while [ ! -e /shared/ok ]; do i=$((i+1)); [ $i -gt 200 ] && "
                      "exit 9; sleep 0.05; done; sleep 1; exit 4")
    result = run(env, "run", stage1, f"--uuid-file-save={uuid_file}",
                 "--volume=shared,kind=empty",
                 busybox_image, "--name=ok", "--mount=volume=shared,target=/shared",
                 "--exec=/bin/touch", "--", "/shared/ok", "---",
                 busybox_image, "--name=bad", "--mount=volume=shared,target=/shared",
                 "--exec=/bin/sh", "--", "-c", wait_then_fail)
    assert result.returncode == 4
    status = env.run("status", uuid_file.read_text()).stdout
    assert "app-ok=0" in status and "app-bad=4" in status and "exited=true" in status


# -- acceptance 4: prepare, run-prepared, list, status, enter, stop, gc --------------------
@EVERY_STAGE1
def test_prepare_run_prepared_enter_stop_gc(env: RktEnv, busybox_image: Path,
                                            stage1: str) -> None:
    uuid = run(env, "prepare", "--quiet", stage1, busybox_image, "--exec=/bin/sleep", "--",
               "1000").stdout.strip()
    assert len(uuid) == 36
    listing = env.run("list", "--no-legend").stdout
    assert uuid[:8] in listing and "prepared" in listing
    pod = subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "run-prepared", uuid],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        status = env.run("status", "--wait-ready=10s", uuid[:8])
        assert "state=running" in status.stdout, status.stderr
        assert "pid=" in status.stdout
        records = json.loads(env.run("status", "--format=json", uuid).stdout)
        assert records["state"] == "running" and records["app_names"] == ["busybox"]
        entered = env.run("enter", uuid, "/bin/echo", "hi")
        assert entered.returncode == 0, entered.stderr
        assert entered.stdout == "hi\n"
        stopped = env.run("stop", uuid)
        assert stopped.returncode == 0, stopped.stderr
        pod.wait(timeout=60)
    finally:
        if pod.poll() is None:
            pod.kill()
    final = env.run("status", "--wait=5s", uuid).stdout
    assert "state=exited" in final
    env.run("gc", "--grace-period=0s", check=True)
    assert pod_dirs(env) == []
    assert mounts_mentioning(env.data_dir) == []


def start_pod(env: RktEnv, tmp_path: Path, *args: str | Path
              ) -> tuple[subprocess.Popen[bytes], str]:
    """``rkt run ARGS`` in the background; returns once the pod's UUID is known."""
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    return pod, wait_for_file(uuid_file, timeout=15, process=pod).read_text()


def test_rm_refuses_running_pods_and_removes_exited_ones(env: RktEnv, busybox_image: Path,
                                                         tmp_path: Path) -> None:
    pod, uuid = start_pod(env, tmp_path, busybox_image, "--exec=/bin/sleep", "--", "1000")
    try:
        assert_one_line_error(env.run("rm", uuid), "running")
        env.run("stop", "--force", uuid, check=True)
        pod.wait(timeout=15)
    finally:
        if pod.poll() is None:
            pod.kill()
    removed = env.run("rm", uuid)
    assert removed.returncode == 0, removed.stderr
    assert pod_dirs(env) == []


def test_no_overlay_copies_the_image(env: RktEnv, busybox_image: Path) -> None:
    result = run(env, "run", "--no-overlay", busybox_image, "--exec=/bin/sh", "--", "-c",
                 "echo changed > /etc/motd; cat /etc/motd")
    assert result.stdout == "changed\n", result.stderr


def test_export_of_an_exited_pod_contains_its_changes(env: RktEnv, busybox_image: Path,
                                                      tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    run(env, "run", f"--uuid-file-save={uuid_file}", busybox_image, "--exec=/bin/sh", "--",
        "-c", "echo persisted > /data/file; rm /etc/group", check=True)
    out = tmp_path / "exported.aci"
    env.run("export", uuid_file.read_text(), out, check=True)
    result = run(env, "run", out, "--exec=/bin/sh", "--", "-c",
                 "cat /data/file; test -e /etc/group && echo group-back")
    assert result.stdout == "persisted\n", result.stderr


# -- bad input ------------------------------------------------------------------------------
BAD_FLAGS = {
    "bad volume": (["--volume=data,kind=nope"], 'kind must be "host" or "empty"'),
    "volume without source": (["--volume=data,kind=host"], "source=PATH"),
    "bad set-env": (["--set-env=NOEQUALS"], "expected NAME=VALUE"),
    "volume source missing": (["--volume=data,kind=host,source=/nonexistent/dir"],
                              "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_pod_flags(env: RktEnv, busybox_image: Path, case: str) -> None:
    flags, fragment = BAD_FLAGS[case]
    before = pod_dirs(env)
    assert_one_line_error(run(env, "run", *flags, busybox_image), fragment)
    assert pod_dirs(env) == before


def test_bad_mount_flag(env: RktEnv, busybox_image: Path) -> None:
    assert_one_line_error(run(env, "run", busybox_image, "--mount=target=/x"), "volume=NAME")
    assert_one_line_error(run(env, "run", busybox_image, "--mount=volume=nope,target=/x"),
                   'no volume named "nope"')


def test_missing_exec_is_refused_before_anything_runs(env: RktEnv, busybox_image: Path) -> None:
    assert_one_line_error(run(env, "run", busybox_image, "--exec=/bin/nope"),
                   'executable "/bin/nope" not found')
    assert pod_dirs(env) == []


def test_unknown_image_with_local(env: RktEnv) -> None:
    assert_one_line_error(env.run("run", "--local", "example.com/unknown:1.0"),
                   "no image named \"example.com/unknown:1.0\" in the store")
    assert pod_dirs(env) == []


def test_conflicting_flags(env: RktEnv, busybox_image: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.json"
    manifest.write_text("{}")
    assert_one_line_error(run(env, "run", f"--pod-manifest={manifest}", busybox_image),
                   "conflicting flags set with --pod-manifest")
    assert_one_line_error(run(env, "run", "--interactive", busybox_image, "---", busybox_image),
                   "--interactive can only be used with a single image")
    assert_one_line_error(run(env, "run"), "at least one image")


def test_invalid_pod_manifest(env: RktEnv, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11",
                                    "apps": [{"name": "Bad Name", "image": {}}]}))
    assert_one_line_error(run(env, "run", f"--pod-manifest={manifest}"), "apps[0].name")
    assert pod_dirs(env) == []


def test_pod_manifest_runs(env: RktEnv, busybox_image: Path, tmp_path: Path) -> None:
    image_id = run(env, "fetch", "--full", busybox_image, check=True).stdout.strip()
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps({
        "acKind": "PodManifest", "acVersion": "0.8.11",
        "apps": [{"name": "from-manifest", "image": {"id": image_id},
                  "app": {"exec": ["/bin/echo", "manifest ran"], "user": "0", "group": "0"}}],
    }))
    # the image came in unverified: a pod manifest naming it needs the insecure flag too
    assert_one_line_error(env.run("run", f"--pod-manifest={manifest}"),
                          "is in the store unverified")
    result = run(env, "run", f"--pod-manifest={manifest}")
    assert result.stdout == "manifest ran\n", result.stderr


@pytest.mark.parametrize("uuid", ["zzzz", "00000000-0000-0000-0000-000000000000", ""])
def test_unknown_or_malformed_uuids(env: RktEnv, uuid: str) -> None:
    for command in ("status", "enter", "cat-manifest", "rm", "stop"):
        assert_one_line_error(env.run(command, uuid))


def test_ambiguous_uuid_prefix(env: RktEnv, busybox_image: Path) -> None:
    uuids = [run(env, "prepare", "--quiet", busybox_image).stdout.strip() for _ in range(12)]
    pairs = [(a, b) for a in uuids for b in uuids if a != b and a[0] == b[0]]
    if not pairs:
        pytest.skip("no two UUIDs share a first digit this time")
    assert_one_line_error(env.run("status", pairs[0][0][0]), "ambiguous")


def test_mount_point_through_symlink_resolves_inside(env: RktEnv, aci_builder: AciBuilder,
                                                     tmp_path: Path) -> None:
    # /data -> /../../../../tmp would be the host's /tmp if followed from outside
    escape = tmp_path / "host-side"
    escape.mkdir()
    image = aci_builder.build(busybox=True, exec_=["/bin/sh", "-c", "echo inside > /data/f"],
                              symlinks={"data": "../../../../../../" + str(escape)})
    shared = tmp_path / "vol"
    shared.mkdir()
    result = run(env, "run", f"--volume=v,kind=host,source={shared}", image,
                 "--mount=volume=v,target=/data")
    assert result.returncode == 0, result.stderr
    assert (shared / "f").read_text() == "inside\n"
    assert list(escape.iterdir()) == []


def test_stage1_problems(env: RktEnv, busybox_image: Path, tmp_path: Path,
                         aci_builder: AciBuilder) -> None:
    assert_one_line_error(env.run("run", "--stage1-path=/nonexistent/stage1.aci", busybox_image),
                   "stage1.aci")
    unsigned = tmp_path / "stage1-custom.aci"
    shutil.copyfile(stage1_image_path("fly"), unsigned)
    assert_one_line_error(env.run("run", f"--stage1-path={unsigned}", busybox_image), "signature")
    from rkt_testing.aci import image_manifest

    fake = aci_builder.build("fake-stage1.aci", manifest=image_manifest(
        "example.com/stage1-fake", extra={"annotations": [
            {"name": "coreos.com/rkt/stage1/backend", "value": "warp-drive"}]}))
    assert_one_line_error(run(env, "run", f"--stage1-path={fake}", busybox_image),
                   'stage1 backend "warp-drive" is not installed')
    assert pod_dirs(env) == []


def _future_stage1(aci_builder: AciBuilder, version: str,
                   name: str = "example.com/stage1-future") -> Path:
    """A stage1 image for rkt's fly backend that speaks stage1 interface ``version``."""
    from rkt_testing.aci import image_manifest

    return aci_builder.build(f"stage1-{version}.aci", manifest=image_manifest(
        name, extra={"annotations": [
            {"name": "coreos.com/rkt/stage1/backend", "value": "fly"},
            {"name": "coreos.com/rkt/stage1/interface-version", "value": version}]}),
        files={"rkt/supervisor.py": "raise SystemExit('never run')\n"})


def test_stage1_of_an_unknown_interface_version_is_refused(
    env: RktEnv, busybox_image: Path, aci_builder: AciBuilder
) -> None:
    """Acceptance 3 of issue 8: one line, and no pod directory at all."""
    future = _future_stage1(aci_builder, "99")
    result = run(env, "run", f"--stage1-path={future}", busybox_image)
    assert_one_line_error(result, 'stage1 image "example.com/stage1-future" speaks stage1 '
                                  f"interface version 99; this rkt speaks {INTERFACE_VERSION}")
    assert_one_line_error(run(env, "prepare", f"--stage1-path={future}", busybox_image),
                          "interface version 99")
    assert pod_dirs(env) == []


def test_stage1_image_of_an_older_rkt_asks_for_rkt_install(
    env: RktEnv, busybox_image: Path, tmp_path: Path
) -> None:
    from rkt.stage1 import build_stage1_image
    from rkt_plugins.stage1_fly import FlyStage1

    class OldFly(FlyStage1):
        interface_version = 1

    images = tmp_path / "stage1-images"
    build_stage1_image(OldFly(), images / "stage1-fly.aci")
    result = run(env, "run", FLY, busybox_image, env={"RKT_STAGE1_IMAGES_DIR": str(images)})
    assert_one_line_error(result, "speaks stage1 interface version 1; this rkt speaks "
                                  f"{INTERFACE_VERSION} "
                                  "(run 'rkt install' to rebuild the stage1 images)")
    assert pod_dirs(env) == []


def test_prepared_pod_whose_stage1_speaks_another_version_stays_prepared(
    env: RktEnv, busybox_image: Path
) -> None:
    uuid = run(env, "prepare", "--quiet", FLY, busybox_image).stdout.strip()
    stage1_manifest = env.data_dir / "pods" / "prepared" / uuid / "stage1" / "manifest"
    manifest = json.loads(stage1_manifest.read_text())
    for annotation in manifest["annotations"]:
        if annotation["name"] == "coreos.com/rkt/stage1/interface-version":
            annotation["value"] = "99"
    stage1_manifest.write_text(json.dumps(manifest))
    assert_one_line_error(env.run("run-prepared", uuid), "speaks stage1 interface version 99")
    assert pod_dirs(env) == [env.data_dir / "pods" / "prepared" / uuid]
    assert env.run("status", uuid).stdout.startswith("state=prepared")


def test_third_party_stage1_from_an_installed_distribution(
    env: RktEnv, busybox_image: Path, tmp_path: Path, example_stage1_path: Path
) -> None:
    from rkt_testing import pythonpath_with

    images = tmp_path / "stage1-images"
    extra = {**pythonpath_with(example_stage1_path), "RKT_STAGE1_IMAGES_DIR": str(images)}
    built = env.run("install", env=extra)
    assert built.returncode == 0, built.stderr
    assert (images / "stage1-unshare.aci").is_file()
    result = run(env, "run", "--stage1-name=coreos.com/rkt/stage1-unshare",
                 "--hostname=unshared", busybox_image, "--exec=/bin/sh", "--", "-c",
                 "echo pid=$$; hostname; exit 6", env=extra)
    assert result.returncode == 6, result.stderr
    assert result.stdout.split() == ["pid=2", "unshared"]  # PID 1 is the supervisor
    uuid = env.run("list", "--no-legend", "--full", env=extra).stdout.split()[0]
    assert "app-busybox=6" in env.run("status", uuid, env=extra).stdout


def test_install_builds_a_stage1_image_once_labelled_with_its_own_version(
    env: RktEnv, busybox_image: Path, tmp_path: Path, example_stage1_path: Path
) -> None:
    """Issue 16: reinstalling does not rebuild an unchanged stage1 image, a rebuilt one
    replaces its older import in the store, and a third party's image carries its
    own distribution's version (the example's pyproject says 0.3.2), not rkt's."""
    from rkt import __version__
    from rkt_testing import pythonpath_with

    assert __version__ != "0.3.2"  # else the label below would not tell whose it is
    images = tmp_path / "stage1-images"
    extra = {**pythonpath_with(example_stage1_path), "RKT_STAGE1_IMAGES_DIR": str(images)}
    aci = images / "stage1-unshare.aci"

    def install() -> str:
        result = env.run("install", env=extra)
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if str(aci) in line)

    def run_unshare() -> None:
        result = run(env, "run", "--stage1-name=coreos.com/rkt/stage1-unshare", busybox_image,
                     "--exec=/bin/true", env=extra)
        assert result.returncode == 0, result.stderr

    assert install().startswith("built stage1 image")
    built = aci.stat().st_mtime_ns
    run_unshare()
    for _ in range(2):
        assert "is up to date (rkt-example-stage1 0.3.2)" in install()
    assert aci.stat().st_mtime_ns == built
    run_unshare()
    (images / "stage1-unshare.aci.source").write_text("{}")  # as if its files changed
    assert install().startswith("built stage1 image")
    run_unshare()
    listed = env.run("image", "list", "--no-legend", "--fields=name", env=extra)
    names = listed.stdout.split()
    assert names.count("coreos.com/rkt/stage1-unshare:0.3.2") == 1, listed.stdout
    assert len(names) == len(set(names)), listed.stdout


def test_nomad_style_prepare_with_resource_flags(env: RktEnv, busybox_image: Path,
                                                 tmp_path: Path) -> None:
    """The flags Nomad's rkt driver passes to prepare, in its order."""
    alloc = tmp_path / "alloc"
    alloc.mkdir()
    uuid = run(env, "prepare", f"--volume=a-t-alloc,kind=host,source={alloc}",
               "--mount=volume=a-t-alloc,target=/alloc", "--set-env=NOMAD_TASK=t",
               busybox_image, "--exec=/bin/sh", "--memory=268435456", "--cpu-shares=100",
               "--oom-score-adj=500", "--", "-c",
               "cat /proc/self/oom_score_adj; echo $NOMAD_TASK > /alloc/out").stdout.strip()
    manifest = json.loads(env.run("cat-manifest", uuid).stdout)
    names = {i["name"] for i in manifest["apps"][0]["app"]["isolators"]}
    assert {"resource/memory", "os/linux/cpu-shares", "os/linux/oom-score-adj"} <= names
    result = env.run("run-prepared", uuid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "500"
    assert (alloc / "out").read_text() == "t\n"
    assert_one_line_error(run(env, "prepare", busybox_image, "--memory=lots"), "--memory")


def test_default_stage1_from_stage1_d_config(env: RktEnv, busybox_image: Path) -> None:
    import socket

    from rkt import __version__

    (env.local_config / "stage1.d").mkdir()
    (env.local_config / "stage1.d" / "fly.json").write_text(json.dumps({
        "rktKind": "stage1", "rktVersion": "v1",
        "name": "coreos.com/rkt/stage1-fly", "version": __version__,
    }))
    result = run(env, "run", busybox_image, "--exec=/bin/hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == socket.gethostname()  # fly shares the host's UTS
    pod_manifest = next((env.data_dir / "pods" / "run").glob("*/stage1/manifest"))
    assert json.loads(pod_manifest.read_text())["name"] == "coreos.com/rkt/stage1-fly"


@EVERY_STAGE1
def test_event_handlers_and_implicit_empty_volume(env: RktEnv, aci_builder: AciBuilder,
                                                  tmp_path: Path, stage1: str) -> None:
    from rkt_testing.aci import image_manifest

    out = tmp_path / "out"
    out.mkdir()
    manifest = image_manifest("example.com/handlers", exec_=[
        "/bin/sh", "-c", "cat /scratch/pre; ls -ld /scratch | cut -c1; echo main >> /out/log"],
        app={"eventHandlers": [
            {"name": "pre-start", "exec": ["/bin/sh", "-c", "echo pre > /scratch/pre; "
                                                            "echo pre >> /out/log"]},
            {"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post >> /out/log"]}],
             "mountPoints": [{"name": "scratch", "path": "/scratch"},
                             {"name": "out", "path": "/out"}]})
    image = aci_builder.build("handlers.aci", manifest=manifest, busybox=True)
    result = run(env, "run", stage1, f"--volume=out,kind=host,source={out}", image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pre", "d"]  # /scratch: an implicit empty volume
    assert (out / "log").read_text().split() == ["pre", "main", "post"]


def test_fly_refuses_a_hostname_it_cannot_give(env: RktEnv, busybox_image: Path) -> None:
    """fly has no UTS namespace: --hostname was accepted and ignored (found by
    ``python -m rkt.conformance``); setting it would rename the host."""
    refused = run(env, "run", FLY, "--hostname=mine", busybox_image, "--exec=/bin/hostname")
    assert_one_line_error(refused, "the fly stage1 does not support a hostname of the pod's "
                                   "own", "fly shares the host's UTS namespace")
    assert list(env.data_dir.glob("pods/*/*")) == []  # refused before the pod ran


def test_fly_hosts_file_names_the_hosts_hostname(env: RktEnv, busybox_image: Path) -> None:
    """fly's app has the host's hostname, so its /etc/hosts resolves that name."""
    result = run(env, "run", FLY, busybox_image, "--exec=/bin/sh", "--", "-c",
                 "grep -w $(hostname) /etc/hosts")
    assert result.returncode == 0, result.stderr
    assert os.uname().nodename in result.stdout


def test_a_feature_a_stage1_declares_unsupported_is_refused_before_the_pod_runs(
        env: RktEnv, busybox_image: Path) -> None:
    """stage0 refuses what the backend's ``unsupported`` names (docs/stage1.md),
    so no pod is left behind and no third-party stage1 has to check it itself."""
    refused = run(env, "run", FLY, busybox_image, "--exec=/bin/true", "---",
                  busybox_image, "--name=second", "--exec=/bin/true")
    assert_one_line_error(refused, "the fly stage1 does not support more than one app in a "
                                   "pod: fly runs exactly one app per pod")
    assert list(env.data_dir.glob("pods/*/*")) == []


def test_supplementary_gids(env: RktEnv, busybox_image: Path) -> None:
    result = run(env, "run", busybox_image, "--user=user", "--group=users",
                 "--supplementary-gids=2000,3000", "--exec=/bin/id", "--", "-G")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "2000", "3000"]


@CONTAINED
def test_enter_has_the_apps_isolation_not_more(env: RktEnv, busybox_image: Path,
                                               tmp_path: Path, stage1: str) -> None:
    """rkt's CVE-2019-10144/10147: enter must not get more than the app has."""
    pod, uuid = start_pod(env, tmp_path, stage1, busybox_image, "--user=user",
                          "--caps-retain=CAP_NET_BIND_SERVICE", "--exec=/bin/sleep", "--", "1000")
    try:
        env.run("status", "--wait-ready=10s", uuid, check=True)
        time.sleep(0.3)
        entered = env.run("enter", uuid, "/bin/sh", "-c",
                          "grep CapBnd /proc/self/status; id -u; hostname; ls /")
        assert entered.returncode == 0, entered.stderr
        lines = entered.stdout.split("\n")
        assert lines[0].split()[1] == "0000000000000400"  # CAP_NET_BIND_SERVICE only
        assert lines[1] == "1000"
        assert lines[2] == f"rkt-{uuid}"
        assert "rkt" not in lines[3:]  # the app's rootfs, not the stage1's
        env.run("stop", "--force", uuid, check=True)
        pod.wait(timeout=15)
    finally:
        if pod.poll() is None:
            pod.kill()


@EVERY_STAGE1
def test_readonly_rootfs_and_etc_files(env: RktEnv, busybox_image: Path, stage1: str) -> None:
    # the host's resolv.conf comes with the host's network (--net=host); a kvm
    # guest cannot share it, and has loopback only, so no resolver
    net = "--net=none" if stage1 == KVM else "--net=host"
    result = run(env, "run", stage1, net, busybox_image, "--readonly-rootfs",
                 "--exec=/bin/sh", "--",
                 "-c", "grep -q '^127.0.0.1.*localhost' /etc/hosts && echo hosts; "
                 "test -s /etc/resolv.conf && echo dns; touch /new-file")
    assert result.returncode != 0
    expected = ["hosts"] if stage1 == KVM else ["hosts", "dns"]
    assert result.stdout.split() == expected, result.stderr
    assert "Read-only file system" in result.stderr
