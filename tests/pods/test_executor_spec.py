"""The executor checklist (docs/executor-checklist.md), line by line, on every stage1.

``../shared/appc-spec/ace.md`` and ``OS-SPEC.md`` say what an app must find when it
starts. One two-app pod with ``pre-start``/``post-stop`` handlers and a shared
volume runs a probe in every process the spec names (each app's main process and
its lifecycle processes); each probe writes what it sees into a host directory,
and the tests read the reports. The checklist in docs/ names the test for each line.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import (
    EVERY_STAGE1,
    FLY,
    NSPAWN,
    needs_root,
)

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]


#: what one process reports; run as ``/bin/sh /probe PHASE``
PROBE = r"""
out=/report/$AC_APP_NAME.$1
{
echo "path=$PATH"
echo "app=$AC_APP_NAME"
echo "container=$container"
echo "mds=${AC_METADATA_URL-unset}"
echo "pwd=$(pwd)"
echo "ids=$(id -u):$(id -g)"
for d in null zero full random urandom tty console; do [ -c /dev/$d ] && echo "dev=$d"; done
[ -c /dev/ptmx ] && echo "dev=ptmx"
while read -r source target type rest; do
  case $target in /proc|/sys|/dev/pts|/dev/shm) echo "fs=$target:$type";; esac
done < /proc/mounts
grep -q '^127\.0\.0\.1.*localhost' /etc/hosts && echo "hosts=localhost"
[ -e /sys/class/net/lo ] && echo "net=lo"
[ -e /rkt ] && echo "stage1=visible"
true
} > "$out" 2>&1
"""

#: the main process: probe; the root app leaves a mark in its own rootfs; both
#: write into the shared volume and wait for the other's file there
MAIN = r"""
if [ "$(id -u)" = 0 ]; then
  [ -e /mine ] && echo stale > /report/$AC_APP_NAME.stale
  echo $AC_APP_NAME > /mine
fi
/bin/sh /probe main
stat -c 'shared=%a:%u:%g' /shared >> /report/$AC_APP_NAME.main
echo $AC_APP_NAME > /shared/$AC_APP_NAME
i=0
while [ ! -e /shared/$OTHER ]; do
  i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05
done
echo "saw=$(cat /shared/$OTHER)" >> /report/$AC_APP_NAME.main
echo "mine=$(cat /mine 2>/dev/null || echo none)" >> /report/$AC_APP_NAME.main
"""


def _report(directory: Path, name: str) -> dict[str, list[str]]:
    """``key=value`` lines of one report, values of a repeated key in order."""
    values: dict[str, list[str]] = {}
    for line in (directory / name).read_text().splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    return values


@pytest.fixture
def env(rkt_env: RktEnv) -> RktEnv:
    return rkt_env


@pytest.fixture
def probe_image(aci_builder: AciBuilder) -> Path:
    manifest = image_manifest(
        "example.com/probe", exec_=["/bin/sh", "-c", MAIN],
        app={
            "workingDirectory": "/work",
            "eventHandlers": [
                {"name": "pre-start", "exec": ["/bin/sh", "/probe", "pre-start"]},
                {"name": "post-stop", "exec": ["/bin/sh", "/probe", "post-stop"]},
            ],
            "mountPoints": [{"name": "report", "path": "/report"},
                            {"name": "shared", "path": "/shared"}],
        })
    return aci_builder.build(
        "probe.aci", manifest=manifest, busybox=True,
        files={"probe": PROBE, "work/": b"",
               "etc/passwd": "root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n",
               "etc/group": "root:x:0:\nusers:x:1000:\n"})


@pytest.fixture
def reports(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "reports"
    directory.mkdir()
    os.chmod(directory, 0o777)  # the second app runs as uid 1000
    yield directory


def _apps(stage1: str) -> tuple[str, ...]:
    """The pod's apps: two, or one where the stage1 runs one app per pod (fly)."""
    return ("alpha",) if stage1 == FLY else ("alpha", "beta")


