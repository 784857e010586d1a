"""``rkt run``, ``rkt prepare`` and ``rkt run-prepared``.

``rkt run [pod flags] IMAGE [app flags] [-- args] [--- IMAGE [app flags] ...]``:
per-app flags written after an image apply to that image; written before any
image they apply to every app (rkt 1.x's rule).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.cli.imageargs import ImageArgs, split_image_args
from rkt.errors import UsageError

if TYPE_CHECKING:
    from rkt.net.request import NetworkRequest
    from rkt.pod.contract import PodRuntime
    from rkt.pod.dirs import Pod
    from rkt.pod.prepare import PodRequest

#: flags that belong to the image before them
APP_FLAGS = {
    "--exec", "--user", "--group", "--supplementary-gids", "--working-dir", "--name",
    "--mount", "--signature", "--readonly-rootfs", "--annotation", "--environment",
    "--caps-retain", "--caps-remove", "--cap-retain", "--cap-remove",
    "--memory", "--cpu", "--cpu-shares", "--oom-score-adj", "--seccomp",
}


def _add_app_flags(parser: RktArgumentParser) -> None:
    group = parser.add_argument_group("per-app flags (after the image they apply to)")
    group.add_argument("--exec", help="override the app's executable")
    group.add_argument("--user", help="user to run the app as (name, number or /file)")
    group.add_argument("--group", help="group to run the app as")
    group.add_argument("--supplementary-gids", help="comma-separated supplementary GIDs")
    group.add_argument("--working-dir", help="override the app's working directory")
    group.add_argument("--name", help="the app's name in the pod")
    group.add_argument("--mount", action="append", default=None,
                       help="volume=NAME,target=PATH: mount a volume into the app")
    group.add_argument("--signature", help="signature file for the image")
    parser.add_bool_flag("--readonly-rootfs", help="mount the app's rootfs read-only")
    group.add_argument("--annotation", action="append", default=None, help="NAME=VALUE")
    group.add_argument("--environment", action="append", default=None,
                       help="NAME=VALUE for this app (highest precedence)")
    for flag in ("--caps-retain", "--caps-remove", "--cap-retain", "--cap-remove"):
        group.add_argument(flag, help="comma-separated capabilities")
    group.add_argument("--memory", help="the app's memory limit, e.g. 128M or 64Mi")
    group.add_argument("--cpu", help="the app's CPU limit (and request), e.g. 500m or 1.5")
    group.add_argument("--cpu-shares", help="the app's relative CPU weight, 2..262144")
    group.add_argument("--oom-score-adj", help="the app's OOM score adjustment, -1000..1000")
    group.add_argument("--seccomp", metavar="mode=remove|retain[,errno=ENAME],SYSCALL,...",
                       help="the app's seccomp filter, replacing the image's")


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    if command == "run-prepared":
        parser.add_argument("uuid", metavar="UUID")
    else:
        parser.add_argument("image", nargs="*", metavar="IMAGE",
                            help="image file, URL, hash, appc name or docker:// reference")
        parser.add_argument("--volume", action="append", default=[],
                            help="NAME,kind=host,source=PATH[,readOnly=BOOL] or "
                                 "NAME,kind=empty[,mode=0755,uid=0,gid=0]")
        parser.add_argument("--set-env", action="append", default=[], metavar="NAME=VALUE")
        parser.add_argument("--set-env-file", metavar="FILE")
        parser.add_bool_flag("--inherit-env", help="pass rkt's environment to the apps")
        parser.add_bool_flag("--no-overlay", help="copy images instead of overlay mounts")
        parser.add_bool_flag("--local", help="use only images in the store")
        parser.add_argument("--pod-manifest", metavar="FILE", help="run this pod manifest")
        parser.add_argument("--pull-policy", choices=("new", "update", "never"), default=None)
        for flag in ("image", "name", "path", "url", "hash", "from-dir"):
            parser.add_argument(f"--stage1-{flag}", metavar=flag.upper())
        parser.add_argument("--user-annotation", action="append", default=[])
        parser.add_argument("--user-label", action="append", default=[])
        _add_app_flags(parser)
    if command != "run-prepared":
        # rkt 1.x's prepare records the ports in the pod manifest for run-prepared
        parser.add_argument("--port", action="append", default=[],
                            help="NAME:[HOSTIP:]HOSTPORT: forward a host port to an app's port")
    if command == "prepare":
        parser.add_bool_flag("--quiet", help="print only the UUID")
        return
    parser.add_bool_flag("--interactive", help="give the app the terminal")
    parser.add_argument("--hostname", help="the pod's hostname (default rkt-UUID)")
    parser.add_argument("--net", action="append", default=None, nargs="?", const="default",
                        help="networks to join: default, default-restricted, host, none, "
                             "all, or NAME[:K=V;...] from net.d (comma list)")
    parser.add_bool_flag("--private-net", help="the same as --net=default (rkt 0.5)")
    parser.add_bool_flag("--mds-register", help="register the pod with the metadata service "
                         "(needs a private network, such as --net=default)")
    parser.add_argument("--mds-socket", metavar="PATH",
                        help="the metadata service's registration socket "
                             "(default /run/rkt/metadata-svc.sock)")
    if command == "run-prepared":
        parser.add_argument("--port", action="append", default=[],
                            help="NAME:[HOSTIP:]HOSTPORT: forward a host port to an app's "
                                 "port (instead of the ports given to prepare)")
    parser.add_argument("--dns", action="append", default=[],
                        help="nameserver IP (repeatable), host or none")
    parser.add_argument("--dns-search", action="append", default=[], help="DNS search domain")
    parser.add_argument("--dns-opt", action="append", default=[], help="DNS resolver option")
    parser.add_argument("--dns-domain", help="the pod's DNS domain")
    parser.add_argument("--hosts-entry", action="append", default=[],
                        help="IP=HOSTNAME for /etc/hosts (repeatable), or host")
    if command == "run":
        parser.add_argument("--uuid-file-save", metavar="FILE",
                            help="write the pod's UUID to FILE")


def split_arguments(
    command: str, parser: RktArgumentParser, tokens: list[str]
) -> tuple[list[str], list[ImageArgs]]:
    if command == "run-prepared":
        return tokens, []
    return split_image_args(parser, tokens, APP_FLAGS, allow_app_args=True)


def _csv(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def _app_requests(parser_args: argparse.Namespace, images: list[ImageArgs]) -> list[object]:
    from rkt.pod.apps import (
        AppRequest,
        parse_annotation,
        parse_env,
        parse_mount,
        resource_isolators,
    )
    from rkt.pod.seccomp import parse_seccomp_flag

    app_parser = RktArgumentParser(prog="rkt run")
    _add_app_flags(app_parser)
    requests: list[object] = []
    for image in images:
        own = app_parser.parse_args(image.flags)

        def pick(name: str, own: argparse.Namespace = own) -> object:
            value = getattr(own, name)
            return value if value not in (None, False) else getattr(parser_args, name)

        gids = pick("supplementary_gids")
        try:
            supplementary = [int(g) for g in _csv(str(gids))] if gids else None  # type: ignore[union-attr]
        except ValueError as exc:
            raise UsageError(f"--supplementary-gids {gids}: expected numbers") from exc
        seccomp = pick("seccomp")
        exec_value = pick("exec")
        signature = pick("signature")
        requests.append(AppRequest(
            image=image.image,
            signature=Path(str(signature)) if signature else None,
            exec_=[str(exec_value)] if exec_value else None,
            args=image.app_args,
            user=pick("user"),  # type: ignore[arg-type]
            group=pick("group"),  # type: ignore[arg-type]
            supplementary_gids=supplementary,
            working_dir=pick("working_dir"),  # type: ignore[arg-type]
            name=own.name,
            mounts=[parse_mount(m) for m in (own.mount or parser_args.mount or [])],
            readonly_rootfs=bool(pick("readonly_rootfs")),
            annotations=dict(parse_annotation(a, "--annotation")
                             for a in (own.annotation or parser_args.annotation or [])),
            environment=[parse_env(e, "--environment")
                         for e in (own.environment or parser_args.environment or [])],
            caps_retain=_csv(pick("caps_retain") or pick("cap_retain")),  # type: ignore[arg-type]
            caps_remove=_csv(pick("caps_remove") or pick("cap_remove")),  # type: ignore[arg-type]
            seccomp=parse_seccomp_flag(str(seccomp)) if seccomp else None,
            isolators=resource_isolators(
                pick("memory"), pick("cpu"), pick("cpu_shares"),  # type: ignore[arg-type]
                pick("oom_score_adj"),  # type: ignore[arg-type]
            ),
        ))
    return requests


def _pod_request(args: argparse.Namespace) -> PodRequest:
    from rkt.net.request import parse_ports
    from rkt.pod.apps import parse_annotation, parse_env, parse_volume, read_env_file
    from rkt.pod.prepare import PodRequest

    images: list[ImageArgs] = args.split or []
    if args.pod_manifest:
        conflicting = bool(images or args.volume or args.set_env or args.set_env_file
                           or args.inherit_env or args.mount or args.exec)
        if conflicting:
            raise UsageError("conflicting flags set with --pod-manifest")
    elif not images:
        raise UsageError("at least one image or --pod-manifest is required")
    return PodRequest(
        apps=_app_requests(args, images),  # type: ignore[arg-type]
        volumes=[parse_volume(v) for v in args.volume],
        set_env=[parse_env(e, "--set-env") for e in args.set_env],
        set_env_file=read_env_file(Path(args.set_env_file)) if args.set_env_file else [],
        inherit_env=args.inherit_env,
        no_overlay=args.no_overlay,
        pod_manifest=Path(args.pod_manifest) if args.pod_manifest else None,
        user_annotations=dict(parse_annotation(a, "--user-annotation", identifier=False)
                              for a in args.user_annotation),
        user_labels=dict(parse_annotation(a, "--user-label", identifier=False)
                         for a in args.user_label),
        ports=parse_ports(args.port),
    )


def _run_options(options: GlobalOptions, args: argparse.Namespace, app_count: int) -> PodRuntime:
    from rkt.pod.contract import PodRuntime

    if args.interactive and app_count > 1:
        raise UsageError("--interactive can only be used with a single image")
    from rkt.pod.apps import check_hostname, check_writable_file

    if args.hostname is not None:
        check_hostname(args.hostname)
    if getattr(args, "uuid_file_save", None):
        check_writable_file(args.uuid_file_save, "--uuid-file-save")
    return PodRuntime(hostname=args.hostname, interactive=args.interactive,
                      debug=options.debug, insecure=options.insecure)


def _network_request(args: argparse.Namespace) -> NetworkRequest:
    from rkt.net.request import (
        NetworkRequest,
        parse_dns,
        parse_hosts_entries,
        parse_nets,
        parse_ports,
    )

    entries, host_hosts = parse_hosts_entries(args.hosts_entry)
    return NetworkRequest(
        nets=parse_nets(args.net or [], private_net=args.private_net),
        ports=parse_ports(args.port),
        dns=parse_dns(args.dns, args.dns_search, args.dns_opt, args.dns_domain),
        hosts_entries=entries, host_hosts=host_hosts,
    )


def _metadata_socket(args: argparse.Namespace, network: NetworkRequest) -> Path | None:
    """--mds-register: the registration socket to register the pod on (a service must
    listen there: checked now, before anything is made); None without the flag."""
    if not args.mds_register:
        if args.mds_socket:
            raise UsageError("--mds-socket is only used with --mds-register")
        return None
    if network.special is not None:
        raise UsageError(
            f"--mds-register flag does not work with --net={network.special}: the metadata "
            "service tells pods apart by their address on a private network; "
            "use --net=default or another contained network"
        )
    from rkt.metadata import DEFAULT_SOCKET
    from rkt.metadata.client import probe_service

    socket_path = Path(args.mds_socket).absolute() if args.mds_socket else DEFAULT_SOCKET
    probe_service(socket_path)
    return socket_path


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifetime import pod_lifetime

    # this process is the pod's lifetime: stop signals stop the pod (rkt.pod.lifetime)
    with pod_lifetime():
        return _run(command, options, args)


def _run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod import lifecycle
    from rkt.stage1 import Stage1Choice

    lifecycle.ensure_root(command)
    if command == "run-prepared":
        # bad flags (and no metadata service) before any pod lookup
        pod_runtime = _run_options(options, args, 1)
        pod_network = _network_request(args)
        metadata_socket = _metadata_socket(args, pod_network)
        prepared = lifecycle.open_prepared(options, args.uuid)
        code = lifecycle.run_pod(options, prepared, pod_runtime, network=pod_network,
                                 metadata_socket=metadata_socket, exits_after=options.process_exits)
        return _report_oom_kills(options, prepared.pod, code)
    request = _pod_request(args)
    run_options = _run_options(options, args, len(request.apps)) if command == "run" else None
    network = _network_request(args) if command == "run" else None
    metadata_socket = _metadata_socket(args, network) if network is not None else None
    choice = Stage1Choice(image=args.stage1_image, name=args.stage1_name, path=args.stage1_path,
                          url=args.stage1_url, hash=args.stage1_hash,
                          from_dir=args.stage1_from_dir)
    policy = "never" if args.local else (args.pull_policy or "new")
    prepared = lifecycle.create_pod(options, request, choice, pull_policy=policy)
    if run_options is None:  # rkt prepare
        lifecycle.mark_prepared(prepared)
        print(prepared.pod.uuid, file=options.stdout)
        return 0
    code = lifecycle.run_pod(options, prepared, run_options, uuid_file=args.uuid_file_save,
                             network=network, metadata_socket=metadata_socket,
                             exits_after=options.process_exits)
    return _report_oom_kills(options, prepared.pod, code)


def _report_oom_kills(options: GlobalOptions, pod: Pod, code: int) -> int:
    """One line per app the kernel killed for its memory; the exit code stays the app's."""
    if not pod.oom_killed_apps():
        return code  # the usual case, without importing rkt.pod.status
    from rkt.pod.status import oom_kill_messages

    for message in oom_kill_messages(pod):
        print(f"rkt: {message}", file=options.stderr)
    return code
