"""Isolators that hold (issue 9): capabilities, seccomp, no_new_privs, oom_score_adj.

Through the real ``rkt`` command as root, on the nspawn and fly stage1s. Each
test checks what the app can or cannot do, or what the kernel says of the app's
own process (``/proc/self/status``), never the setting rkt wrote down.

The kernel's answers to ``kexec_load`` and ``init_module`` come from a tiny
static C program compiled here with gcc (busybox has neither): on this kernel,
which has neither kexec nor modules, they fail with ENOSYS unless a filter
refuses them first, so EPERM proves the filter did it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, wait_for_file
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import FLY, NSPAWN, OCI, needs_oci_stage1, needs_root, stage1_image_path

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
    pytest.mark.skipif(not stage1_image_path("nspawn").exists(),
                       reason="stage1 images not installed (run rkt install)"),
]

STAGE1S = pytest.mark.parametrize("stage1", [
    NSPAWN, FLY, pytest.param(OCI, marks=needs_oci_stage1)], ids=["nspawn", "fly", "oci"])

#: appc-spec/ace.md's default set: CAP_AUDIT_WRITE, CAP_CHOWN, CAP_DAC_OVERRIDE,
#: CAP_FSETID, CAP_FOWNER, CAP_KILL, CAP_MKNOD, CAP_NET_RAW, CAP_NET_BIND_SERVICE,
#: CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_SETFCAP, CAP_SYS_CHROOT
SPEC_DEFAULT = "00000000a80425fb"
NO_CAPS = "0000000000000000"
STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                 "Seccomp", "Seccomp_filters")
PASSWD = {"etc/passwd": "root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n",
          "etc/group": "root:x:0:\nusers:x:1000:\n"}

PROBE_SOURCE = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

/* probe kexec_load|init_module: try the syscall, print how it failed.
   probe status: print this process's capability and seccomp lines. */
int main(int argc, char **argv) {
    long result;
    if (argc > 1 && strcmp(argv[1], "status") == 0) {
        char line[256];
        FILE *status = fopen("/proc/self/status", "r");
        while (status && fgets(line, sizeof line, status))
            if (strncmp(line, "Cap", 3) == 0 || strncmp(line, "NoNewPrivs", 10) == 0)
                fputs(line, stdout);
        return 0;
    }
    errno = 0;
    if (argc > 1 && strcmp(argv[1], "kexec_load") == 0)
        result = syscall(SYS_kexec_load, 0, 0, NULL, 0);
    else
        result = syscall(SYS_init_module, NULL, 0, "");
    printf("%s: %s\n", argv[1], result == 0 ? "succeeded" : strerror(errno));
    return 0;
}
"""


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc (Debian packages gcc, libc6-dev)")
    directory = tmp_path_factory.mktemp("probe")
    (directory / "probe.c").write_text(PROBE_SOURCE)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(directory / "probe"),
                    str(directory / "probe.c")], check=True, capture_output=True)
    return directory / "probe"


def mounts_mentioning(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line for line in handle if str(path) in line]


@pytest.fixture
def env(rkt_env: RktEnv) -> Iterator[RktEnv]:
    yield rkt_env
    assert mounts_mentioning(rkt_env.data_dir) == []


def pod_dirs(env: RktEnv) -> list[Path]:
    return list((env.data_dir / "pods").glob("*/*"))


