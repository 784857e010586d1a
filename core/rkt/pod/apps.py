"""What the user asked for on the command line, parsed: apps, volumes, environment.

Every parser here turns a malformed flag into one :class:`UsageError` line that
quotes the flag, so ``rkt run --volume data,kind=hots`` says what is wrong with
exactly that flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rkt.errors import UsageError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
#: types.md's AC Identifier, as annotation names must be (``coreos.com/rkt/x``)
_AC_IDENTIFIER = re.compile(r"[a-z0-9]+(?:[-._~/][a-z0-9]+)*\Z")
#: appc-spec/types.md's AC Name and AC Identifier
AC_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
AC_IDENTIFIER = re.compile(r"^[a-z0-9]+([-._~/][a-z0-9]+)*$")

#: appc-spec/ace.md: the bounding set when an app has no capability isolator
DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
)

_TRUE = {"true", "1", "t", "yes"}
_FALSE = {"false", "0", "f", "no"}


def _bool(value: str, flag: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UsageError(f'{flag}: invalid boolean "{value}"')


@dataclass
class VolumeSpec:
    name: str
    kind: str
    source: str | None = None
    read_only: bool = False
    recursive: bool = True
    mode: str = "0755"
    uid: int = 0
    gid: int = 0

    def to_manifest(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "kind": self.kind}
        if self.kind == "host":
            out.update(source=self.source, readOnly=self.read_only, recursive=self.recursive)
        else:
            out.update(readOnly=self.read_only, mode=self.mode, uid=self.uid, gid=self.gid)
        return out


def _key_values(text: str, flag: str) -> tuple[str, dict[str, str]]:
    head, *rest = text.split(",")
    values: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise UsageError(f'{flag} "{text}": expected key=value, got "{part}"')
        if key in values:
            raise UsageError(f'{flag} "{text}": "{key}" given twice')
        values[key] = value
    return head, values


def parse_volume(text: str) -> VolumeSpec:
    """``NAME,kind=host,source=PATH[,readOnly=BOOL][,recursive=BOOL]`` or
    ``NAME,kind=empty[,mode=0755][,uid=0][,gid=0][,readOnly=BOOL]``."""
    name, values = _key_values(text, "--volume")
    if not AC_NAME.match(name):
        raise UsageError(f'--volume "{text}": invalid volume name "{name}"')
    kind = values.pop("kind", None)
    if kind not in ("host", "empty"):
        raise UsageError(f'--volume "{text}": kind must be "host" or "empty"')
    volume = VolumeSpec(name, kind)
    if "readOnly" in values:
        volume.read_only = _bool(values.pop("readOnly"), "--volume readOnly")
    if kind == "host":
        source = values.pop("source", None)
        if not source:
            raise UsageError(f'--volume "{text}": a host volume needs source=PATH')
        if not source.startswith("/"):
            raise UsageError(f'--volume "{text}": source must be an absolute path')
        volume.source = source
        if "recursive" in values:
            volume.recursive = _bool(values.pop("recursive"), "--volume recursive")
    else:
        if "mode" in values:
            volume.mode = values.pop("mode")
            if not re.fullmatch(r"0?[0-7]{3,4}", volume.mode):
                raise UsageError(f'--volume "{text}": invalid mode "{volume.mode}"')
        for key in ("uid", "gid"):
            if key in values:
                raw = values.pop(key)
                if not raw.isdigit():
                    raise UsageError(f'--volume "{text}": {key} must be a number')
                setattr(volume, key, int(raw))
    if values:
        raise UsageError(f'--volume "{text}": unknown option "{next(iter(values))}"')
    return volume


def parse_mount(text: str) -> tuple[str, str]:
    """``volume=NAME,target=PATH`` -> (NAME, PATH)."""
    values: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f'--mount "{text}": expected volume=NAME,target=PATH')
        values[key] = value
    if set(values) != {"volume", "target"} or not values["volume"] or not values["target"]:
        raise UsageError(f'--mount "{text}": expected volume=NAME,target=PATH')
    if not values["target"].startswith("/"):
        raise UsageError(f'--mount "{text}": target must be an absolute path')
    return values["volume"], values["target"]


def parse_env(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not _ENV_NAME.match(name):
        raise UsageError(f'{flag} "{text}": expected NAME=VALUE')
    return name, value


def parse_annotation(text: str, flag: str, *, identifier: bool = True) -> tuple[str, str]:
    """``--annotation NAME=VALUE``: NAME is an AC Identifier (``example.com/build``).

    ``identifier=False`` is for ``--user-annotation`` and ``--user-label``, whose
    keys are free-form (pods.md ``userAnnotations``), as long as they are not empty.
    """
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f'{flag} "{text}": expected NAME=VALUE')
    if identifier and not _AC_IDENTIFIER.match(name):
        raise UsageError(f'{flag} "{text}": {name!r} is not an AC Identifier (lowercase '
                         'letters and digits, joined by one of "-._~/")')
    return name, value


def read_env_file(path: Path) -> list[tuple[str, str]]:
    """``--set-env-file``: NAME=VALUE lines; ``#`` and ``;`` comments and blanks ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"--set-env-file {path}: {exc.strerror}") from exc
    out = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        name, sep, value = stripped.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise UsageError(f"--set-env-file {path}:{number}: expected NAME=VALUE")
        out.append((name, value))
    return out


