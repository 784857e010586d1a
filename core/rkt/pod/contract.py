"""The stage1 contract: a pod as stage0 hands it to a stage1 backend, typed.

stage0 resolves everything that depends on the images and the flags (user and
group numbers, environment, volumes, mounts, capabilities) once, at prepare
time, into a :class:`ResolvedPod`; ``rkt run`` adds the :class:`PodRuntime`
(the options that only matter while the pod runs). A backend receives both as
these frozen objects, decides where things appear inside its isolation, and
hands the shared supervisor a :class:`SupervisorJob`.

Everything crosses a process boundary as JSON, serialised here and only here:
``stage1/rootfs/rkt/apps.json`` is :meth:`ResolvedPod.to_json`, and
``stage1/rootfs/rkt/runtime.json`` (what the supervisor reads, with the system
Python and the standard library only) is :meth:`SupervisorJob.to_json`. Both
carry ``version``, the stage1 interface version (:data:`CONTRACT_VERSION`);
the supervisor refuses a job of any other version. docs/stage1.md describes
every field.

Typed named tuples: immutable records that mypy checks field by field, not the
pydantic schema models, because these are defined, built and read on every pod
start, where importing pydantic would cost more than the pod itself
(docs/benchmarks.md). Not frozen dataclasses either: defining this module's ten
records takes about 2 ms as named tuples and 10 ms as frozen dataclasses, whose
methods are each compiled from source at import time. Change one with
``_replace(...)``.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

__all__ = [
    "CONTRACT_VERSION",
    "AppMount",
    "AppPort",
    "ContractVersionError",
    "NetAttachment",
    "OverlayDirs",
    "PlacedApp",
    "PodCgroups",
    "PodNetwork",
    "PodRuntime",
    "ResolvedApp",
    "ResolvedPod",
    "ResolvedVolume",
    "Resources",
    "SeccompFilter",
    "SupervisorJob",
]

#: the version of the JSON documents below; it is the stage1 interface version
#: (``rkt.stage1.INTERFACE_VERSION``), because the supervisor inside a stage1
#: image is what reads them. 3: apps carry a seccomp filter, which a version 2
#: supervisor would silently not apply.
CONTRACT_VERSION = 3


class ContractVersionError(ValueError):
    """A document of a contract version this rkt does not speak."""


def _check_version(document: dict[str, Any], what: str) -> None:
    version = document.get("version")
    if version != CONTRACT_VERSION:
        raise ContractVersionError(
            f"{what} is of stage1 interface version {version}; this rkt speaks "
            f"{CONTRACT_VERSION}"
        )


def _strings(values: Any) -> tuple[str, ...] | None:
    return None if values is None else tuple(str(v) for v in values)


class ResolvedVolume(NamedTuple):
    """A pod volume, resolved on the host.

    ``kind`` is ``"host"`` (``source`` is the absolute host path the user named)
    or ``"empty"`` (``source`` is relative to the pod directory, which moves
    from ``prepare/`` to ``run/``: use :meth:`host_path`).
    """

    name: str
    kind: str
    source: str
    read_only: bool = False
    recursive: bool = True

    def host_path(self, pod_dir: str) -> str:
        """Where the volume is on the host, for a pod in ``pod_dir``."""
        return self.source if self.source.startswith("/") else f"{pod_dir}/{self.source}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "read_only": self.read_only,
                "recursive": self.recursive}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ResolvedVolume:
        return cls(name=name, kind=str(data["kind"]), source=str(data["source"]),
                   read_only=bool(data["read_only"]), recursive=bool(data["recursive"]))


class AppMount(NamedTuple):
    """A volume mounted into an app at ``target`` (an absolute path in its rootfs).

    ``read_only`` and ``recursive`` are the volume's (appc-spec/pods.md).
    """

    volume: str
    target: str
    read_only: bool = False
    recursive: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"volume": self.volume, "target": self.target, "read_only": self.read_only,
                "recursive": self.recursive}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppMount:
        return cls(volume=str(data["volume"]), target=str(data["target"]),
                   read_only=bool(data["read_only"]), recursive=bool(data["recursive"]))


class AppPort(NamedTuple):
    """A port the app's image declares it listens on (appc-spec/aci.md ``ports``).

    ``port_count`` is appc's ``count``: the ports ``port`` to ``port + count - 1``
    (a tuple's ``count`` method keeps the name). ``--port`` forwards them, by
    name, through CNI's ``portmap`` (``rkt.net.pod``).
    """

    name: str
    protocol: str
    port: int
    port_count: int = 1
    socket_activated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "port": self.port,
                "count": self.port_count, "socket_activated": self.socket_activated}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppPort:
        return cls(name=str(data["name"]), protocol=str(data["protocol"]),
                   port=int(data["port"]), port_count=int(data.get("count", 1)),
                   socket_activated=bool(data.get("socket_activated", False)))


class Resources(NamedTuple):
    """The cgroup limits of an app or a pod, in the kernel's units; ``None``: no limit.

    Resolved by stage0 from ``resource/memory``, ``resource/cpu`` and
    ``os/linux/cpu-shares`` (appc-spec/ace.md) and checked against the host.
    ``cpu_millis`` is the CPU limit in thousandths of a CPU (``500m``: 500);
    ``cpu_shares`` the relative weight in cgroup v1's ``cpu.shares`` scale
    (1024 per CPU requested; v2's ``cpu.weight`` is derived from it).
    """

    memory_bytes: int | None = None
    cpu_millis: int | None = None
    cpu_shares: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "cpu_millis": self.cpu_millis,
                "cpu_shares": self.cpu_shares}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Resources:
        data = data or {}

        def number(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        return cls(memory_bytes=number("memory_bytes"), cpu_millis=number("cpu_millis"),
                   cpu_shares=number("cpu_shares"))


class SeccompFilter(NamedTuple):
    """The app's seccomp filter: what its isolator (or rkt's default) asked for,
    and that compiled for this machine's architecture.

    ``mode`` is ``"remove"`` (every syscall but ``set``) or ``"retain"`` (only
    ``set``); ``set`` is as the isolator or ``--seccomp`` wrote it (``@`` groups
    unexpanded); ``errno`` is the error name a filtered syscall returns, ``""``
    meaning the process is killed with SIGSYS. ``program`` is the classic BPF
    program (``struct sock_filter[]``) in base64, ready for
    ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)`` (docs/isolators.md).
    """

    mode: str
    set: tuple[str, ...]
    errno: str
    program: str

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "set": list(self.set), "errno": self.errno,
                "program": self.program}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SeccompFilter | None:
        if data is None:
            return None
        return cls(mode=str(data["mode"]), set=tuple(str(s) for s in data["set"]),
                   errno=str(data["errno"]), program=str(data["program"]))


class ResolvedApp(NamedTuple):
    """One app of the pod, with everything the image and the flags said resolved.

    Numbers, not names: ``uid``/``gid``/``supplementary_gids`` were looked up
    in the image's ``/etc/passwd`` and ``/etc/group`` (appc-spec/aci.md).
    ``env`` is ordered ``(name, value)`` pairs, already merged in rkt's order
    (inherited, defaults, image, ``--set-env-file``, ``--set-env``, per-app
    ``--environment``). ``capabilities`` is the app's capability set (bounding,
    inheritable and, for uid 0, permitted and effective), ``None`` meaning keep
    every capability (``--insecure-options=capabilities``). ``seccomp`` is the
    filter to install last, ``None`` meaning none (``--insecure-options=seccomp``).
    """

    name: str
    #: the image, for messages and ``rkt export``
    image_name: str
    image_id: str
    #: the tree store ID of the rendered image, and its rootfs on the host
    tree: str
    lower: str
    #: True: mount ``lower`` read-only under an overlay whose upper and work
    #: dirs are ``<pod>/overlay/<tree>/{upper,work}/<name>``; False
    #: (``--no-overlay``): the rootfs was copied to
    #: ``stage1/rootfs/opt/stage2/<name>/rootfs``
    overlay: bool
    exec: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    uid: int
    gid: int
    supplementary_gids: tuple[int, ...] = ()
    working_directory: str = "/"
    read_only_rootfs: bool = False
    mounts: tuple[AppMount, ...] = ()
    capabilities: tuple[str, ...] | None = None
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    seccomp: SeccompFilter | None = None
    #: the ``pre-start`` and ``post-stop`` event handlers' commands
    pre_start: tuple[str, ...] | None = None
    post_stop: tuple[str, ...] | None = None
    ports: tuple[AppPort, ...] = ()
    #: the app's cgroup limits (its own cgroup below the pod's)
    resources: Resources = Resources()

    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def process_json(self) -> dict[str, Any]:
        """The fields that say how the app's process is started, with the names
        the supervisor reads (also what ``rkt enter`` drops privileges by)."""
        return {
            "exec": list(self.exec),
            "env": [list(pair) for pair in self.env],
            "uid": self.uid,
            "gid": self.gid,
            "supplementary_gids": list(self.supplementary_gids),
            "working_directory": self.working_directory,
            "read_only_rootfs": self.read_only_rootfs,
            "capabilities": None if self.capabilities is None else list(self.capabilities),
            "no_new_privileges": self.no_new_privileges,
            "oom_score_adj": self.oom_score_adj,
            "seccomp": None if self.seccomp is None else self.seccomp.to_json(),
            "pre_start": None if self.pre_start is None else list(self.pre_start),
            "post_stop": None if self.post_stop is None else list(self.post_stop),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image_name": self.image_name,
            "image_id": self.image_id,
            "tree": self.tree,
            "lower": self.lower,
            "overlay": self.overlay,
            **self.process_json(),
            "mounts": [m.to_json() for m in self.mounts],
            "ports": [p.to_json() for p in self.ports],
            "resources": self.resources.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedApp:
        oom = data.get("oom_score_adj")
        return cls(
            name=str(data["name"]),
            image_name=str(data["image_name"]),
            image_id=str(data["image_id"]),
            tree=str(data["tree"]),
            lower=str(data["lower"]),
            overlay=bool(data["overlay"]),
            exec=tuple(str(a) for a in data["exec"]),
            env=tuple((str(k), str(v)) for k, v in data["env"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            supplementary_gids=tuple(int(g) for g in data.get("supplementary_gids") or ()),
            working_directory=str(data.get("working_directory") or "/"),
            read_only_rootfs=bool(data.get("read_only_rootfs", False)),
            mounts=tuple(AppMount.from_json(m) for m in data.get("mounts") or ()),
            capabilities=_strings(data.get("capabilities")),
            no_new_privileges=bool(data.get("no_new_privileges", False)),
            oom_score_adj=None if oom is None else int(oom),
            seccomp=SeccompFilter.from_json(data.get("seccomp")),
            pre_start=_strings(data.get("pre_start")),
            post_stop=_strings(data.get("post_stop")),
            ports=tuple(AppPort.from_json(p) for p in data.get("ports") or ()),
            resources=Resources.from_json(data.get("resources")),
        )


class ResolvedPod(NamedTuple):
    """What ``rkt prepare`` resolved: the pod's apps and volumes (``apps.json``)."""

    uuid: str
    apps: tuple[ResolvedApp, ...]
    volumes: tuple[ResolvedVolume, ...] = ()
    #: the rkt that prepared the pod
    rkt_version: str = ""
    #: the pod manifest's (pod-level) limits, which bound every app's
    resources: Resources = Resources()

    def app(self, name: str) -> ResolvedApp | None:
        return next((a for a in self.apps if a.name == name), None)

    def volume(self, name: str) -> ResolvedVolume:
        for volume in self.volumes:
            if volume.name == name:
                return volume
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps({
            "version": CONTRACT_VERSION,
            "uuid": self.uuid,
            "rkt_version": self.rkt_version,
            "volumes": {v.name: v.to_json() for v in self.volumes},
            "apps": [a.to_json() for a in self.apps],
            "resources": self.resources.to_json(),
        }, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> ResolvedPod:
        """Parse ``apps.json``; :class:`ContractVersionError` for another version."""
        document = json.loads(text)
        _check_version(document, "the pod's apps.json")
        return cls(
            uuid=str(document["uuid"]),
            rkt_version=str(document.get("rkt_version", "")),
            volumes=tuple(ResolvedVolume.from_json(name, v)
                          for name, v in document["volumes"].items()),
            apps=tuple(ResolvedApp.from_json(a) for a in document["apps"]),
            resources=Resources.from_json(document.get("resources")),
        )


class PodCgroups(NamedTuple):
    """The pod's cgroups, made on the host by stage0 before the stage1 runs.

    ``pod_dirs`` is the pod's cgroup directory in each hierarchy rkt uses (cgroup
    v2: the one unified directory; v1: one per mounted hierarchy of the memory,
    cpu and cpuacct controllers), as host paths. Below each are ``stage1/``,
    where stage0 itself and so whatever the backend starts run, and one
    ``app-<name>/`` per app, which the app's processes join before they exec.
    The pod-level limits are on the pod directories, the apps' on theirs.
    """

    version: int
    pod_dirs: tuple[str, ...]

    def stage1_dirs(self) -> tuple[str, ...]:
        return tuple(f"{d}/stage1" for d in self.pod_dirs)

    def app_dirs(self, app_name: str) -> tuple[str, ...]:
        # prefixed: an app named "tasks" must not meet cgroup v1's "tasks" file
        return tuple(f"{d}/app-{app_name}" for d in self.pod_dirs)


class NetAttachment(NamedTuple):
    """One CNI network the pod's namespace is attached to, as the plugins set it up.

    :meth:`to_json` is rkt 1.x's ``net-info.json`` entry, which ``rkt list
    --format=json`` and ``rkt status --format=json`` show (Nomad reads ``ip``).
    """

    name: str
    #: the network's configuration file (``builtin:...`` for rkt's own)
    conf_path: str
    #: the first plugin of the network's chain
    plugin_path: str
    #: the pod's interface: ``eth0``, ``eth1``, ... in the order the networks apply
    ifname: str
    ip: str | None = None
    mask: str | None = None
    #: the host's side (the gateway the plugin returned), or None
    gateway: str | None = None
    #: ``CNI_ARGS`` from ``--net=name:K=V;...``
    args: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"netName": self.name, "netConf": self.conf_path, "pluginPath": self.plugin_path,
                "ifName": self.ifname, "ip": self.ip, "args": self.args, "mask": self.mask,
                "gateway": self.gateway}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetAttachment:
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(name=str(data["netName"]), conf_path=str(data.get("netConf", "")),
                   plugin_path=str(data.get("pluginPath", "")), ifname=str(data["ifName"]),
                   ip=text("ip"), mask=text("mask"), gateway=text("gateway"),
                   args=str(data.get("args") or ""))