def run(target: RktEnv, *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return target.run("--insecure-options=image", *args, **kwargs)  # type: ignore[arg-type]


def image(aci_builder: AciBuilder, filename: str = "app.aci", *,
          isolators: list[dict[str, object]] | None = None, probe: Path | None = None,
          exec_: list[str] | None = None) -> Path:
    app: dict[str, object] = {"isolators": isolators} if isolators else {}
    files: dict[str, str | bytes | Path] = {**PASSWD, "data/": b""}
    if probe is not None:
        files["bin/probe"] = probe
    return aci_builder.build(filename, busybox=True, files=files, manifest=image_manifest(
        "example.com/isolated", exec_=exec_ or ["/bin/sh", "-c", "echo hello"], app=app))


def status_lines(output: str) -> dict[str, str]:
    """``/proc/self/status`` lines (as ``grep`` printed them) by field name."""
    fields = {}
    for line in output.splitlines():
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            fields[name] = value.strip()
    return fields


SHOW_STATUS = ["--exec=/bin/grep", "--", "-E", "^(Cap|NoNewPrivs|Seccomp)", "/proc/self/status"]


# -- capabilities ------------------------------------------------------------------------
@STAGE1S
def test_removed_capability_is_gone_from_every_set(env: RktEnv, aci_builder: AciBuilder,
                                                   stage1: str) -> None:
    app = image(aci_builder)
    chown = ["--exec=/bin/sh", "--", "-c",
             "touch /data/f && /bin/busybox chown 1000 /data/f && stat -c %u /data/f; "
             "grep -E '^Cap(Eff|Prm)' /proc/self/status"]
    allowed = run(env, "run", stage1, app, *chown)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[0] == "1000"
    refused = run(env, "run", stage1, app, "--caps-remove=CAP_CHOWN", *chown)
    assert "Operation not permitted" in refused.stderr
    fields = status_lines(refused.stdout)
    for name in ("CapEff", "CapPrm"):
        assert int(fields[name], 16) & 1 == 0  # bit 0 is CAP_CHOWN
        assert int(fields[name], 16) == int(SPEC_DEFAULT, 16) & ~1


@STAGE1S
def test_root_app_has_exactly_the_spec_default_set(env: RktEnv, aci_builder: AciBuilder,
                                                   stage1: str) -> None:
    result = run(env, "run", stage1, image(aci_builder), *SHOW_STATUS)
    assert result.returncode == 0, result.stderr
    fields = status_lines(result.stdout)
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert fields[name] == SPEC_DEFAULT, (name, result.stdout)
    assert fields["CapAmb"] == NO_CAPS


@STAGE1S
def test_non_root_app_has_no_capabilities_in_effect(env: RktEnv, aci_builder: AciBuilder,
                                                    stage1: str) -> None:
    result = run(env, "run", stage1, image(aci_builder), "--user=user",
                 "--caps-retain=CAP_NET_BIND_SERVICE,CAP_CHOWN", *SHOW_STATUS)
    assert result.returncode == 0, result.stderr
    fields = status_lines(result.stdout)
    assert fields["CapEff"] == fields["CapPrm"] == fields["CapAmb"] == NO_CAPS
    # what a setuid or file-capability binary could at most gain
    assert fields["CapBnd"] == fields["CapInh"] == "0000000000000401"


def test_file_capabilities_cannot_exceed_the_apps_set(env: RktEnv, aci_builder: AciBuilder,
                                                      probe: Path, tmp_path: Path) -> None:
    """``setcap cap_sys_admin+p`` / ``+ep`` binaries run by a non-root app gain only
    what the app's bounding set allows."""
    if shutil.which("setcap") is None or shutil.which("tar") is None:
        pytest.skip("needs setcap (Debian package libcap2-bin) and GNU tar")
    tree = tmp_path / "tree"
    (tree / "rootfs" / "bin").mkdir(parents=True)
    for flags in ("p", "ep"):
        binary = tree / "rootfs" / "bin" / f"admin-{flags}"
        shutil.copy(probe, binary)
        subprocess.run(["setcap", f"cap_sys_admin+{flags}", str(binary)], check=True)
    extra = tmp_path / "extra.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=security.capability", "--format=pax",
                    "-cf", str(extra), "-C", str(tree), "rootfs/bin/admin-p",
                    "rootfs/bin/admin-ep"], check=True)
    app = aci_builder.build("filecaps.aci", busybox=True, files=PASSWD, extra_tar=extra,
                            manifest=image_manifest("example.com/filecaps",
                                                    exec_=["/bin/admin-p", "status"]))
    # with CAP_SYS_ADMIN in the app's set the file capability works (the xattr is there) ...
    granted = run(env, "run", app, "--user=user", "--caps-retain=CAP_SYS_ADMIN")
    assert granted.returncode == 0, granted.stderr
    assert status_lines(granted.stdout)["CapPrm"] == f"{1 << 21:016x}"
    # ... and without it, the bounding set keeps it out
    kept_out = run(env, "run", app, "--user=user")
    assert kept_out.returncode == 0, kept_out.stderr
    fields = status_lines(kept_out.stdout)
    assert fields["CapPrm"] == fields["CapEff"] == NO_CAPS
    # a binary that expects its capabilities in effect is not run without them (the
    # kernel's rule for capability-unaware binaries): still nothing gained
    refused = run(env, "run", app, "--user=user", "--exec=/bin/admin-ep", "--", "status")
    assert refused.returncode != 0 and refused.stdout == ""
    assert 'unable to run "/bin/admin-ep": Operation not permitted' in refused.stderr


