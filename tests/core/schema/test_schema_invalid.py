"""Invalid manifests are refused with one line naming the source and the offending field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from rkt.errors import ManifestError, RktError
from rkt.schema.image import ImageManifest
from rkt.schema.pod import PodManifest

IMAGE: dict[str, Any] = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/app",
    "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
    "app": {
        "exec": ["/bin/app"],
        "user": "0",
        "group": "0",
        "environment": [{"name": "A", "value": "1"}],
        "ports": [{"name": "http", "protocol": "tcp", "port": 80}],
    },
    "annotations": [{"name": "created", "value": "2014-10-27T19:32:27Z"}],
}
POD: dict[str, Any] = {
    "acKind": "PodManifest",
    "acVersion": "0.8.11",
    "apps": [{"name": "app", "image": {"id": "sha512-" + "a" * 128, "name": "example.com/app"}}],
    "volumes": [{"name": "data", "kind": "empty"}],
    "ports": [{"name": "http", "hostPort": 8080}],
}

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit setting ``a.b.0.c`` to ``value`` (creating nothing: the path must exist)."""

    def edit(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return edit


def _isolators(*items: dict[str, Any]) -> Edit:
    return _set("app.isolators", list(items))


IMAGE_CASES: list[tuple[str, Edit, str]] = [
    ("bad acKind", _set("acKind", "PodManifest"), 'acKind: must be "ImageManifest"'),
    ("acKind not a string", _set("acKind", 1), "acKind: must be a string"),
    ("missing acKind", _drop("acKind"), "acKind: is required"),
    ("missing acVersion", _drop("acVersion"), "acVersion: is required"),
    ("acVersion not semver", _set("acVersion", "1.0"), 'acVersion: "1.0" is not a semantic'),
    ("acVersion zero", _set("acVersion", "0.0.0"), "acVersion: 0.0.0 is not allowed"),
    ("acVersion prefix v", _set("acVersion", "v0.8.11"), "acVersion: "),
    ("missing name", _drop("name"), "name: is required"),
    ("uppercase name", _set("name", "Example.com/app"), 'name: "Example.com/app" is not an AC'),
    ("name with space", _set("name", "example.com/my app"), "name: "),
    ("name edge", _set("name", "-example.com"), "must start and end"),
    ("name dot-dot segment", _set("name", "example.com/../etc"), '"." or ".."'),
    ("empty name", _set("name", ""), "name: must not be empty"),
    (
        "duplicate label",
        _set("labels", [{"name": "version", "value": "1"}, {"name": "version", "value": "2"}]),
        'labels[1].name: duplicate label "version"',
    ),
    (
        "label called name",
        _set("labels", [{"name": "name", "value": "x"}]),
        'labels[0].name: "name" cannot be a label',
    ),
    ("bad label name", _set("labels.0.name", "OS"), "labels[0].name: "),
    ("label value not string", _set("labels.0.value", 1), "labels[0].value: must be a string"),
    ("bad os", _set("labels.0.value", "plan9"), 'labels[0].value: unsupported os "plan9"'),
    ("bad arch", _set("labels.1.value", "sparc"), 'labels[1].value: unsupported arch "sparc"'),
    ("arch of other os", _set("labels.1.value", "x86_64"), "labels[1].value: unsupported arch"),
    ("labels not a list", _set("labels", {"os": "linux"}), "labels: must be a list"),
    ("app not an object", _set("app", []), "app: must be an object"),
    ("empty user", _set("app.user", ""), "app.user: must be a non-empty string"),
    ("user not a string", _set("app.user", 0), "app.user: must be a non-empty string"),
    ("missing group", _drop("app.group"), "app.group: is required"),
    ("exec not a list", _set("app.exec", "/bin/app"), "app.exec: must be a list"),
    ("exec item", _set("app.exec", ["/bin/app", 1]), "app.exec[1]: must be a string"),
    (
        "relative workingDirectory",
        _set("app.workingDirectory", "opt/work"),
        'app.workingDirectory: "opt/work" is not an absolute path',
    ),
    ("empty workingDirectory", _set("app.workingDirectory", ""), "app.workingDirectory: "),
    (
        "bad env name",
        _set("app.environment", [{"name": "1ABC", "value": ""}]),
        'app.environment[0].name: "1ABC" is not an environment variable name',
    ),
    ("env name with =", _set("app.environment.0.name", "A=B"), "app.environment[0].name: "),
    (
        "duplicate env",
        _set("app.environment", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        'app.environment[1].name: duplicate environment variable "A"',
    ),
    (
        "env value missing",
        _drop("app.environment.0.value"),
        "app.environment[0].value: is required",
    ),
    (
        "negative supplementary gid",
        _set("app.supplementaryGIDs", [1, -1]),
        "app.supplementaryGIDs[1]: must be at least 0",
    ),
    (
        "unknown isolator at app level",
        _isolators({"name": "example.com/turbo", "value": True}),
        'app.isolators[0].name: unknown isolator "example.com/turbo"',
    ),
    (
        "isolator without value",
        _isolators({"name": "resource/memory"}),
        "app.isolators[0].value: is required",
    ),
    (
        "bad isolator quantity",
        _isolators({"name": "resource/memory", "value": {"limit": "lots"}}),
        'app.isolators[0].value.limit: "lots" is not a quantity',
    ),
    (
        "negative quantity",
        _isolators({"name": "resource/cpu", "value": {"limit": "-1"}}),
        "app.isolators[0].value.limit: ",
    ),
    (
        "cpu with default true",
        _isolators({"name": "resource/cpu", "value": {"default": True, "limit": "1"}}),
        "app.isolators[0].value.default: must be false",
    ),
    (
        "block-bandwidth without default",
        _isolators({"name": "resource/block-bandwidth", "value": {"limit": "2M"}}),
        "app.isolators[0].value.default: must be true",
    ),
    (
        "network-bandwidth with request",
        _isolators(
            {
                "name": "resource/network-bandwidth",
                "value": {"default": True, "request": "1M", "limit": "2M"},
            }
        ),
        "app.isolators[0].value.request: is not supported",
    ),
    (
        "empty capability set",
        _isolators({"name": "os/linux/capabilities-retain-set", "value": {"set": []}}),
        "app.isolators[0].value.set: must be a non-empty list",
    ),
    (
        "capability sets together",
        _isolators(
            {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}},
            {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_KILL"]}},
        ),
        "app.isolators[1].name: ",
    ),
    (
        "no-new-privileges not bool",
        _isolators({"name": "os/linux/no-new-privileges", "value": "yes"}),
        "app.isolators[0].value: must be true or false",
    ),
    (
        "seccomp errno lowercase",
        _isolators(
            {"name": "os/linux/seccomp-remove-set", "value": {"set": ["reboot"], "errno": "eperm"}}
        ),
        "app.isolators[0].value.errno: ",
    ),
    (
        "two seccomp isolators",
        _isolators(
            {"name": "os/linux/seccomp-remove-set", "value": {"set": ["reboot"]}},
            {"name": "os/linux/seccomp-retain-set", "value": {"set": ["read"]}},
        ),
        "app.isolators[1].name: only one seccomp isolator",
    ),
    (
        "selinux user with colon",
        _isolators(
            {
                "name": "os/linux/selinux-context",
                "value": {"user": "a:b", "role": "r", "type": "t", "level": "s0"},
            }
        ),
        "app.isolators[0].value.user: ",
    ),
    (
        "apparmor without profile",
        _isolators({"name": "os/linux/apparmor-profile", "value": {}}),
        "app.isolators[0].value.profile: must be a non-empty string",
    ),
    (
        "oom-score-adj out of range",
        _isolators({"name": "os/linux/oom-score-adj", "value": -2500}),
        "app.isolators[0].value: must be between -1000 and 1000",
    ),
    (
        "cpu-shares too small",
        _isolators({"name": "os/linux/cpu-shares", "value": 1}),
        "app.isolators[0].value: must be between 2 and 262144",
    ),
    (
        "sysctl value not a string",
        _isolators({"name": "os/unix/sysctl", "value": {"net.ipv4.ip_forward": 1}}),
        "app.isolators[0].value.net.ipv4.ip_forward: must be a string",
    ),
    (
        "bad event handler name",
        _set("app.eventHandlers", [{"name": "pre-stop", "exec": ["/bin/x"]}]),
        'app.eventHandlers[0].name: unknown event handler "pre-stop"',
    ),
    (
        "duplicate event handler",
        _set(
            "app.eventHandlers",
            [{"name": "pre-start", "exec": ["/a"]}, {"name": "pre-start", "exec": ["/b"]}],
        ),
        'app.eventHandlers[1].name: only one "pre-start" event handler',
    ),
    (
        "event handler without exec",
        _set("app.eventHandlers", [{"name": "post-stop", "exec": []}]),
        "app.eventHandlers[0].exec: must not be empty",
    ),
    ("port zero", _set("app.ports.0.port", 0), "app.ports[0].port: must be at least 1"),
    ("port too big", _set("app.ports.0.port", 65536), "app.ports[0].port: must be at most 65535"),
    ("port as string", _set("app.ports.0.port", "80"), "app.ports[0].port: must be an integer"),
    ("port as float", _set("app.ports.0.port", 80.0), "app.ports[0].port: must be an integer"),
    (
        "port range past 65535",
        _set("app.ports", [{"name": "r", "protocol": "tcp", "port": 65000, "count": 537}]),
        "app.ports[0].count: port range 65000-65536 ends above 65535",
    ),
    ("negative count", _set("app.ports.0.count", -1), "app.ports[0].count: must be at least 0"),
    ("bad port name", _set("app.ports.0.name", "HTTP"), "app.ports[0].name: "),
    ("missing protocol", _drop("app.ports.0.protocol"), "app.ports[0].protocol: is required"),
    (
        "socketActivated not bool",
        _set("app.ports.0.socketActivated", "true"),
        "app.ports[0].socketActivated: must be true or false",
    ),
    (
        "bad mount point name",
        _set("app.mountPoints", [{"name": "work_dir", "path": "/w"}]),
        "app.mountPoints[0].name: ",
    ),
    (
        "userLabels value not string",
        _set("app.userLabels", {"a": 1}),
        "app.userLabels.a: must be a string",
    ),
    (
        "bad annotation created",
        _set("annotations.0.value", "27 Oct 2014"),
        'annotations[0].value: "27 Oct 2014" is not an RFC 3339 date-time',
    ),
    (
        "created without T",
        _set("annotations.0.value", "2014-10-27 19:32:27Z"),
        "annotations[0].value: ",
    ),
    (
        "created impossible date",
        _set("annotations.0.value", "2014-02-30T00:00:00Z"),
        "annotations[0].value: ",
    ),
    (
        "homepage not http",
        _set("annotations", [{"name": "homepage", "value": "ftp://example.com"}]),
        'annotations[0].value: "ftp://example.com" is not an http or https URL',
    ),
    (
        "duplicate annotation",
        _set("annotations", [{"name": "authors", "value": "a"}, {"name": "authors", "value": "b"}]),
        'annotations[1].name: duplicate annotation "authors"',
    ),
    (
        "dependency without imageName",
        _set("dependencies", [{"imageID": "sha512-" + "a" * 64}]),
        "dependencies[0].imageName: is required",
    ),
    (
        "dependency other hash",
        _set("dependencies", [{"imageName": "example.com/base", "imageID": "sha256-abc"}]),
        "dependencies[0].imageID: ",
    ),
    (
        "dependency id with slash",
        _set("dependencies", [{"imageName": "example.com/base", "imageID": "sha512-../x"}]),
        "dependencies[0].imageID: ",
    ),
    (
        "dependency negative size",
        _set("dependencies", [{"imageName": "example.com/base", "size": -1}]),
        "dependencies[0].size: must be at least 0",
    ),
    (
        "relative pathWhitelist",
        _set("pathWhitelist", ["/etc/hosts", "etc/passwd"]),
        'pathWhitelist[1]: "etc/passwd" is not an absolute path',
    ),
]

POD_CASES: list[tuple[str, Edit, str]] = [
    ("bad acKind", _set("acKind", "ImageManifest"), 'acKind: must be "PodManifest"'),
    ("bad acVersion", _set("acVersion", "latest"), "acVersion: "),
    ("missing apps", _drop("apps"), "apps: is required"),
    ("bad app name", _set("apps.0.name", "My App"), "apps[0].name: "),
    (
        "duplicate app names",
        _set("apps", [{"name": "a", "image": {}}, {"name": "a", "image": {}}]),
        'apps[1].name: duplicate app name "a"',
    ),
    ("missing image", _drop("apps.0.image"), "apps[0].image: is required"),
    (
        "bad image id",
        _set("apps.0.image.id", "sha512-" + "A" * 128),
        "apps[0].image.id: ",
    ),
    ("short image id", _set("apps.0.image.id", "sha512-abcdef"), "apps[0].image.id: "),
    ("bad image name", _set("apps.0.image.name", "Example"), "apps[0].image.name: "),
    (
        "app override without user",
        _set("apps.0.app", {"group": "0"}),
        "apps[0].app.user: is required",
    ),
    (
        "mount without path",
        _set("apps.0.mounts", [{"volume": "data"}]),
        "apps[0].mounts[0].path: is required",
    ),
    (
        "duplicate volume names",
        _set("volumes", [{"name": "v", "kind": "empty"}, {"name": "v", "kind": "empty"}]),
        'volumes[1].name: duplicate volume name "v"',
    ),
    (
        "bad volume kind",
        _set("volumes.0.kind", "nfs"),
        'volumes[0].kind: unknown volume kind "nfs"',
    ),
    (
        "empty volume with source",
        _set("volumes.0", {"name": "v", "kind": "empty", "source": "/srv"}),
        "volumes[0].source: an empty volume cannot have a source",
    ),
    (
        "host volume without source",
        _set("volumes.0", {"name": "v", "kind": "host"}),
        "volumes[0].source: a host volume needs a source",
    ),
    (
        "relative host source",
        _set("volumes.0", {"name": "v", "kind": "host", "source": "srv/data"}),
        'volumes[0].source: "srv/data" is not an absolute path',
    ),
    (
        "host volume with mode",
        _set("volumes.0", {"name": "v", "kind": "host", "source": "/srv", "mode": "0700"}),
        "volumes[0].mode: mode applies only to empty volumes",
    ),
    (
        "host volume with uid",
        _set("volumes.0", {"name": "v", "kind": "host", "source": "/srv", "uid": 0}),
        "volumes[0].uid: uid applies only to empty volumes",
    ),
    (
        "host volume with gid",
        _set("volumes.0", {"name": "v", "kind": "host", "source": "/srv", "gid": 1}),
        "volumes[0].gid: gid applies only to empty volumes",
    ),
    (
        "bad mode",
        _set("volumes.0", {"name": "v", "kind": "empty", "mode": "rwx"}),
        "volumes[0].mode: ",
    ),
    (
        "mode too large",
        _set("volumes.0", {"name": "v", "kind": "empty", "mode": "17777"}),
        "volumes[0].mode: ",
    ),
    (
        "negative uid",
        _set("volumes.0", {"name": "v", "kind": "empty", "uid": -1}),
        "volumes[0].uid: must be at least 0",
    ),
    (
        "bad appVolume",
        _set("apps.0.mounts", [{"volume": "x", "path": "/x", "appVolume": {"name": "x"}}]),
        "apps[0].mounts[0].appVolume.kind: is required",
    ),
    (
        "bad hostIP",
        _set("ports.0.hostIP", "300.1.2.3"),
        'ports[0].hostIP: "300.1.2.3" is not an IP address',
    ),
    ("hostIP with port", _set("ports.0.hostIP", "10.0.0.1:80"), "ports[0].hostIP: "),
    ("hostPort missing", _drop("ports.0.hostPort"), "ports[0].hostPort: is required"),
    ("hostPort too big", _set("ports.0.hostPort", 70000), "ports[0].hostPort: must be at most"),
    (
        "podPort bad range",
        _set("ports.0.podPort", {"name": "p", "protocol": "tcp", "port": 65535, "count": 2}),
        "ports[0].podPort.count: ",
    ),
    (
        "pod isolator bad name",
        _set("isolators", [{"name": "Resource/Memory", "value": {}}]),
        "isolators[0].name: ",
    ),
    (
        "duplicate pod annotation",
        _set("annotations", [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]),
        'annotations[1].name: duplicate annotation "a"',
    ),
    (
        "duplicate app annotation",
        _set("apps.0.annotations", [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]),
        'apps[0].annotations[1].name: duplicate annotation "a"',
    ),
]


def _message(model: type[ImageManifest] | type[PodManifest], document: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as caught:
        model.parse(json.dumps(document))
    message = str(caught.value)
    assert "\n" not in message
    assert not message.endswith(".")
    return message


def test_base_documents_are_valid() -> None:
    ImageManifest.parse(json.dumps(IMAGE))
    PodManifest.parse(json.dumps(POD))


@pytest.mark.parametrize(
    ("edit", "expected"), [case[1:] for case in IMAGE_CASES], ids=[case[0] for case in IMAGE_CASES]
)
def test_invalid_image_manifest(edit: Edit, expected: str) -> None:
    document = copy.deepcopy(IMAGE)
    edit(document)
    message = _message(ImageManifest, document)
    assert message.startswith("manifest: ")
    assert expected in message


@pytest.mark.parametrize(
    ("edit", "expected"), [case[1:] for case in POD_CASES], ids=[case[0] for case in POD_CASES]
)
def test_invalid_pod_manifest(edit: Edit, expected: str) -> None:
    document = copy.deepcopy(POD)
    edit(document)
    message = _message(PodManifest, document)
    assert message.startswith("pod manifest: ")
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"acKind": "ImageManifest",', "manifest: not valid JSON (line 1 column 28)"),
        (
            '{\n  "acKind": "ImageManifest",\n  oops\n}',
            "manifest: not valid JSON (line 3 column 3)",
        ),
        ("", "manifest: not valid JSON (line 1 column 1)"),
        ('{"a": NaN}', "manifest: not valid JSON: NaN is not a JSON value"),
        ('{"a": 1, "b": -Infinity}', "manifest: not valid JSON: -Infinity"),
        ('{"a": 1e999999}', "manifest: not valid JSON: number 1e999999 is out of range"),
        ('{"a": ' + "1" * 5000 + "}", "manifest: not valid JSON: "),
        ("[" * 100_000 + "]" * 100_000, "manifest: JSON nested too deeply (more than 100 levels)"),
        (
            '{"a":' + "[" * 101 + "]" * 101 + "}",
            "manifest: JSON nested too deeply (more than 100 levels)",
        ),
        ("[]", "manifest: must be a JSON object, not an array"),
        ('"ImageManifest"', "manifest: must be a JSON object, not a string"),
        ("null", "manifest: must be a JSON object, not null"),
        ("42", "manifest: must be a JSON object, not a number"),
        ("true", "manifest: must be a JSON object, not a boolean"),
    ],
)
def test_not_a_json_object(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        ImageManifest.parse(text)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_invalid_utf8_bytes() -> None:
    with pytest.raises(ManifestError, match=r"^manifest: not valid UTF-8 \(byte offset 12\)$"):
        ImageManifest.parse(b'{"acKind": "\xff"}')


def test_source_names_the_file() -> None:
    with pytest.raises(ManifestError, match=r"^/tmp/x\.aci: manifest: name: is required$"):
        ImageManifest.parse(
            '{"acKind": "ImageManifest", "acVersion": "0.8.11"}', source="/tmp/x.aci: manifest"
        )
    with pytest.raises(ManifestError, match=r"^pod manifest: apps: is required$"):
        PodManifest.parse('{"acKind": "PodManifest", "acVersion": "0.8.11"}')


def test_several_errors_are_counted_on_one_line() -> None:
    document = copy.deepcopy(IMAGE)
    document["app"]["user"] = ""
    document["app"]["group"] = ""
    message = _message(ImageManifest, document)
    assert message == "manifest: app.user: must be a non-empty string (and 1 more)"


def test_manifest_error_is_an_rkt_error() -> None:
    with pytest.raises(RktError):
        PodManifest.parse("{}")


def test_from_dict_reports_like_parse() -> None:
    document = copy.deepcopy(POD)
    document["volumes"][0]["kind"] = "nfs"
    with pytest.raises(ManifestError, match=r"^--volume: volumes\[0\]\.kind: unknown volume kind"):
        PodManifest.from_dict(document, source="--volume")