class PodNetwork(NamedTuple):
    """The pod's network as stage0 set it up before calling the backend.

    ``mode`` is ``"host"`` (the host's network namespace; ``netns`` is None),
    ``"none"`` (its own namespace with only a loopback) or ``"contained"``
    (its own namespace, attached to CNI networks). A backend places the pod in
    ``netns`` (nspawn: ``--network-namespace-path``; a VM: a tap device made in
    it). ``resolv_conf`` and ``hosts``, when set, are the contents every app's
    ``/etc/resolv.conf`` and ``/etc/hosts`` must show, over the image's own
    files and volumes (``--dns``, CNI's DNS, ``--hosts-entry``): ``build_job``
    passes them to the supervisor.
    """

    mode: str = "host"
    netns: str | None = None
    attachments: tuple[NetAttachment, ...] = ()
    resolv_conf: str | None = None
    hosts: str | None = None


class PodRuntime(NamedTuple):
    """The pod-level options of ``rkt run`` / ``run-prepared`` that reach the stage1.

    ``net`` names the networks the pod joined (``host``, ``none``, or CNI
    network names), ``network`` is what stage0 set up for them.
    ``insecure`` holds the ``--insecure-options`` names (``capabilities``,
    ``seccomp``, ...) a backend must honour or refuse.
    """

    hostname: str | None = None
    interactive: bool = False
    net: tuple[str, ...] = ("host",)
    debug: bool = False
    insecure: frozenset[str] = frozenset()
    #: the pod's cgroups, or ``None`` on a host without the memory and cpu controllers
    #: (then no app has a limit: stage0 refuses limits it cannot apply)
    cgroups: PodCgroups | None = None
    network: PodNetwork = PodNetwork()

    def pod_hostname(self, uuid: str) -> str:
        """``--hostname``, or rkt's default ``rkt-<uuid>``."""
        return self.hostname or f"rkt-{uuid}"

    @property
    def private_network(self) -> bool:
        """True when the pod must not see the host's network (its own namespace)."""
        return self.network.mode != "host"