def test_unknown_capability_names_are_refused(env: RktEnv, aci_builder: AciBuilder) -> None:
    app = image(aci_builder)
    assert_one_line_error(run(env, "run", app, "--caps-retain=CAP_BOGUS"),
                          'rkt: --caps-retain: unknown capability "CAP_BOGUS"')
    assert_one_line_error(run(env, "run", app, "--caps-remove=CAP_CHOWN,CAP_NOPE"),
                          'unknown capability "CAP_NOPE"')
    in_image = image(aci_builder, "bogus-cap.aci", isolators=[
        {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_WIZARDRY"]}}])
    assert_one_line_error(run(env, "run", in_image),
                          'os/linux/capabilities-retain-set: unknown capability "CAP_WIZARDRY"')
    assert pod_dirs(env) == []


# -- seccomp -----------------------------------------------------------------------------
@STAGE1S
def test_default_filter_refuses_kernel_and_namespace_syscalls(
    env: RktEnv, aci_builder: AciBuilder, probe: Path, stage1: str
) -> None:
    app = image(aci_builder, probe=probe)
    script = ("/bin/busybox unshare -U /bin/true && echo unshare: succeeded; "
              "/bin/probe kexec_load; /bin/probe init_module; grep ^Seccomp: /proc/self/status")
    # every capability, so that only the filter stands in the way
    result = run(env, "--insecure-options=image,capabilities", "run", stage1, app,
                 "--exec=/bin/sh", "--", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "unshare(0x10000000): Operation not permitted" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["kexec_load: Operation not permitted",
                         "init_module: Operation not permitted"]
    assert lines[2].split() == ["Seccomp:", "2"]
    unfiltered = run(env, "--insecure-options=image,capabilities,seccomp", "run", stage1, app,
                     "--exec=/bin/sh", "--", "-c", script)
    assert unfiltered.returncode == 0, unfiltered.stderr
    # this kernel has neither kexec nor modules: the EPERM above was the filter's
    assert unfiltered.stdout.splitlines() == [
        "unshare: succeeded", "kexec_load: Function not implemented",
        "init_module: Function not implemented", "Seccomp:\t0"]


@STAGE1S
def test_remove_set_with_errno_from_the_image_and_the_flag(
    env: RktEnv, aci_builder: AciBuilder, stage1: str
) -> None:
    mkdir = ["--exec=/bin/mkdir", "--", "/made"]
    in_image = image(aci_builder, "no-mkdir.aci", isolators=[
        {"name": "os/linux/seccomp-remove-set", "value": {"set": ["mkdir"], "errno": "EACCES"}}])
    result = run(env, "run", stage1, in_image, *mkdir)
    assert result.returncode != 0
    assert "mkdir: can't create directory '/made': Permission denied" in result.stderr
    plain = image(aci_builder)
    assert run(env, "run", stage1, plain, *mkdir).returncode == 0
    flagged = run(env, "run", stage1, plain, "--seccomp=mode=remove,errno=EACCES,mkdir", *mkdir)
    assert "Permission denied" in flagged.stderr
    # the flag replaces the image's isolator
    lifted = run(env, "run", stage1, in_image, "--seccomp", "mode=remove,errno=EPERM,rmdir",
                 *mkdir)
    assert lifted.returncode == 0, lifted.stderr


def test_retain_set_without_errno_kills_with_sigsys(env: RktEnv, aci_builder: AciBuilder,
                                                   tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    result = run(env, "run", f"--uuid-file-save={uuid_file}", image(aci_builder),
                 "--seccomp=mode=retain,@appc.io/empty", "--exec=/bin/true")
    assert result.returncode == 128 + 31  # SIGSYS: the first syscall after execve
    assert "app-isolated=159" in env.run("status", uuid_file.read_text()).stdout


def test_retain_set_allows_exactly_what_it_lists(env: RktEnv, aci_builder: AciBuilder,
                                                 tmp_path: Path) -> None:
    """The syscalls ``busybox echo`` makes, as strace sees them on the host, are
    enough inside (``execve`` need not be listed); without ``write`` the app says
    nothing."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-o", str(trace), "/bin/busybox", "echo", "hi"],
                   check=True, capture_output=True)
    used = sorted({line.split("(")[0].split()[-1] for line in trace.read_text().splitlines()
                   if "(" in line})
    assert "write" in used and "execve" in used
    # rkt's filters never block execve: the supervisor's exec of the app comes after
    used.remove("execve")
    app = image(aci_builder)
    echo = ["--exec=/bin/busybox", "--", "echo", "hi"]
    allowed = run(env, "run", app, f"--seccomp=mode=retain,errno=ENOSYS,{','.join(used)}",
                  *echo)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "hi\n"
    silent = ",".join(name for name in used if name != "write")
    refused = run(env, "run", app, f"--seccomp=mode=retain,errno=ENOSYS,{silent}", *echo)
    assert refused.returncode != 0 and refused.stdout == ""


def test_unknown_syscalls_groups_and_errnos_are_refused(env: RktEnv,
                                                        aci_builder: AciBuilder) -> None:
    app = image(aci_builder)
    assert_one_line_error(run(env, "run", app, "--seccomp=mode=remove,mkdir,frobnicate"),
                          'app "isolated": seccomp: unknown syscall "frobnicate"')
    assert_one_line_error(run(env, "run", app, "--seccomp=mode=remove,@rkt/nonsense"),
                          'unknown syscall group "@rkt/nonsense"')
    assert_one_line_error(run(env, "run", app, "--seccomp=mode=remove,errno=EWHAT,mkdir"),
                          'seccomp: unknown errno "EWHAT"')
    assert_one_line_error(run(env, "run", app, "--seccomp=mkdir"), "mode=remove or mode=retain")
    in_image = image(aci_builder, "bogus-syscall.aci", isolators=[
        {"name": "os/linux/seccomp-retain-set", "value": {"set": ["read", "notasyscall"]}}])
    assert_one_line_error(run(env, "run", in_image), 'unknown syscall "notasyscall"')
    assert pod_dirs(env) == []


def test_insecure_options_at_run_prepared(env: RktEnv, aci_builder: AciBuilder,
                                          tmp_path: Path) -> None:
    """Given to run-prepared, they lift what prepare resolved, for the app and for
    rkt enter alike."""
    out = tmp_path / "out"
    out.mkdir()
    uuid = run(env, "prepare", "--quiet", f"--volume=out,kind=host,source={out}",
               image(aci_builder), "--mount=volume=out,target=/out", "--exec=/bin/sh", "--",
               "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status > /out/app.tmp; "
               "mv /out/app.tmp /out/app; exec sleep 1000").stdout.strip()
    pod = subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "--insecure-options=seccomp,capabilities",
         "run-prepared", uuid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        app_fields = status_lines(wait_for_file(out / "app", process=pod).read_text())
        assert app_fields["Seccomp"] == "0"
        assert app_fields["CapEff"] != SPEC_DEFAULT  # every capability the stage1 has
        entered = env.run("enter", uuid, "/bin/grep", "-E", "^(CapEff|Seccomp):",
                          "/proc/self/status")
        assert entered.returncode == 0, entered.stderr
        assert status_lines(entered.stdout) == app_fields
        env.run("stop", "--force", uuid, check=True)
        pod.wait(timeout=15)
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait()


# -- no_new_privs, oom_score_adj ------------------------------------------------------
@STAGE1S
def test_no_new_privileges_and_oom_score_adj_from_the_image(
    env: RktEnv, aci_builder: AciBuilder, stage1: str
) -> None:
    asked = image(aci_builder, "nnp.aci", isolators=[
        {"name": "os/linux/no-new-privileges", "value": True},
        {"name": "os/linux/oom-score-adj", "value": 321}])
    show = ["--exec=/bin/sh", "--", "-c",
            "grep ^NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj"]
    result = run(env, "run", stage1, asked, *show)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NoNewPrivs:", "1", "321"]
    default = run(env, "run", stage1, image(aci_builder), *show)
    assert default.stdout.split()[:2] == ["NoNewPrivs:", "0"]


# -- rkt enter ---------------------------------------------------------------------------
@STAGE1S
def test_enter_gets_exactly_the_apps_sets(env: RktEnv, aci_builder: AciBuilder,
                                          tmp_path: Path, stage1: str) -> None:
    app = image(aci_builder, "enter.aci", isolators=[
        {"name": "os/linux/no-new-privileges", "value": True}])
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the app writes as uid 1000
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "--insecure-options=image", "run", stage1,
         f"--uuid-file-save={uuid_file}", f"--volume=out,kind=host,source={out}", app,
         "--mount=volume=out,target=/out", "--user=user", "--caps-retain=CAP_NET_RAW",
         "--exec=/bin/sh", "--", "-c", "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status "
         "> /out/app.tmp; mv /out/app.tmp /out/app; exec sleep 1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_for_file(out / "app", process=pod)  # moved there once complete
        uuid = uuid_file.read_text()
        entered = env.run("enter", uuid, "/bin/grep", "-E", "^(Cap|NoNewPrivs|Seccomp)",
                          "/proc/self/status")
        assert entered.returncode == 0, entered.stderr
        app_fields = status_lines((out / "app").read_text())
        assert set(app_fields) == set(STATUS_FIELDS)
        assert status_lines(entered.stdout) == app_fields
        assert app_fields["NoNewPrivs"] == "1" and app_fields["Seccomp"] == "2"
        assert app_fields["CapBnd"] == f"{1 << 13:016x}"  # CAP_NET_RAW
        env.run("stop", "--force", uuid, check=True)
        pod.wait(timeout=15)
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait()


def test_pod_manifest_isolators_apply(env: RktEnv, aci_builder: AciBuilder,
                                      tmp_path: Path) -> None:
    """The app section of a user's pod manifest is the app's whole definition."""
    image_id = run(env, "fetch", "--full", image(aci_builder), check=True).stdout.strip()
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps({
        "acKind": "PodManifest", "acVersion": "0.8.11",
        "apps": [{"name": "manifested", "image": {"id": image_id}, "app": {
            "exec": ["/bin/grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/self/status"],
            "user": "0", "group": "0", "isolators": [
                {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_KILL"]}},
                {"name": "os/linux/no-new-privileges", "value": True}]}}],
    }))
    # the image came in unverified: its pod manifest needs the flag too (issue 10)
    result = run(env, "run", f"--pod-manifest={manifest}")
    assert result.returncode == 0, result.stderr
    fields = status_lines(result.stdout)
    assert fields == {"CapEff": f"{1 << 5:016x}", "NoNewPrivs": "1"}