def _run_pod(env: RktEnv, stage1: str, image: Path, reports: Path, uuid_file: Path) -> None:
    apps = _apps(stage1)
    args: list[str | Path] = []
    for app in apps:
        other = [a for a in apps if a != app] or [app]
        args += [image, f"--name={app}", f"--environment=OTHER={other[0]}"]
        if app == "beta":
            args += ["--user=user", "--group=users"]
        args.append("---")
    result = env.run(
        "--insecure-options=image", "run", stage1, f"--uuid-file-save={uuid_file}",
        f"--volume=report,kind=host,source={reports}",
        "--volume=shared,kind=empty,mode=0777", *args[:-1])
    assert result.returncode == 0, result.stderr


@EVERY_STAGE1
def test_two_app_pod_passes_the_executor_checklist(env: RktEnv, probe_image: Path,
                                                   reports: Path, tmp_path: Path,
                                                   stage1: str) -> None:
    uuid_file = tmp_path / "uuid"
    _run_pod(env, stage1, probe_image, reports, uuid_file)
    # E1: an RFC 4122 UUID per pod
    assert uuid_module.UUID(uuid_file.read_text().strip()).variant == uuid_module.RFC_4122
    phases = ("pre-start", "main", "post-stop")
    apps = _apps(stage1)
    assert sorted(p.name for p in reports.iterdir()) == sorted(
        f"{app}.{phase}" for app in apps for phase in phases)
    for app, ids in (("alpha", "0:0"), ("beta", "1000:1000"))[:len(apps)]:
        for phase in phases:
            seen = _report(reports, f"{app}.{phase}")
            where = f"{app} {phase}"
            # A1: the environment of the main process and of every lifecycle process
            assert seen["path"] == ["/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            assert seen["app"] == [app], where
            assert seen["container"] == ["rkt"], where
            assert seen["mds"] == [""], where  # set (empty) when no metadata service runs
            # A2: the working directory
            assert seen["pwd"] == ["/work"], where
            # A3: user and group from the image's /etc/passwd and /etc/group
            assert seen["ids"] == [ids], where
            # L1: the devices and file systems of OS-SPEC.md
            assert sorted(seen["dev"]) == sorted(
                ["null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"]), where
            assert sorted(seen["fs"]) == ["/dev/pts:devpts", "/dev/shm:tmpfs",
                                          "/proc:proc", "/sys:sysfs"], where
            # L2: a functional /etc/hosts with the loopback entry
            assert seen["hosts"] == ["localhost"], where
            # N1: a loopback interface
            assert seen["net"] == ["lo"], where
            # E2: chrooted into the app's own filesystem, the stage1's out of sight
            assert "stage1" not in seen, where
        main = _report(reports, f"{app}.main")
        other = {"alpha": "beta", "beta": "alpha"}[app] if len(apps) == 2 else app
        # V1: one volume in every app (an empty one, with the mode it was given)
        assert main["saw"] == [other]
        assert main["shared"] == ["777:0:0"]
        # E2: each app its own rootfs: alpha's /mine is not in beta's
        assert main["mine"] == ["alpha" if app == "alpha" else "none"]
    # V2: the mount point rkt made for /report (not in the image) is root's, 0755
    uuid = uuid_file.read_text().strip()
    made = list(env.data_dir.glob(f"pods/*/{uuid}/overlay/*/upper/alpha/report"))
    assert len(made) == 1
    info = made[0].stat()
    assert (oct(info.st_mode & 0o7777), info.st_uid, info.st_gid) == ("0o755", 0, 0)


def test_every_execution_starts_from_a_clean_rootfs(env: RktEnv, probe_image: Path,
                                                    reports: Path, tmp_path: Path) -> None:
    """E5: a second pod of the same image does not see the first one's writes."""
    for _ in range(2):
        _run_pod(env, NSPAWN, probe_image, reports, tmp_path / "uuid")
    assert not list(reports.glob("*.stale"))


@EVERY_STAGE1
def test_event_handlers_run_in_order_around_the_app(env: RktEnv, aci_builder: AciBuilder,
                                                    tmp_path: Path, stage1: str) -> None:
    """A4: pre-start ends before the app starts; post-stop runs after it, even when it fails."""
    out = tmp_path / "out"
    out.mkdir()
    manifest = image_manifest("example.com/handlers", exec_=[
        "/bin/sh", "-c", "echo main >> /out/log; exit 3"], app={
        "eventHandlers": [
            {"name": "pre-start", "exec": ["/bin/sh", "-c", "sleep 0.2; echo pre >> /out/log"]},
            {"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post >> /out/log"]}],
        "mountPoints": [{"name": "out", "path": "/out"}]})
    image = aci_builder.build("handlers.aci", manifest=manifest, busybox=True)
    result = env.run("--insecure-options=image", "run", stage1,
                     f"--volume=out,kind=host,source={out}", image)
    assert result.returncode == 3, result.stderr
    assert (out / "log").read_text().split() == ["pre", "main", "post"]