class OverlayDirs(NamedTuple):
    """The overlay the supervisor mounts as an app's root (backends that do not
    mount it themselves, as nspawn's ``--overlay`` does)."""

    lower: str
    upper: str
    work: str


class PlacedApp(NamedTuple):
    """An app as the supervisor sees it inside the backend's isolation.

    ``root`` is where its rootfs is (or is to be overlay-mounted), and
    ``mount_sources`` the path of each of ``app.mounts``' volumes, in order.
    ``etc_files`` are written into the app's ``/etc`` when the image has none
    of that name (``hosts``, ``resolv.conf``); ``etc_overrides`` are laid over
    the app's own (``--dns``, ``--hosts-entry``, DNS from CNI).
    """

    app: ResolvedApp
    root: str
    mount_sources: tuple[str, ...]
    overlay: OverlayDirs | None = None
    etc_files: tuple[tuple[str, str], ...] = ()
    #: the app's cgroup directories as the supervisor sees them; each of the app's
    #: processes writes itself into them (v1 ``tasks``, v2 ``cgroup.procs``) before it execs
    cgroups: tuple[str, ...] = ()
    #: written over whatever the app has (its image's file or a volume), read-only
    etc_overrides: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        overlay = self.overlay
        return {
            "name": self.app.name,
            "root": self.root,
            "overlay": None if overlay is None else {
                "lower": overlay.lower, "upper": overlay.upper, "work": overlay.work},
            **self.app.process_json(),
            "mounts": [
                {"source": source, "target": m.target, "read_only": m.read_only,
                 "recursive": m.recursive}
                for m, source in zip(self.app.mounts, self.mount_sources, strict=True)
            ],
            "etc_files": dict(self.etc_files),
            "cgroups": list(self.cgroups),
            "etc_overrides": dict(self.etc_overrides),
        }


