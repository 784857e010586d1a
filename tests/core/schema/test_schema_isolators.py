"""Isolators: known names and value shapes (ace.md); checked for apps, not for pods."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from rkt.errors import ManifestError
from rkt.schema.base import FieldProblem
from rkt.schema.image import ImageManifest
from rkt.schema.isolators import (
    KNOWN_ISOLATORS,
    AppArmorProfile,
    CapabilitySet,
    ResourceValue,
    SeccompSet,
    SELinuxContext,
    parse_quantity,
)
from rkt.schema.pod import PodManifest
from rkt.schema.types import Isolator

# One well-formed example of every known isolator, mostly from ace.md.
GOOD: dict[str, Any] = {
    "resource/cpu": {"request": "250m", "limit": "500m"},
    "resource/memory": {"request": "1G", "limit": "2Gi"},
    "resource/block-bandwidth": {"default": True, "limit": "2M"},
    "resource/block-iops": {"default": True, "limit": "1000"},
    "resource/network-bandwidth": {"default": True, "limit": "1G"},
    "os/linux/capabilities-retain-set": {"set": ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]},
    "os/linux/capabilities-remove-set": {"set": ["CAP_SYS_CHROOT", "CAP_MKNOD"]},
    "os/linux/no-new-privileges": True,
    "os/linux/seccomp-remove-set": {"errno": "ENOTSUP", "set": ["clock_adjtime", "reboot"]},
    "os/linux/seccomp-retain-set": {"errno": "", "set": ["accept", "bind", "@appc.io/all"]},
    "os/linux/selinux-context": {
        "user": "system_u",
        "role": "system_r",
        "type": "dhcpc_t",
        "level": "s0",
    },
    "os/linux/apparmor-profile": {"profile": "rkt-default"},
    "os/linux/oom-score-adj": -250,
    "os/linux/cpu-shares": 2048,
    "os/unix/sysctl": {"net.ipv4.tcp_mtu_probing": "1"},
}


def _image_with(*isolators: dict[str, Any]) -> str:
    return json.dumps(
        {
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": "example.com/app",
            "app": {"user": "0", "group": "0", "isolators": list(isolators)},
        }
    )


def _pod_with(*isolators: dict[str, Any]) -> str:
    return json.dumps(
        {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [], "isolators": list(isolators)}
    )


def test_every_known_isolator_has_an_example() -> None:
    assert set(GOOD) == set(KNOWN_ISOLATORS)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_known_isolator_accepted_in_an_app(name: str) -> None:
    text = _image_with({"name": name, "value": GOOD[name]})
    manifest = ImageManifest.parse(text)
    assert manifest.app is not None
    isolator = manifest.app.isolator(name)
    assert isolator is not None and isolator.known
    assert isolator.parsed_value() is not None
    assert json.loads(manifest.to_json()) == json.loads(text)


def test_parsed_values_are_typed() -> None:
    def parsed(name: str) -> Any:
        return Isolator(name=name, value=GOOD[name]).parsed_value()

    assert parsed("resource/cpu") == ResourceValue(
        request=Decimal("0.25"), limit=Decimal("0.5"), default=False
    )
    assert parsed("resource/memory").limit == 2 * 2**30
    assert parsed("resource/block-iops") == ResourceValue(None, Decimal(1000), True)
    assert parsed("os/linux/capabilities-remove-set") == CapabilitySet(
        ("CAP_SYS_CHROOT", "CAP_MKNOD")
    )
    assert parsed("os/linux/seccomp-retain-set") == SeccompSet(
        ("accept", "bind", "@appc.io/all"), ""
    )
    assert parsed("os/linux/selinux-context") == SELinuxContext(
        "system_u", "system_r", "dhcpc_t", "s0"
    )
    assert parsed("os/linux/apparmor-profile") == AppArmorProfile("rkt-default")
    assert parsed("os/linux/no-new-privileges") is True
    assert parsed("os/linux/oom-score-adj") == -250
    assert parsed("os/unix/sysctl") == {"net.ipv4.tcp_mtu_probing": "1"}
    assert Isolator(name="example.com/custom", value=1).parsed_value() is None


def test_pod_level_isolators_are_not_type_checked() -> None:
    # Checklist section 3 [impl]: unknown names and odd values pass at pod level; the
    # stage1 decides (ace.md: an executor MAY ignore isolators it does not understand).
    text = _pod_with(
        {"name": "example.com/turbo", "value": None},
        {"name": "resource/memory", "value": {"limit": "lots"}},
    )
    pod = PodManifest.parse(text)
    assert json.loads(pod.to_json()) == json.loads(text)
    isolators = pod.isolators or []
    assert not isolators[0].known
    with pytest.raises(FieldProblem) as caught:
        isolators[1].parsed_value()
    assert caught.value.path == ("value", "limit")


def test_pod_level_isolator_name_is_still_an_ac_identifier() -> None:
    with pytest.raises(ManifestError, match=r"^pod manifest: isolators\[0\]\.name: "):
        PodManifest.parse(_pod_with({"name": "Resource/Memory", "value": {}}))


def test_app_level_unknown_isolator_rejected() -> None:
    with pytest.raises(
        ManifestError, match=r'^manifest: app\.isolators\[1\]\.name: unknown isolator "x/y"$'
    ):
        ImageManifest.parse(
            _image_with(
                {"name": "resource/cpu", "value": {"limit": "1"}}, {"name": "x/y", "value": 1}
            )
        )


@pytest.mark.parametrize(
    "name",
    [
        "os/linux/selinux-context",
        "os/linux/apparmor-profile",
        "os/linux/oom-score-adj",
        "os/linux/cpu-shares",
    ],
)
def test_single_use_isolators_may_not_repeat(name: str) -> None:
    item = {"name": name, "value": GOOD[name]}
    with pytest.raises(ManifestError, match=r"app\.isolators\[1\]\.name: only one .* per app"):
        ImageManifest.parse(_image_with(item, item))


def test_repeatable_isolators_may_repeat() -> None:
    # The reference allows several capability isolators of one kind; the last one wins.
    first = {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}}
    second = {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_KILL"]}}
    manifest = ImageManifest.parse(_image_with(first, second))
    assert manifest.app is not None
    isolator = manifest.app.isolator("os/linux/capabilities-retain-set")
    assert isolator is not None and isolator.value == {"set": ["CAP_KILL"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Decimal(0)),
        ("128974848", Decimal(128974848)),
        ("125952Ki", Decimal(128974848)),
        ("123Mi", Decimal(128974848)),
        ("250m", Decimal("0.25")),
        ("0.3", Decimal("0.3")),
        (".5", Decimal("0.5")),
        ("1k", Decimal(1000)),
        ("1K", Decimal(1000)),
        ("2G", Decimal(2 * 10**9)),
        ("1Ei", Decimal(2**60)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("5E", Decimal(5 * 10**18)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
    ],
)
def test_quantity_parsing(text: str | int | float, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text", ["", "lots", "1.2.3", "1 G", "1Gb", "-1", "1e999999999", "99E", "1KiB", True, None, [1]]
)
def test_quantity_rejected(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
