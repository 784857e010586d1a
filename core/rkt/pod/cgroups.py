"""The pod's cgroups: resolving ``resource/*`` limits and applying them on the host.

stage0 owns the cgroups (docs/stage1.md "cgroups"): at prepare time it turns the
isolators of each app and of the pod into :class:`~rkt.pod.contract.Resources`
(refusing what cannot work), and at run time, before the stage1 starts, it makes
under the configured parent (``paths.d`` key ``cgroup-parent``, default ``rkt``)::

    <hierarchy>/<parent>/rkt-<uuid>/            the pod's limits
    <hierarchy>/<parent>/rkt-<uuid>/stage1/     stage0 itself, so the stage1 and supervisor
    <hierarchy>/<parent>/rkt-<uuid>/app-<name>/ each app's limits; its processes join it

in the unified hierarchy (cgroup v2), or in each mounted v1 hierarchy of the
memory, cpu and cpuacct controllers. The directories made are recorded in
``<pod>/cgroups`` first, so ``rkt gc`` and ``rm`` remove them even after a crash.
stage0 then moves itself into ``stage1/`` while the backend runs (as rkt 1.x's
stage0 became its stage1 by exec), so whatever a backend starts is inside the
pod's cgroup; the supervisor moves each app's process into ``app-<name>/`` just
before it execs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from rkt.errors import PodError
from rkt.log import get_logger
from rkt.pod.contract import PodCgroups, ResolvedPod, Resources
from rkt.pod.dirs import Pod
from rkt.quantity import parse_quantity

LOG = get_logger(__name__)

#: the ``paths.d`` key naming the parent of the pods' cgroups, and its default
PARENT_KEY = "cgroup-parent"
DEFAULT_PARENT = "rkt"
#: in the pod directory: the cgroup directories stage0 made for the pod
CGROUPS_FILE = "cgroups"

#: below these an app (or a pod, which also holds its stage1) cannot even start
MIN_APP_MEMORY = 4 * 2**20
MIN_POD_MEMORY = 32 * 2**20
#: the kernel's smallest CFS quota is 1 ms; per 100 ms period that is 10m of a CPU
CFS_PERIOD_US = 100_000
MIN_CPU_MILLIS = 10
#: cgroup v1's cpu.shares range (appc's os/linux/cpu-shares)
MIN_SHARES, MAX_SHARES = 2, 262_144

#: the controllers rkt uses; cpuacct only for accounting (cpuacct.usage)
CONTROLLERS = frozenset({"memory", "cpu", "cpuacct"})

MOUNTINFO = "/proc/self/mountinfo"


# -- resolving isolators to limits -----------------------------------------------------
def size_text(size: int) -> str:
    """Bytes the way a user writes them: ``64Mi``, ``64M``, ``1536Ki``, ``100``."""
    for suffix, unit in (("Ti", 2**40), ("T", 10**12), ("Gi", 2**30), ("G", 10**9),
                         ("Mi", 2**20), ("M", 10**6), ("Ki", 2**10), ("k", 10**3)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _quantity(isolator: Mapping[str, Any], key: str, what: str) -> Decimal | None:
    value = (isolator.get("value") or {}).get(key)
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise PodError(f'{what}: {isolator["name"]} {key}: {exc}') from exc


def resolve_resources(
    isolators: Iterable[Mapping[str, Any]] | None, what: str, *, pod: bool = False
) -> Resources:
    """The limits that ``isolators`` ask for; ``what`` names their owner in errors.

    ``resource/memory``'s limit is the memory limit (its request is a scheduling
    hint, as in rkt 1.x and Kubernetes, and sets nothing); ``resource/cpu``'s
    limit is a CFS quota, its request (the limit when omitted, ace.md) the CPU
    shares, which ``os/linux/cpu-shares`` overrides. Refuses, with one line,
    limits below what a process needs to start and memory above what the host has.
    """
    memory = cpu_limit = cpu_request = None
    shares: int | None = None
    for isolator in isolators or ():
        name = isolator.get("name")
        if name == "resource/memory":
            memory = _quantity(isolator, "limit", what)
        elif name == "resource/cpu":
            cpu_limit = _quantity(isolator, "limit", what)
            cpu_request = _quantity(isolator, "request", what)
        elif name == "os/linux/cpu-shares":
            value = isolator.get("value")
            if isinstance(value, bool) or not isinstance(value, int) or not (
                MIN_SHARES <= value <= MAX_SHARES
            ):
                raise PodError(f"{what}: os/linux/cpu-shares must be a whole number from "
                               f"{MIN_SHARES} to {MAX_SHARES}, not {value!r}")
            shares = value
    memory_bytes = None
    if memory is not None:
        memory_bytes = int(memory)
        minimum = MIN_POD_MEMORY if pod else MIN_APP_MEMORY
        if memory_bytes < minimum:
            raise PodError(f"{what}: memory limit {size_text(memory_bytes)} is below the "
                           f"minimum of {size_text(minimum)}")
        host = _host_memory()
        if host is not None and memory_bytes > host:
            raise PodError(f"{what}: memory limit {size_text(memory_bytes)} is more than "
                           f"this host's {size_text(host // 2**20 * 2**20)}")
    cpu_millis = None
    if cpu_limit is not None:
        cpu_millis = int(cpu_limit * 1000)
        if cpu_millis < MIN_CPU_MILLIS:
            raise PodError(f"{what}: CPU limit {cpu_limit.normalize()} is below the minimum of "
                           f"{MIN_CPU_MILLIS}m")
        # A quota above the host's CPUs never throttles, but rkt 1.x accepted it and
        # Nomad's rkt driver passes its CPU shares as --cpu (100 by default), so it
        # is written as asked (issue 15)
    if shares is None:
        request = cpu_request if cpu_request is not None else cpu_limit
        if request is not None:
            # Kubernetes' conversion: 1024 shares per CPU requested
            shares = min(MAX_SHARES, max(MIN_SHARES, int(request * 1024)))
    return Resources(memory_bytes=memory_bytes, cpu_millis=cpu_millis, cpu_shares=shares)


def has_limits(resources: Resources) -> bool:
    return any(value is not None for value in resources)


# -- the host's hierarchies ------------------------------------------------------------
class Hierarchy(NamedTuple):
    """A mounted cgroup hierarchy: where, and which of rkt's controllers it has."""

    path: str
    controllers: frozenset[str]