class SupervisorJob(NamedTuple):
    """The shared supervisor's whole job (``runtime.json``); it has no policy of its own.

    ``mode`` is ``"nspawn"`` (the supervisor is PID 1 of a container with its
    own ``/dev/pts``) or ``"fly"`` (it shares the host's ``/dev/pts``).
    ``status_dir`` and ``pids_dir`` are where it records each app's exit code
    and PID, as paths it can reach. ``set_hostname`` makes it set the pod's
    hostname itself (for a backend that makes a UTS namespace and nothing
    more); ``die_with_parent`` kills it with the process that started it;
    ``ready_file`` is touched once every app has been started.
    """

    uuid: str
    hostname: str
    mode: str
    apps: tuple[PlacedApp, ...]
    interactive: bool = False
    status_dir: str = "/rkt/status"
    pids_dir: str = "/rkt/pids"
    set_hostname: bool = False
    die_with_parent: bool = False
    stop_timeout: float = 10.0
    ready_file: str | None = None
    #: mount /proc/sys, /proc/sysrq-trigger, ... read-only and mask /proc/kcore, ...
    #: (false only with ``--insecure-options=paths``)
    protect_kernel_paths: bool = True

    def to_json(self) -> str:
        return json.dumps({
            "version": CONTRACT_VERSION,
            "mode": self.mode,
            "uuid": self.uuid,
            "hostname": self.hostname,
            "interactive": self.interactive,
            "status_dir": self.status_dir,
            "pids_dir": self.pids_dir,
            "set_hostname": self.set_hostname,
            "die_with_parent": self.die_with_parent,
            "stop_timeout": self.stop_timeout,
            "ready_file": self.ready_file,
            "protect_kernel_paths": self.protect_kernel_paths,
            "apps": [a.to_json() for a in self.apps],
        }, indent=1)

