"""The isolators the spec defines, and the shapes of their values (appc-spec/ace.md).

An isolator is ``{"name": <AC Identifier>, "value": <any JSON>}`` (types.md). The model
is :class:`rkt.schema.types.Isolator`; this module knows the well-known names and turns
their ``value`` into typed objects with :func:`parse_isolator_value`.

Where the checks run follows the reference implementation (checklist section 3):
an app's isolators must all be known and well formed, while pod-level isolators are
only required to have an AC Identifier name; a stage1 that enforces a pod-level
isolator calls :meth:`Isolator.parsed_value` itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rkt.quantity import parse_quantity
from rkt.schema.base import FieldProblem, quote

LOG = logging.getLogger(__name__)

RESOURCE_CPU = "resource/cpu"
RESOURCE_MEMORY = "resource/memory"
RESOURCE_BLOCK_BANDWIDTH = "resource/block-bandwidth"
RESOURCE_BLOCK_IOPS = "resource/block-iops"
RESOURCE_NETWORK_BANDWIDTH = "resource/network-bandwidth"
LINUX_CAPABILITIES_RETAIN_SET = "os/linux/capabilities-retain-set"
LINUX_CAPABILITIES_REMOVE_SET = "os/linux/capabilities-remove-set"
LINUX_NO_NEW_PRIVILEGES = "os/linux/no-new-privileges"
LINUX_SECCOMP_REMOVE_SET = "os/linux/seccomp-remove-set"
LINUX_SECCOMP_RETAIN_SET = "os/linux/seccomp-retain-set"
LINUX_SELINUX_CONTEXT = "os/linux/selinux-context"
LINUX_APPARMOR_PROFILE = "os/linux/apparmor-profile"
LINUX_OOM_SCORE_ADJ = "os/linux/oom-score-adj"
LINUX_CPU_SHARES = "os/linux/cpu-shares"
UNIX_SYSCTL = "os/unix/sysctl"

RESOURCE_ISOLATORS = frozenset(
    {
        RESOURCE_CPU,
        RESOURCE_MEMORY,
        RESOURCE_BLOCK_BANDWIDTH,
        RESOURCE_BLOCK_IOPS,
        RESOURCE_NETWORK_BANDWIDTH,
    }
)
#: Every isolator name this runtime understands (spec plus the reference's additions).
KNOWN_ISOLATORS = RESOURCE_ISOLATORS | frozenset(
    {
        LINUX_CAPABILITIES_RETAIN_SET,
        LINUX_CAPABILITIES_REMOVE_SET,
        LINUX_NO_NEW_PRIVILEGES,
        LINUX_SECCOMP_REMOVE_SET,
        LINUX_SECCOMP_RETAIN_SET,
        LINUX_SELINUX_CONTEXT,
        LINUX_APPARMOR_PROFILE,
        LINUX_OOM_SCORE_ADJ,
        LINUX_CPU_SHARES,
        UNIX_SYSCTL,
    }
)

# ace.md: "Only a single ... isolator can be specified per-app" (seccomp, selinux,
# apparmor); the reference adds oom-score-adj and cpu-shares.
_SINGLE_PER_APP = (
    LINUX_SELINUX_CONTEXT,
    LINUX_APPARMOR_PROFILE,
    LINUX_OOM_SCORE_ADJ,
    LINUX_CPU_SHARES,
)
# ace.md: "The retain set cannot be used in conjunction with the remove set". The
# reference does not check this; we do, because which one wins would be a guess about
# the app's privileges. (The seccomp pair is covered by "one seccomp isolator".)
_CONFLICTS = ((LINUX_CAPABILITIES_REMOVE_SET, LINUX_CAPABILITIES_RETAIN_SET),)
_SECCOMP = (LINUX_SECCOMP_REMOVE_SET, LINUX_SECCOMP_RETAIN_SET)


@dataclass(frozen=True)
class ResourceValue:
    """``resource/*``: quantities in the resource's base unit (cores, bytes, ops/s)."""

    request: Decimal | None
    limit: Decimal | None
    default: bool


@dataclass(frozen=True)
class CapabilitySet:
    """``os/linux/capabilities-{retain,remove}-set``."""

    set: tuple[str, ...]


@dataclass(frozen=True)
class SeccompSet:
    """``os/linux/seccomp-{retain,remove}-set``; ``errno`` ``""`` means kill with SIGSYS."""

    set: tuple[str, ...]
    errno: str


@dataclass(frozen=True)
class SELinuxContext:
    """``os/linux/selinux-context``."""

    user: str
    role: str
    type: str
    level: str


@dataclass(frozen=True)
class AppArmorProfile:
    """``os/linux/apparmor-profile``."""

    profile: str


#: What :func:`parse_isolator_value` returns for a known isolator: the dataclasses above,
#: ``bool`` (no-new-privileges), ``int`` (oom-score-adj, cpu-shares) or
#: ``dict[str, str]`` (sysctl).
IsolatorValue = (
    ResourceValue
    | CapabilitySet
    | SeccompSet
    | SELinuxContext
    | AppArmorProfile
    | bool
    | int
    | dict[str, str]
)

# parse_quantity lives in rkt.quantity (no pydantic), so running a pod can use it


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FieldProblem("must be an object", "value")
    return value


def _string_list(value: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = value.get(key)
    if not isinstance(items, list) or not items:
        raise FieldProblem("must be a non-empty list of strings", "value", key)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise FieldProblem("must be a non-empty string", "value", key, index)
    return tuple(items)


def _string(value: Mapping[str, Any], key: str, *, forbid: str = "") -> str:
    item = value.get(key)
    if not isinstance(item, str) or not item:
        raise FieldProblem("must be a non-empty string", "value", key)
    if forbid and forbid in item:
        raise FieldProblem(f"must not contain {quote(forbid)}", "value", key)
    return item


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldProblem("must be an integer", "value")
    if not low <= value <= high:
        raise FieldProblem(f"must be between {low} and {high}", "value")
    return value


def _resource(name: str, raw: Any) -> ResourceValue:
    value = _object(raw)
    default = value.get("default", False)
    if not isinstance(default, bool):
        raise FieldProblem("must be true or false", "value", "default")
    quantities: dict[str, Decimal | None] = {}
    for key in ("request", "limit"):
        item = value.get(key)
        try:
            quantities[key] = None if item is None else parse_quantity(item)
        except ValueError as exc:
            raise FieldProblem(str(exc), "value", key) from exc
    if name in (RESOURCE_CPU, RESOURCE_MEMORY):
        if default:
            raise FieldProblem("must be false for this resource", "value", "default")
    else:
        # ace.md: block and network limits apply to all devices and "default must be
        # set to true"; they have no request.
        if not default:
            raise FieldProblem("must be true for this resource", "value", "default")
        if quantities["request"] is not None:
            raise FieldProblem("is not supported by this resource", "value", "request")
    return ResourceValue(request=quantities["request"], limit=quantities["limit"], default=default)


_ERRNO = re.compile(r"[A-Z][A-Z0-9]*\Z")


def _seccomp(raw: Any) -> SeccompSet:
    value = _object(raw)
    syscalls = _string_list(value, "set")
    errno = value.get("errno", "")
    if errno is None:
        errno = ""
    if not isinstance(errno, str):
        raise FieldProblem("must be a string", "value", "errno")
    # ace.md: an "all-uppercase name of a single errno code". The reference rejects
    # digits too, which would refuse real codes such as E2BIG; we allow them.
    if errno and not _ERRNO.match(errno):
        raise FieldProblem(
            f"{quote(errno)} is not an errno name (such as \"EPERM\")", "value", "errno"
        )
    return SeccompSet(set=syscalls, errno=errno)


def _sysctl(raw: Any) -> dict[str, str]:
    value = _object(raw)
    for key, item in value.items():
        if not key:
            raise FieldProblem("sysctl names must not be empty", "value")
        if not isinstance(item, str):
            raise FieldProblem("must be a string", "value", key)
    return dict(value)


def parse_isolator_value(name: str, value: Any) -> IsolatorValue | None:
    """The typed value of a known isolator, or ``None`` when ``name`` is not known.

    Raises :class:`~rkt.schema.base.FieldProblem` (a ValueError) whose path starts at
    ``value`` when the value does not have the shape ace.md defines.
    """
    if name in RESOURCE_ISOLATORS:
        return _resource(name, value)
    if name in (LINUX_CAPABILITIES_RETAIN_SET, LINUX_CAPABILITIES_REMOVE_SET):
        return CapabilitySet(set=_string_list(_object(value), "set"))
    if name == LINUX_NO_NEW_PRIVILEGES:
        if not isinstance(value, bool):
            raise FieldProblem("must be true or false", "value")
        return value
    if name in (LINUX_SECCOMP_REMOVE_SET, LINUX_SECCOMP_RETAIN_SET):
        return _seccomp(value)
    if name == LINUX_SELINUX_CONTEXT:
        obj = _object(value)
        return SELinuxContext(
            user=_string(obj, "user", forbid=":"),
            role=_string(obj, "role", forbid=":"),
            type=_string(obj, "type", forbid=":"),
            level=_string(obj, "level"),
        )
    if name == LINUX_APPARMOR_PROFILE:
        return AppArmorProfile(profile=_string(_object(value), "profile"))
    if name == LINUX_OOM_SCORE_ADJ:
        return _integer(value, -1000, 1000)
    if name == LINUX_CPU_SHARES:
        return _integer(value, 2, 262144)
    if name == UNIX_SYSCTL:
        return _sysctl(value)
    return None


def check_app_isolator(name: str, value: Any) -> None:
    """Reject an unknown name or a badly shaped value, as the reference does for apps."""
    if name not in KNOWN_ISOLATORS:
        raise FieldProblem(f"unknown isolator {quote(name)}", "name")
    parse_isolator_value(name, value)


def check_app_isolator_set(names: Sequence[str]) -> None:
    """Reject repeated single-use isolators and conflicting pairs within one app."""
    first_seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in _SECCOMP:
            group, what = "seccomp", "seccomp isolator (remove-set or retain-set)"
        elif name in _SINGLE_PER_APP:
            group, what = name, f"{quote(name)} isolator"
        else:
            continue
        if group in first_seen:
            raise FieldProblem(
                f"only one {what} is allowed per app (another is at index {first_seen[group]})",
                index,
                "name",
            )
        first_seen[group] = index
    for left, right in _CONFLICTS:
        if left in names and right in names:
            index = max(names.index(left), names.index(right))
            raise FieldProblem(
                f"{quote(left)} and {quote(right)} cannot be used together", index, "name"
            )