@dataclass
class AppRequest:
    """One image on the command line and the per-app flags written after it."""

    image: str
    signature: Path | None = None
    exec_: list[str] | None = None
    args: list[str] | None = None
    user: str | None = None
    group: str | None = None
    supplementary_gids: list[int] | None = None
    working_dir: str | None = None
    name: str | None = None
    mounts: list[tuple[str, str]] = field(default_factory=list)
    readonly_rootfs: bool | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    environment: list[tuple[str, str]] = field(default_factory=list)
    caps_retain: list[str] | None = None
    caps_remove: list[str] | None = None
    #: ``--seccomp``, as the isolator it replaces the image's with
    seccomp: dict[str, object] | None = None
    #: isolators from --memory, --cpu, --cpu-shares, --oom-score-adj
    isolators: list[dict[str, object]] = field(default_factory=list)


#: an app's name names files and directories in the pod (``appsinfo/<name>``,
#: ``/rkt/status/<name>-created``): it must fit one path component with room to spare
MAX_APP_NAME = 200
#: RFC 1123 host names, as ``--hostname`` takes them (sethostname allows 64 bytes)
_HOSTNAME_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAX_HOSTNAME = 64


def check_hostname(hostname: str) -> str:
    """``--hostname``: RFC 1123 labels separated by dots, at most 64 characters."""
    if len(hostname) > MAX_HOSTNAME or not all(
        _HOSTNAME_LABEL.match(label) for label in hostname.split(".")
    ):
        raise UsageError(
            f'--hostname "{hostname}": not a valid host name (letters, digits, "-" and ".", '
            f"at most {MAX_HOSTNAME} characters)"
        )
    return hostname


def check_app_name(name: str, source: str) -> None:
    if len(name) > MAX_APP_NAME:
        raise UsageError(f'{source} "{name[:40]}...": an app name may have at most '
                         f"{MAX_APP_NAME} characters, not {len(name)}")


def check_writable_file(path: str, flag: str) -> None:
    """Refuse, before any pod exists, a file a command could not write at its end."""
    import os

    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    if target.exists() and not (target.is_file() and os.access(target, os.W_OK)):
        raise UsageError(f"{flag} {path}: not a regular file this user can write")
    if not target.exists() and not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        raise UsageError(f"{flag} {path}: cannot create a file in {parent}")


def app_name_from_image(image_name: str) -> str:
    """The default app name: the image name's last component, made an AC Name."""
    base = image_name.rstrip("/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    return name or "app"


def resource_isolators(
    memory: str | None, cpu: str | None, cpu_shares: str | None, oom_score_adj: str | None
) -> list[dict[str, object]]:
    """rkt 1.x's per-app resource flags as appc isolators (what Nomad's driver passes).

    ``--memory`` and ``--cpu`` set both the request and the limit, as rkt 1.x did;
    whether a value can work on this host is checked when the pod is prepared.
    """
    from rkt.quantity import parse_quantity

    isolators: list[dict[str, object]] = []
    for flag, value, name, example in (
        ("--memory", memory, "resource/memory", "128M, 64Mi or 1G"),
        ("--cpu", cpu, "resource/cpu", "500m, 1 or 1.5"),
    ):
        if value is None:
            continue
        try:
            parse_quantity(value)
        except ValueError as exc:
            raise UsageError(f'{flag} "{value}": expected a quantity such as {example}') from exc
        isolators.append({"name": name, "value": {"request": value, "limit": value}})
    for flag, value, name, low, high in (
        ("--cpu-shares", cpu_shares, "os/linux/cpu-shares", 2, 262144),
        ("--oom-score-adj", oom_score_adj, "os/linux/oom-score-adj", -1000, 1000),
    ):
        if value is None:
            continue
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise UsageError(f'{flag} "{value}": expected a whole number from {low} to {high}')
        isolators.append({"name": name, "value": number})
    return isolators