@EVERY_STAGE1
def test_an_images_own_etc_hosts_is_left_alone(env: RktEnv, aci_builder: AciBuilder,
                                               stage1: str) -> None:
    """L3: an /etc/hosts from the image (or from a volume) is not modified."""
    image = aci_builder.build(
        "hosts.aci", busybox=True, exec_=["/bin/cat", "/etc/hosts"],
        files={"etc/hosts": "10.1.2.3 from-the-image\n"})
    result = env.run("--insecure-options=image", "run", stage1, image)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "10.1.2.3 from-the-image\n"


@EVERY_STAGE1
def test_generated_etc_files_are_never_written_into_a_host_volume(
        env: RktEnv, aci_builder: AciBuilder, tmp_path: Path, stage1: str) -> None:
    """L3, V5: a host directory mounted at /etc gets no hosts or resolv.conf from rkt."""
    etc = tmp_path / "etc"
    etc.mkdir()
    image = aci_builder.build("plain.aci", busybox=True, exec_=["/bin/ls", "/etc"])
    result = env.run("--insecure-options=image", "run", stage1,
                     f"--volume=etc,kind=host,source={etc}", image,
                     "--mount=volume=etc,target=/etc")
    assert result.returncode == 0, result.stderr
    assert list(etc.iterdir()) == []
    assert result.stdout == ""


def test_user_and_group_given_as_a_file_take_its_owner(env: RktEnv, aci_builder: AciBuilder,
                                                      tmp_path: Path) -> None:
    """A3: a user or group that starts with "/" is the owner of that file in the image."""
    import tarfile

    extra = tmp_path / "owned.tar"
    with tarfile.open(extra, "w") as tar:
        info = tarfile.TarInfo("rootfs/owned")
        info.uid, info.gid = 4242, 4343
        tar.addfile(info)
    manifest = image_manifest("example.com/owned", exec_=["/bin/id"],
                              app={"user": "/owned", "group": "/owned"})
    image = aci_builder.build("owned.aci", manifest=manifest, busybox=True, extra_tar=extra)
    result = env.run("--insecure-options=image", "run", image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["uid=4242", "gid=4343"]


def test_missing_working_directory_fails_the_execution(env: RktEnv, probe_image: Path) -> None:
    """A2: a workingDirectory that is not in the rootfs (nor a volume) is an error."""
    result = env.run("--insecure-options=image", "run", probe_image, "--working-dir=/nowhere")
    assert_one_line_error(result, '"/nowhere" does not exist')


@pytest.mark.parametrize("case", ["symlink", "intermediate-symlink"])
def test_symlinked_volume_sources_are_refused(env: RktEnv, probe_image: Path, tmp_path: Path,
                                              case: str) -> None:
    """V6: a host volume's source (or a directory on its path) may not be a symlink."""
    real = tmp_path / "real"
    (real / "inner").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    source = link if case == "symlink" else link / "inner"
    result = env.run("--insecure-options=image", "run", f"--volume=v,kind=host,source={source}",
                     probe_image, "--mount=volume=v,target=/v", "--exec=/bin/true")
    assert_one_line_error(result, "symbolic link")
    assert list((env.data_dir / "pods").glob("*/*")) == []


def test_overlapping_mount_targets_are_refused(env: RktEnv, probe_image: Path,
                                               tmp_path: Path) -> None:
    """V4: one volume nested inside another in the same app is an error."""
    result = env.run("--insecure-options=image", "run", f"--volume=a,kind=host,source={tmp_path}",
                     "--volume=b,kind=empty", probe_image, "--mount=volume=a,target=/x",
                     "--mount=volume=b,target=/x/y/", "--exec=/bin/true")
    assert_one_line_error(result, "overlap")
    assert list((env.data_dir / "pods").glob("*/*")) == []


def test_masking_image_files_with_a_volume_is_warned_about(env: RktEnv, probe_image: Path,
                                                           tmp_path: Path) -> None:
    """V3: a volume over a non-empty directory or a file of the image says so."""
    result = env.run("--insecure-options=image", "run",
                     f"--volume=a,kind=host,source={tmp_path}", "--volume=b,kind=empty",
                     probe_image, "--mount=volume=a,target=/work/",
                     "--mount=volume=b,target=/probe", "--exec=/bin/true")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "masks" in line]
    assert len(warnings) == 1, result.stderr  # /work is empty in the image: no warning
    assert re.search(r'volume "b" masks the file /probe of app "probe"', warnings[0])