class CgroupHost(NamedTuple):
    """The hierarchies rkt puts pods into: version 2 (one) or 1 (one per mount)."""

    version: int
    hierarchies: tuple[Hierarchy, ...]


def detect_host(mountinfo: str | None = None) -> CgroupHost | None:
    """The host's cgroup setup from ``/proc/self/mountinfo``; ``None`` without
    the memory and cpu controllers.

    v1 (and hybrid: v1 controllers next to an empty unified mount) wins when
    the memory controller is on a v1 hierarchy, because then it cannot be in
    the unified one.
    """
    if mountinfo is None:
        try:
            mountinfo = Path(MOUNTINFO).read_text()
        except OSError:
            return None
    v1: dict[str, frozenset[str]] = {}
    v2: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-")
        except ValueError:
            continue
        root, mount_point = fields[3], fields[4].replace("\\040", " ")
        fstype, super_options = fields[separator + 1], fields[separator + 3]
        if root != "/":
            continue  # a bind mount of a subtree (a container's view), not the hierarchy
        if fstype == "cgroup":
            wanted = frozenset(super_options.split(",")) & CONTROLLERS
            if wanted and wanted not in v1.values():
                v1[mount_point] = wanted
        elif fstype == "cgroup2":
            v2.append(mount_point)
    if any("memory" in controllers for controllers in v1.values()):
        if not any("cpu" in controllers for controllers in v1.values()):
            return None
        return CgroupHost(1, tuple(Hierarchy(p, c) for p, c in v1.items()))
    for mount_point in v2:
        try:
            available = frozenset((Path(mount_point) / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if {"memory", "cpu"} <= available:
            return CgroupHost(2, (Hierarchy(mount_point, available & CONTROLLERS),))
    return None


def normalise_parent(parent: str) -> str:
    """``paths.d``'s ``cgroup-parent``: a relative path below each hierarchy's root."""
    parts = [p for p in parent.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise PodError(f'cgroup parent "{parent}" must be a path such as "rkt" or '
                       '"machine.slice/rkt", without ".."')
    return "/".join(parts)


def pod_cgroups(host: CgroupHost, parent: str, uuid: str) -> PodCgroups:
    """Where the pod's cgroups go (nothing is made)."""
    parent = normalise_parent(parent)
    return PodCgroups(version=host.version, pod_dirs=tuple(
        f"{h.path}/{parent}/rkt-{uuid}" for h in host.hierarchies))


# -- writing limits ---------------------------------------------------------------------
def _write(directory: Path, name: str, value: str) -> None:
    try:
        (directory / name).write_text(value)
    except OSError as exc:
        raise PodError(f"cannot set {directory / name} to {value}: "
                       f"{exc.strerror or exc}") from exc


def write_limits_v1(directory: Path, controllers: frozenset[str], resources: Resources) -> None:
    """cgroup v1: ``memory.limit_in_bytes`` (and the memory+swap limit, so the
    limit is not dodged by swapping), ``cpu.cfs_quota_us`` per ``cpu.cfs_period_us``,
    ``cpu.shares``."""
    if "memory" in controllers and resources.memory_bytes is not None:
        _write(directory, "memory.limit_in_bytes", str(resources.memory_bytes))
        if (directory / "memory.memsw.limit_in_bytes").exists():
            _write(directory, "memory.memsw.limit_in_bytes", str(resources.memory_bytes))
    if "cpu" in controllers:
        if resources.cpu_millis is not None:
            _write(directory, "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(directory, "cpu.cfs_quota_us",
                   str(resources.cpu_millis * CFS_PERIOD_US // 1000))
        if resources.cpu_shares is not None:
            _write(directory, "cpu.shares", str(resources.cpu_shares))


def cpu_weight(shares: int) -> int:
    """cgroup v1 shares (2..262144) to v2's ``cpu.weight`` (1..10000), as Kubernetes maps them."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def write_limits_v2(directory: Path, resources: Resources) -> None:
    """cgroup v2: ``memory.max`` (with no swap beyond it), ``cpu.max``, ``cpu.weight``."""
    if resources.memory_bytes is not None:
        _write(directory, "memory.max", str(resources.memory_bytes))
        if (directory / "memory.swap.max").exists():
            _write(directory, "memory.swap.max", "0")
    if resources.cpu_millis is not None:
        _write(directory, "cpu.max",
               f"{resources.cpu_millis * CFS_PERIOD_US // 1000} {CFS_PERIOD_US}")
    if resources.cpu_shares is not None:
        _write(directory, "cpu.weight", str(cpu_weight(resources.cpu_shares)))


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise PodError(f"cannot create cgroup {directory}: {exc.strerror or exc}") from exc


def _enable_controllers(directory: Path, controllers: frozenset[str]) -> None:
    """v2: let ``directory``'s children have these controllers."""
    wanted = " ".join(f"+{c}" for c in sorted(controllers & {"memory", "cpu"}))
    _write(directory, "cgroup.subtree_control", wanted)


def create_pod_cgroups(pod: Pod, resolved: ResolvedPod, host: CgroupHost,
                       parent: str) -> PodCgroups:
    """Make the pod's cgroups with their limits (the pod's and each app's).

    ``<pod>/cgroups`` is written before any directory is made, so a crash at any
    point leaves nothing ``gc`` does not know about.
    """
    cgroups = pod_cgroups(host, parent, pod.uuid)
    record = pod.path / CGROUPS_FILE
    tmp = record.with_name(f".{CGROUPS_FILE}.tmp")
    tmp.write_text(json.dumps({"version": cgroups.version, "pod_dirs": cgroups.pod_dirs}))
    os.rename(tmp, record)
    for hierarchy, pod_dir in zip(host.hierarchies, cgroups.pod_dirs, strict=True):
        root = Path(hierarchy.path)
        directory = Path(pod_dir)
        between = reversed(directory.relative_to(root).parents[:-1])
        chain = [root, *(root / step for step in between), directory]
        for level, path in enumerate(chain):
            if level:
                _make_dir(path)
            if host.version == 2:
                _enable_controllers(path, hierarchy.controllers)
        _apply(host.version, directory, hierarchy.controllers, resolved.resources)
        _make_dir(directory / "stage1")
        for app in resolved.apps:
            app_dir = directory / f"app-{app.name}"
            _make_dir(app_dir)
            _apply(host.version, app_dir, hierarchy.controllers, app.resources)
    return cgroups


def _apply(version: int, directory: Path, controllers: frozenset[str],
           resources: Resources) -> None:
    if version == 2:
        write_limits_v2(directory, resources)
    else:
        write_limits_v1(directory, controllers, resources)


def join(directories: Iterable[str]) -> None:
    """Move this process into each of ``directories``.

    On cgroup v1 the thread that calls moves alone, through ``tasks``
    (:func:`rkt.pod.supervisor.join_cgroup`, as the supervisor's apps join
    theirs), which spares a pod start the RCU grace period a whole-process move
    waits for (5-15 ms on a quiet machine). rkt runs one thread here, and
    whatever it starts is forked from it. v2 moves the process through
    ``cgroup.procs``.
    """
    # imported here so that gc, which loads this module, need not load that one too
    # (on the run path rkt.pod.prepare has loaded it already)
    from rkt.pod.supervisor import join_cgroup

    for directory in directories:
        try:
            join_cgroup(directory)
        except OSError as exc:
            raise PodError(f"cannot join cgroup {directory}: {exc.strerror or exc}") from exc


def own_cgroups(host: CgroupHost, proc_cgroup: str | None = None) -> tuple[str, ...]:
    """This process's cgroup directory in each of ``host``'s hierarchies."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    lines = [line.split(":", 2) for line in proc_cgroup.splitlines() if line.count(":") >= 2]
    dirs = []
    for hierarchy in host.hierarchies:
        for _, controllers, path in lines:
            if host.version == 2:
                found = controllers == ""
            else:
                found = frozenset(controllers.split(",")) & CONTROLLERS == hierarchy.controllers
            if found:
                dirs.append(hierarchy.path + path.rstrip("/"))
                break
        else:
            raise PodError(f"cannot tell which cgroup of {hierarchy.path} rkt runs in")
    return tuple(dirs)


@contextlib.contextmanager
def stage1_cgroup(cgroups: PodCgroups | None, *, move_back: bool = True) -> Iterator[None]:
    """Run the block with this process in the pod's ``stage1/`` cgroups, so that
    whatever the backend starts is in the pod's; then move it back, for a
    program that runs pods in-process.

    ``move_back=False`` is for a process that exits when the block ends (the
    ``rkt`` command): it stays, which spares it a migration (on cgroup v1, an RCU
    grace period: 10-20 ms). When the block raises it always moves back, so that
    it can remove the pod's cgroups.
    """
    host = detect_host() if cgroups is not None else None
    if cgroups is None or host is None:
        yield
        return
    previous = own_cgroups(host)
    join(cgroups.stage1_dirs())
    try:
        yield
    except BaseException:
        _join_back(previous)
        raise
    if move_back:
        _join_back(previous)


def _join_back(previous: tuple[str, ...]) -> None:
    try:
        join(previous)
    except PodError as exc:
        LOG.debug("cannot move back to the cgroups rkt started in: %s", exc)


def setup_pod_cgroups(pod: Pod, resolved: ResolvedPod, parent: str | None,
                      host: CgroupHost | None = None) -> PodCgroups | None:
    """At ``rkt run``: make the pod's cgroups (run the stage1 in them with
    :func:`stage1_cgroup`).

    On a host without the memory and cpu controllers a pod without limits runs
    without cgroups; one with limits is refused, since they could not hold.
    """
    host = host or detect_host()
    if host is None:
        limited = [a.name for a in resolved.apps if has_limits(a.resources)]
        if limited or has_limits(resolved.resources):
            owner = f'app "{limited[0]}"' if limited else "the pod"
            raise PodError(f"{owner} has resource limits, but this host has no cgroup memory "
                           "and cpu controllers to enforce them")
        LOG.debug("no cgroup memory and cpu controllers: the pod runs without cgroups")
        return None
    try:
        cgroups = create_pod_cgroups(pod, resolved, host, parent or DEFAULT_PARENT)
    except BaseException:
        remove_pod_cgroups(pod)
        raise
    return cgroups


# -- removing them ------------------------------------------------------------------------
def recorded_pod_dirs(pod: Pod) -> list[str]:
    """The pod cgroup directories ``<pod>/cgroups`` records (only the pod's own names)."""
    try:
        with open(f"{pod.path_text}/{CGROUPS_FILE}", "rb") as handle:
            document = json.loads(handle.read())
        dirs = [str(d) for d in document["pod_dirs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    # the file is the pod's; never let it name anything but this pod's cgroups
    return [d for d in dirs if os.path.basename(d) == f"rkt-{pod.uuid}"]


def _procs(directory: str) -> list[int]:
    try:
        return [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _remove_tree(directory: str) -> None:
    """rmdir a cgroup and its children, deepest first; kill stragglers of a crashed pod."""
    # readdir's entry types, not a stat of each of the dozens of control files per
    # directory (most of what gc spent on a pod's cgroups)
    try:
        with os.scandir(directory) as entries:
            children = sorted(entry.path for entry in entries if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return
    for child in children:
        _remove_tree(child)
    deadline = time.monotonic() + 5
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            # an exited pod's processes are strays (its stage1 died hard): end them
            for pid in _procs(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def remove_pod_cgroups(pod: Pod) -> None:
    """``gc``/``rm``: remove the pod's cgroups; a failure is a ``--debug`` line."""
    for directory in recorded_pod_dirs(pod):
        try:
            _remove_tree(directory)
        except OSError as exc:
            LOG.debug("cannot remove cgroup %s: %s", directory, exc.strerror or exc)
