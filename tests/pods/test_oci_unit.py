"""The oci stage1's translations, without a runtime: the app's ``config.json``, its
seccomp filter as OCI rules (``rkt.api.oci_seccomp``), and how the runtime is chosen.
What these produce is run for real by ``test_oci.py``."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from rkt.api import AppMount, PlacedApp, ResolvedApp, UsageError, oci_seccomp
from rkt.pod.dirs import Pod
from rkt.pod.seccomp import compile_filter, default_filter

# its own distribution (./stage1_oci), which a development venv may lack
pytest.importorskip("rkt_stage1_oci")
from rkt_stage1_oci.backend import OciStage1
from rkt_stage1_oci.bundle import app_config, held_capabilities
from rkt_stage1_oci.runtime import RUNTIME_ENV, runtime_name


def placed(**fields: object) -> PlacedApp:
    app = ResolvedApp(name="web", image_name="example.com/web", image_id="sha512-0",
                      tree="deps-sha512-0", lower="/lower", overlay=True, exec=("/bin/web",),
                      env=(("PATH", "/bin"), ("A", "b=c")), uid=1000, gid=100)
    return PlacedApp(app=app._replace(**fields), root="/pod/rootfs",
                     mount_sources=tuple(f"/host/{i}" for i, _ in
                                         enumerate(fields.get("mounts", ()))),  # type: ignore[arg-type]
                     etc_overrides=(("resolv.conf", "nameserver 10.0.0.1\n"),))


def config(app: PlacedApp, **kwargs: object) -> dict:  # type: ignore[type-arg]
    arguments: dict[str, object] = {
        "hostname": "pod", "namespaces": {"pid": "/proc/9/ns/pid", "mount": None},
        "cgroups_path": "/parent/rkt-x/app-web", "protect_kernel_paths": True,
        "etc_override_dir": "/pod/oci/web/etc", **kwargs}
    return app_config(app, **arguments)  # type: ignore[arg-type]


def test_the_process_is_the_apps() -> None:
    process = config(placed(capabilities=("CAP_CHOWN",), supplementary_gids=(5,),
                            working_directory="/srv", no_new_privileges=True,
                            oom_score_adj=300))["process"]
    assert process["args"] == ["/bin/web"]
    assert process["env"] == ["PATH=/bin", "A=b=c"]
    assert process["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5]}
    assert process["cwd"] == "/srv"
    assert (process["noNewPrivileges"], process["oomScoreAdj"]) == (True, 300)
    # a non-root app holds nothing; its set bounds what exec can give it
    assert process["capabilities"] == {"bounding": ["CAP_CHOWN"], "inheritable": ["CAP_CHOWN"],
                                       "permitted": [], "effective": [], "ambient": []}


def test_root_holds_its_set_and_none_means_all_rkt_holds() -> None:
    root = config(placed(uid=0, capabilities=("CAP_KILL",)))["process"]["capabilities"]
    assert root["permitted"] == root["effective"] == ["CAP_KILL"]
    everything = config(placed(uid=0, capabilities=None))["process"]["capabilities"]
    assert everything["bounding"] == held_capabilities()
    assert everything["ambient"] == []


def test_root_mounts_namespaces_and_cgroup() -> None:
    document = config(placed(read_only_rootfs=True, mounts=(
        AppMount("data", "/data", read_only=True, recursive=False),
        AppMount("logs", "/var/log"))))
    assert document["ociVersion"].startswith("1.0.")
    assert document["root"] == {"path": "/pod/rootfs", "readonly": True}
    mounts = {m["destination"]: m for m in document["mounts"]}
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/dev/console"} <= set(mounts)
    assert mounts["/data"] == {"destination": "/data", "type": "bind", "source": "/host/0",
                               "options": ["bind", "ro"]}
    assert mounts["/var/log"]["options"] == ["rbind"]
    assert mounts["/etc/resolv.conf"]["source"] == "/pod/oci/web/etc/resolv.conf"
    linux = document["linux"]
    assert linux["namespaces"] == [{"type": "pid", "path": "/proc/9/ns/pid"}, {"type": "mount"}]
    assert linux["cgroupsPath"] == "/parent/rkt-x/app-web"
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert "maskedPaths" not in config(placed(), protect_kernel_paths=False)["linux"]


def test_limits_are_given_to_the_runtime_too() -> None:
    from rkt.api import Resources

    resources = config(placed(resources=Resources(memory_bytes=64_000_000, cpu_millis=250,
                                                  cpu_shares=512)))["linux"]["resources"]
    assert resources["memory"] == {"limit": 64_000_000}
    assert resources["cpu"] == {"quota": 25_000, "period": 100_000, "shares": 512}


def test_a_terminal_replaces_the_null_console() -> None:
    document = config(placed(), terminal=True)
    assert document["process"]["terminal"] is True
    assert "/dev/console" not in {m["destination"] for m in document["mounts"]}


# -- seccomp -------------------------------------------------------------------------------
def test_rkts_default_filter_as_oci_rules() -> None:
    profile = oci_seccomp(default_filter())
    assert profile is not None
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    [listed, *clone_rules, clone3] = profile["syscalls"]
    assert {"mount", "unshare", "setns", "kexec_load", "bpf"} <= set(listed["names"])
    assert (listed["action"], listed["errnoRet"]) == ("SCMP_ACT_ERRNO", errno.EPERM)
    assert {rule["args"][0]["value"] for rule in clone_rules} >= {0x10000000, 0x20000000}
    assert all(rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" for rule in clone_rules)
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}


def test_retain_sets_kill_and_no_filter_as_oci_rules() -> None:
    retained = oci_seccomp(compile_filter("retain", ("read", "write"), ""))
    assert retained is not None
    assert retained["defaultAction"] == "SCMP_ACT_KILL_PROCESS"
    [allowed] = retained["syscalls"]
    assert {"read", "write", "execve", "exit_group"} <= set(allowed["names"])
    assert oci_seccomp(None) is None
    assert oci_seccomp(compile_filter("retain", ("@appc.io/all",), "")) is None
    nothing = oci_seccomp(compile_filter("remove", ("@appc.io/all",), "EACCES"))
    assert nothing is not None
    assert (nothing["defaultAction"], nothing["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO",
                                                                      errno.EACCES)
    assert "read" not in nothing["syscalls"][0]["names"]


# -- the runtime -----------------------------------------------------------------------------
def test_stage1_d_names_the_runtime_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = OciStage1()
    with pytest.raises(UsageError, match=r"options.oci.kernel: unknown option \(known: "):
        backend.configure({"kernel": "/boot/vmlinuz"})
    pod = Pod(tmp_path / "pods", "1f2e3d4c-0000-0000-0000-000000000000", "run")
    rootfs = pod.stage1_rootfs()
    (rootfs / "rkt").mkdir(parents=True)
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    assert runtime_name(pod) == "runc"
    backend.configure({"runtime": "crun"})
    backend.build_image(rootfs)
    assert runtime_name(pod) == "crun"
    monkeypatch.setenv(RUNTIME_ENV, "/opt/bin/runsc")
    assert runtime_name(pod) == "/opt/bin/runsc"