@pytest.mark.parametrize("isolator", [
    {"name": "os/linux/selinux-context",
     "value": {"user": "system_u", "role": "system_r", "type": "svirt_t", "level": "s0"}},
    {"name": "os/unix/sysctl", "value": {"net.ipv4.ip_forward": "1"}},
    {"name": "resource/network-bandwidth", "value": {"default": True, "limit": "1G"}},
], ids=lambda isolator: isolator["name"])
def test_isolators_rkt_cannot_enforce_are_refused(env: RktEnv, aci_builder: AciBuilder,
                                                  isolator: dict[str, object]) -> None:
    """I1: nothing is ignored silently: an isolator rkt cannot enforce stops the pod."""
    manifest = image_manifest("example.com/isolated", exec_=["/bin/true"],
                              app={"isolators": [isolator]})
    image = aci_builder.build("isolated.aci", manifest=manifest, busybox=True)
    result = env.run("--insecure-options=image", "run", image)
    assert_one_line_error(result, f'isolator "{isolator["name"]}" is not supported')
    assert list((env.data_dir / "pods").glob("*/*")) == []


def test_pod_level_isolators_rkt_cannot_enforce_are_refused(
        env: RktEnv, probe_image: Path, tmp_path: Path) -> None:
    """I1: a pod manifest's own isolators are limited to the pod's resources."""
    import json

    env.run("--insecure-options=image", "fetch", probe_image, check=True)
    image_id = env.run("image", "list", "--no-legend", "--full").stdout.split()[0]
    manifest = {
        "acKind": "PodManifest", "acVersion": "0.8.11",
        "apps": [{"name": "probe", "image": {"id": image_id},
                  "app": {"exec": ["/bin/true"], "user": "0", "group": "0"}}],
        "isolators": [{"name": "os/linux/capabilities-retain-set",
                       "value": {"set": ["CAP_CHOWN"]}}],
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(manifest))
    # the image came in unverified, so the pod manifest needs the flag too (issue 10)
    result = env.run("--insecure-options=image", "run", f"--pod-manifest={path}")
    assert_one_line_error(result, "for a whole pod")
    assert list((env.data_dir / "pods").glob("*/*")) == []


def test_sys_shows_the_pods_own_network_interfaces(env: RktEnv, aci_builder: AciBuilder) -> None:
    """N1, N2: an app's /sys is of its own network namespace, not the host's."""
    image = aci_builder.build("net.aci", busybox=True, exec_=["/bin/ls", "/sys/class/net"])
    contained = env.run("--insecure-options=image", "run", NSPAWN, image)
    assert contained.returncode == 0, contained.stderr
    assert contained.stdout.split() == ["eth0", "lo"]
    none = env.run("--insecure-options=image", "run", NSPAWN, "--net=none", image)
    assert none.stdout.split() == ["lo"], none.stderr
    cgroups = env.run("--insecure-options=image", "run", NSPAWN, "--net=none", image,
                      "--exec=/bin/ls", "--", "/sys/fs/cgroup")
    assert "memory" in cgroups.stdout.split(), cgroups.stderr
