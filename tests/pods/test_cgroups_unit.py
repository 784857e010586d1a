"""``rkt.pod.cgroups`` without running a pod: isolators to limits, the host's
hierarchies, and the limit files written for cgroup v1 and v2.

This host has cgroup v1 (a hybrid hierarchy), so the v2 writer and the v2
detection are checked against a fake directory tree standing in for
``/sys/fs/cgroup``: the kernel's files are plain files here, which is all the
writer sees of them. The v1 writer runs for real in ``test_cgroups.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rkt.errors import PodError
from rkt.pod import supervisor
from rkt.pod.cgroups import (
    CgroupHost,
    Hierarchy,
    cpu_weight,
    create_pod_cgroups,
    detect_host,
    join,
    own_cgroups,
    pod_cgroups,
    recorded_pod_dirs,
    remove_pod_cgroups,
    resolve_resources,
    setup_pod_cgroups,
    size_text,
    stage1_cgroup,
)
from rkt.pod.contract import PodCgroups, ResolvedApp, ResolvedPod, Resources
from rkt.pod.dirs import Pod
from rkt_testing import RktEnv, assert_one_line_error

UUID = "0d3f7d24-6d55-4a8e-9c62-6b0c1f0e5a11"


def memory(limit: str, request: str | None = None) -> dict[str, object]:
    value = {"limit": limit} if request is None else {"limit": limit, "request": request}
    return {"name": "resource/memory", "value": value}


def cpu(limit: str | None = None, request: str | None = None) -> dict[str, object]:
    value = {k: v for k, v in (("limit", limit), ("request", request)) if v is not None}
    return {"name": "resource/cpu", "value": value}


# -- isolators to limits ------------------------------------------------------------------
@pytest.mark.parametrize(("isolators", "expected"), [
    ([], Resources()),
    ([memory("64M")], Resources(memory_bytes=64_000_000)),
    ([memory("64Mi", request="32Mi")], Resources(memory_bytes=64 * 2**20)),
    # the request defaults to the limit (ace.md), and becomes 1024 shares per CPU
    ([cpu("500m")], Resources(cpu_millis=500, cpu_shares=512)),
    ([cpu("1.5", request="250m")], Resources(cpu_millis=1500, cpu_shares=256)),
    ([cpu(request="2")], Resources(cpu_shares=2048)),
    # os/linux/cpu-shares wins over the request (Nomad passes --cpu-shares)
    ([cpu("500m"), {"name": "os/linux/cpu-shares", "value": 100}],
     Resources(cpu_millis=500, cpu_shares=100)),
    ([cpu(request="1m")], Resources(cpu_shares=2)),  # the kernel's smallest weight
    # more CPUs than the host has: no throttling, but accepted as rkt 1.x did, since
    # Nomad's driver passes `--cpu=<its CPU shares>` (issue 15)
    ([cpu("100")], Resources(cpu_millis=100_000, cpu_shares=102400)),
])
def test_isolators_become_limits(isolators: list[dict[str, object]],
                                 expected: Resources) -> None:
    assert resolve_resources(isolators, 'app "a"') == expected


@pytest.mark.parametrize(("isolators", "message"), [
    ([memory("2M")], 'app "a": memory limit 2M is below the minimum of 4Mi'),
    ([memory("100m")], 'app "a": memory limit 0 is below the minimum of 4Mi'),
    ([memory("1000Ti")], 'app "a": memory limit 1000Ti is more than this host\'s '),
    ([memory("64Q")], 'app "a": resource/memory limit: "64Q" is not a quantity'),
    ([cpu("5m")], 'app "a": CPU limit 0.005 is below the minimum of 10m'),
    ([{"name": "os/linux/cpu-shares", "value": 1}],
     'app "a": os/linux/cpu-shares must be a whole number from 2 to 262144, not 1'),
])
def test_limits_that_cannot_work_are_refused(isolators: list[dict[str, object]],
                                             message: str) -> None:
    with pytest.raises(PodError) as caught:
        resolve_resources(isolators, 'app "a"')
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_pod_needs_room_for_its_stage1_too() -> None:
    assert resolve_resources([memory("16Mi")], 'app "a"') == Resources(memory_bytes=16 * 2**20)
    with pytest.raises(PodError, match="the pod: memory limit 16Mi is below the minimum of 32Mi"):
        resolve_resources([memory("16Mi")], "the pod", pod=True)


def test_sizes_read_the_way_users_write_them() -> None:
    assert [size_text(n) for n in (64 * 2**20, 64_000_000, 1536 * 1024, 100)] == [
        "64Mi", "64M", "1536Ki", "100"]
    # v1 shares to v2 weight: the ends and the default map onto each other
    assert (cpu_weight(2), cpu_weight(1024), cpu_weight(262144)) == (1, 39, 10000)


# -- the host's hierarchies --------------------------------------------------------------
def _mount(number: int, point: str, fstype: str, options: str, root: str = "/") -> str:
    return f"{number} 1 0:{number} {root} {point} rw,relatime - {fstype} {fstype} {options}"


def test_a_hybrid_v1_host_uses_its_memory_cpu_and_cpuacct_hierarchies() -> None:
    mountinfo = "\n".join([
        _mount(30, "/sys/fs/cgroup/unified", "cgroup2", "rw"),
        _mount(31, "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        _mount(32, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
        _mount(33, "/sys/fs/cgroup/pids", "cgroup", "rw,pids"),
        # a container's view of a subtree is not the hierarchy
        _mount(34, "/other/memory", "cgroup", "rw,memory", root="/machine.slice"),
    ])
    assert detect_host(mountinfo) == CgroupHost(1, (
        Hierarchy("/sys/fs/cgroup/cpu,cpuacct", frozenset({"cpu", "cpuacct"})),
        Hierarchy("/sys/fs/cgroup/memory", frozenset({"memory"})),
    ))


def test_a_unified_host_uses_v2(tmp_path: Path) -> None:
    # mocked: a fake unified mount (this host is v1); detection reads cgroup.controllers
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    host = detect_host(_mount(30, str(tmp_path), "cgroup2", "rw,nsdelegate"))
    assert host == CgroupHost(2, (Hierarchy(str(tmp_path), frozenset({"cpu", "memory"})),))
    (tmp_path / "cgroup.controllers").write_text("pids\n")
    assert detect_host(_mount(30, str(tmp_path), "cgroup2", "rw")) is None


def test_this_host_is_detected() -> None:
    host = detect_host()
    if host is None:
        pytest.skip("this host has no cgroup memory and cpu controllers")
    controllers = set().union(*(h.controllers for h in host.hierarchies))
    assert {"memory", "cpu"} <= controllers


# -- the v2 writer, on a fake tree -----------------------------------------------------------
def _app(name: str, resources: Resources) -> ResolvedApp:
    return ResolvedApp(name=name, image_name="example.com/x", image_id="sha512-x", tree="t",
                       lower="/l", overlay=True, exec=("/bin/true",), env=(), uid=0, gid=0,
                       resources=resources)


def test_the_v2_writer_makes_the_layout_and_writes_its_limit_files(tmp_path: Path) -> None:
    # mocked because the host is v1: a directory tree stands in for /sys/fs/cgroup
    # (the kernel would make the control files; here they are written as plain files)
    fake_root = tmp_path / "cgroup"
    fake_root.mkdir()
    pods_dir = tmp_path / "pods"
    (pods_dir / "run" / UUID).mkdir(parents=True)
    pod = Pod(pods_dir, UUID, "run")
    resolved = ResolvedPod(
        uuid=UUID, resources=Resources(memory_bytes=256 * 2**20),
        apps=(_app("web", Resources(memory_bytes=64_000_000, cpu_millis=100, cpu_shares=102)),
              _app("idle", Resources())),
    )
    host = CgroupHost(2, (Hierarchy(str(fake_root), frozenset({"memory", "cpu"})),))
    cgroups = create_pod_cgroups(pod, resolved, host, "/machine.slice/rkt/")
    pod_dir = fake_root / "machine.slice" / "rkt" / f"rkt-{UUID}"
    assert cgroups == PodCgroups(2, (str(pod_dir),))
    # every level down to the pod's hands memory and cpu to its children
    for level in (fake_root, fake_root / "machine.slice", fake_root / "machine.slice" / "rkt",
                  pod_dir):
        assert (level / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (pod_dir / "memory.max").read_text() == str(256 * 2**20)
    web = pod_dir / "app-web"
    assert (web / "memory.max").read_text() == "64000000"
    assert (web / "cpu.max").read_text() == "10000 100000"
    assert (web / "cpu.weight").read_text() == str(cpu_weight(102))
    assert (pod_dir / "stage1").is_dir()
    assert not (pod_dir / "app-idle" / "memory.max").exists()  # no limit, no file
    assert json.loads((pod.path / "cgroups").read_text())["pod_dirs"] == [str(pod_dir)]
    assert cgroups.app_dirs("web") == (str(web),)


def test_gc_removes_only_what_the_pod_names_as_its_own(tmp_path: Path) -> None:
    pods_dir = tmp_path / "pods"
    (pods_dir / "run" / UUID).mkdir(parents=True)
    pod = Pod(pods_dir, UUID, "run")
    victim = tmp_path / "not-a-pod"
    victim.mkdir()
    ours = tmp_path / f"rkt-{UUID}" / "app-a"
    ours.mkdir(parents=True)
    (pod.path / "cgroups").write_text(json.dumps(
        {"version": 1, "pod_dirs": [str(victim), str(ours.parent)]}))
    assert recorded_pod_dirs(pod) == [str(ours.parent)]
    remove_pod_cgroups(pod)
    assert victim.is_dir() and not ours.parent.exists()


# -- the supervisor's side -------------------------------------------------------------------
def test_the_supervisor_reads_oom_kills_from_v1_and_v2_files(tmp_path: Path) -> None:
    v1, v2, none = tmp_path / "v1", tmp_path / "v2", tmp_path / "none"
    for directory in (v1, v2, none):
        directory.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    # v2 (mocked: the host is v1)
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert supervisor.oom_kills({"cgroups": [str(tmp_path / "cpu"), str(v1)]}) == 2
    assert supervisor.oom_kills({"cgroups": [str(v2)]}) == 1
    assert supervisor.oom_kills({"cgroups": [str(none)]}) == 0
    assert supervisor.oom_kills({"cgroups": []}) == 0


def test_nspawn_places_the_apps_cgroups_below_its_binds() -> None:
    from rkt.errors import Stage1Error
    from rkt_stage1_nspawn.backend import _cgroup_in_container

    cgroups = PodCgroups(1, ("/sys/fs/cgroup/cpu,cpuacct/rkt/rkt-u",
                             "/sys/fs/cgroup/memory/rkt/rkt-u"))
    place = _cgroup_in_container(cgroups)
    assert [place(d) for d in cgroups.app_dirs("web")] == [
        "/rkt/cgroup/0/app-web", "/rkt/cgroup/1/app-web"]
    with pytest.raises(Stage1Error):
        place("/sys/fs/cgroup/memory/elsewhere")


# -- the parent, from paths.d ------------------------------------------------------------------
def test_the_cgroup_parent_is_a_paths_d_key(rkt_env: RktEnv) -> None:
    (rkt_env.local_config / "paths.d").mkdir()
    config = rkt_env.local_config / "paths.d" / "cgroup.json"
    config.write_text(json.dumps(
        {"rktKind": "paths", "rktVersion": "v1", "cgroup-parent": "machine.slice/rkt"}))
    shown = rkt_env.run("config", check=True).stdout
    assert '"cgroup-parent": "machine.slice/rkt"' in shown
    for bad in ("", "/", "rkt/../..", 7):
        config.write_text(json.dumps(
            {"rktKind": "paths", "rktVersion": "v1", "cgroup-parent": bad}))
        assert_one_line_error(rkt_env.run("config"),
                              "'cgroup-parent' must be a cgroup path such as")


def test_pods_go_below_the_parent_in_every_hierarchy() -> None:
    host = CgroupHost(1, (Hierarchy("/sys/fs/cgroup/memory", frozenset({"memory"})),
                          Hierarchy("/sys/fs/cgroup/cpu", frozenset({"cpu"}))))
    assert pod_cgroups(host, "/machine.slice//rkt/", UUID).pod_dirs == (
        f"/sys/fs/cgroup/memory/machine.slice/rkt/rkt-{UUID}",
        f"/sys/fs/cgroup/cpu/machine.slice/rkt/rkt-{UUID}")
    with pytest.raises(PodError, match="without"):
        pod_cgroups(host, "../escape", UUID)


def test_a_host_without_controllers_refuses_limits_and_runs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mocked: this host has the controllers; detection finds none on such a host
    monkeypatch.setattr("rkt.pod.cgroups.detect_host", lambda: None)
    pods_dir = tmp_path / "pods"
    (pods_dir / "run" / UUID).mkdir(parents=True)
    pod = Pod(pods_dir, UUID, "run")
    plain = ResolvedPod(uuid=UUID, apps=(_app("a", Resources()),))
    assert setup_pod_cgroups(pod, plain, None) is None
    limited = plain._replace(apps=(_app("a", Resources(memory_bytes=2**30)),))
    with pytest.raises(PodError) as refused:
        setup_pod_cgroups(pod, limited, None)
    assert str(refused.value) == ('app "a" has resource limits, but this host has no cgroup '
                                  "memory and cpu controllers to enforce them")
    assert not (pod.path / "cgroups").exists()


def test_rkt_finds_its_own_cgroups_to_move_back_to() -> None:
    v1 = CgroupHost(1, (Hierarchy("/sys/fs/cgroup/cpu,cpuacct", frozenset({"cpu", "cpuacct"})),
                        Hierarchy("/sys/fs/cgroup/memory", frozenset({"memory"}))))
    proc = "9:name=systemd:/\n4:memory:/jobs/7\n2:cpu,cpuacct:/\n0::/\n"
    assert own_cgroups(v1, proc) == ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory/jobs/7")
    v2 = CgroupHost(2, (Hierarchy("/sys/fs/cgroup", frozenset({"cpu", "memory"})),))
    assert own_cgroups(v2, "0::/user.slice/session-1.scope\n") == (
        "/sys/fs/cgroup/user.slice/session-1.scope",)
    with pytest.raises(PodError, match="cannot tell which cgroup"):
        own_cgroups(v1, "0::/\n")


def test_the_stage1_cgroup_is_left_when_the_backend_returns(tmp_path: Path) -> None:
    host = detect_host()
    if host is None:
        pytest.skip("this host has no cgroup memory and cpu controllers")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = own_cgroups(host)
    pods_dir = tmp_path / "pods"
    (pods_dir / "run" / UUID).mkdir(parents=True)
    pod = Pod(pods_dir, UUID, "run")
    parent = f"rkt-test-{os.getpid()}"
    cgroups = setup_pod_cgroups(pod, ResolvedPod(uuid=UUID, apps=(_app("a", Resources()),)),
                                parent)
    assert cgroups is not None
    try:
        with stage1_cgroup(cgroups):
            assert own_cgroups(host) == cgroups.stage1_dirs()
        assert own_cgroups(host) == before
        # a process about to exit stays (issue 14), but not when the block failed:
        # it may have the pod's cgroups to remove
        with pytest.raises(PodError), stage1_cgroup(cgroups, move_back=False):
            raise PodError("the stage1 did not start")
        assert own_cgroups(host) == before
        with stage1_cgroup(cgroups, move_back=False):
            pass
        assert own_cgroups(host) == cgroups.stage1_dirs()
    finally:
        join(before)
        remove_pod_cgroups(pod)
        for hierarchy in host.hierarchies:
            os.rmdir(f"{hierarchy.path}/{parent}")


def test_nspawn_drops_its_cgroup_namespace_only_on_v2() -> None:
    from rkt.pod.contract import PodRuntime
    from rkt_stage1_nspawn.backend import _nspawn_environment

    v1 = PodRuntime(cgroups=PodCgroups(1, ("/sys/fs/cgroup/memory/rkt/rkt-u",)))
    v2 = PodRuntime(cgroups=PodCgroups(2, ("/sys/fs/cgroup/rkt/rkt-u",)))
    assert "SYSTEMD_NSPAWN_USE_CGNS" not in _nspawn_environment(v1)
    assert _nspawn_environment(v2)["SYSTEMD_NSPAWN_USE_CGNS"] == "0"
