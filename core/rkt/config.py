"""rkt's configuration directories: ``auth.d``, ``paths.d``, ``stage1.d``.

rkt reads the ``*.json`` files (no recursion, other names ignored) of each kind's
subdirectory in the system dir (``/usr/lib/rkt``), then the local dir
(``/etc/rkt``), then the user dir if one is given; later directories override
earlier ones per domain, registry or field. Defining the same domain, registry
or field twice within one directory is an error, as is any file without a known
``rktKind`` and ``rktVersion: v1``. Every error names the file.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkt.errors import ConfigError

SUBDIRS: dict[str, tuple[str, ...]] = {
    "auth.d": ("auth", "dockerAuth"),
    "paths.d": ("paths",),
    "stage1.d": ("stage1",),
}


#: credential fields ``rkt config`` redacts
SECRET_FIELDS = frozenset({"password", "token"})
REDACTED = "REDACTED"


@dataclass(frozen=True)
class AuthEntry:
    """Credentials for HTTPS image, signature and discovery fetches of some domains."""

    type: str  # "basic" or "oauth"
    credentials: dict[str, str]
    source: Path

    def headers(self) -> dict[str, str]:
        if self.type == "basic":
            import base64

            pair = f"{self.credentials['user']}:{self.credentials['password']}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {"Authorization": f"Bearer {self.credentials['token']}"}


@dataclass(frozen=True)
class DockerAuthEntry:
    user: str
    password: str
    source: Path


@dataclass
class Config:
    auth: dict[str, AuthEntry] = field(default_factory=dict)
    docker_auth: dict[str, DockerAuthEntry] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    stage1: dict[str, str] = field(default_factory=dict)
    #: auth.d files holding a password or token that other users can read
    exposed_secrets: list[Path] = field(default_factory=list)
    #: backend name -> its build options (stage1.d's ``options``, an extension)
    stage1_options: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, system: Path, local: Path, user: Path | None = None) -> Config:
        config = cls()
        for directory in (system, local, user):
            if directory is not None:
                config._merge(_read_dir(directory))
        return config

    def _merge(self, layer: Config) -> None:
        self.auth.update(layer.auth)
        self.exposed_secrets += layer.exposed_secrets
        self.docker_auth.update(layer.docker_auth)
        self.paths.update(layer.paths)
        # name and version travel as a pair; location on its own (rkt's rules)
        if "name" in layer.stage1:
            self.stage1["name"] = layer.stage1["name"]
            self.stage1["version"] = layer.stage1["version"]
        if "location" in layer.stage1:
            self.stage1["location"] = layer.stage1["location"]
        for backend, values in layer.stage1_options.items():
            self.stage1_options.setdefault(backend, {}).update(values)

    def to_json(self, *, redact: bool = True) -> dict[str, Any]:
        """The merged configuration in ``rkt config``'s ``{"stage0": [...]}`` form.

        Passwords and tokens read ``REDACTED`` unless ``redact`` is false (``rkt
        config --raw``), so the output can be pasted into a bug report.
        """

        def shown(credentials: dict[str, str]) -> dict[str, str]:
            return {key: REDACTED if redact and key in SECRET_FIELDS else value
                    for key, value in credentials.items()}

        entries: list[dict[str, Any]] = []
        for domain, auth in sorted(self.auth.items()):
            entries.append({
                "rktVersion": "v1", "rktKind": "auth", "domains": [domain],
                "type": auth.type, "credentials": shown(auth.credentials),
            })
        for registry, docker in sorted(self.docker_auth.items()):
            entries.append({
                "rktVersion": "v1", "rktKind": "dockerAuth", "registries": [registry],
                "credentials": shown({"user": docker.user, "password": docker.password}),
            })
        if self.paths:
            entries.append({"rktVersion": "v1", "rktKind": "paths", **self.paths})
        if self.stage1 or self.stage1_options:
            options = {"options": self.stage1_options} if self.stage1_options else {}
            entries.append({"rktVersion": "v1", "rktKind": "stage1", **self.stage1, **options})
        return {"stage0": entries}


def _read_dir(directory: Path) -> Config:
    layer = Config()
    seen_fields: dict[str, Path] = {}
    for subdir, kinds in SUBDIRS.items():
        folder = directory / subdir
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix != ".json" or not path.is_file():
                continue
            document = _load_json(path)
            kind = document.get("rktKind")
            if kind not in kinds:
                raise ConfigError(
                    f'{path}: unknown rktKind {kind!r} (expected {" or ".join(kinds)})'
                )
            if document.get("rktVersion") != "v1":
                raise ConfigError(f'{path}: unsupported rktVersion {document.get("rktVersion")!r}')
            _apply(layer, kind, document, path, seen_fields)
    return layer


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return document


def _strings(document: dict[str, Any], key: str, path: Path) -> list[str]:
    value = document.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key!r} must be a non-empty list of strings")
    return value


def _credentials(document: dict[str, Any], path: Path, *keys: str) -> dict[str, str]:
    creds = document.get("credentials")
    if not isinstance(creds, dict):
        raise ConfigError(f"{path}: 'credentials' must be an object")
    for key in keys:
        if not isinstance(creds.get(key), str):
            raise ConfigError(f"{path}: credentials.{key} must be a string")
    return {key: creds[key] for key in keys}


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _claim(seen: dict[str, Path], what: str, path: Path) -> None:
    if what in seen:
        raise ConfigError(f"{path}: {what} is already defined in {seen[what]}")
    seen[what] = path


def _apply(
    layer: Config, kind: str, document: dict[str, Any], path: Path, seen: dict[str, Path]
) -> None:
    if kind in ("auth", "dockerAuth") and _readable_by_others(path):
        layer.exposed_secrets.append(path)
    if kind == "auth":
        auth_type = document.get("type")
        if auth_type == "basic":
            creds = _credentials(document, path, "user", "password")
        elif auth_type == "oauth":
            creds = _credentials(document, path, "token")
        else:
            raise ConfigError(f"{path}: unsupported auth type {auth_type!r} (basic or oauth)")
        for domain in _strings(document, "domains", path):
            _claim(seen, f'auth for domain "{domain}"', path)
            layer.auth[domain] = AuthEntry(auth_type, creds, path)
    elif kind == "dockerAuth":
        creds = _credentials(document, path, "user", "password")
        for registry in _strings(document, "registries", path):
            _claim(seen, f'docker auth for registry "{registry}"', path)
            layer.docker_auth[registry] = DockerAuthEntry(creds["user"], creds["password"], path)
    elif kind == "paths":
        for key in ("data", "stage1-images"):
            if key in document:
                if not isinstance(document[key], str) or not document[key].startswith("/"):
                    raise ConfigError(f"{path}: {key!r} must be an absolute path")
                _claim(seen, f"paths {key!r}", path)
                layer.paths[key] = document[key]
        # an extension of rkt's paths kind: where pods' cgroups go, below each
        # hierarchy's root (rkt.pod.cgroups)
        if "cgroup-parent" in document:
            value = document["cgroup-parent"]
            if not isinstance(value, str) or not value.strip("/") or ".." in value.split("/"):
                raise ConfigError(f"{path}: 'cgroup-parent' must be a cgroup path such as "
                                  "\"rkt\" or \"machine.slice/rkt\"")
            _claim(seen, "paths 'cgroup-parent'", path)
            layer.paths["cgroup-parent"] = value
        # an extension of rkt's paths kind: which registered image store to open
        if "store" in document:
            if not isinstance(document["store"], str) or not document["store"]:
                raise ConfigError(f"{path}: 'store' must be a store name")
            _claim(seen, "paths 'store'", path)
            layer.paths["store"] = document["store"]
    elif kind == "stage1":
        if ("name" in document) != ("version" in document):
            raise ConfigError(f"{path}: stage1 'name' and 'version' must be given together")
        for key in ("name", "version", "location"):
            if key in document:
                if not isinstance(document[key], str) or not document[key]:
                    raise ConfigError(f"{path}: stage1 {key!r} must be a non-empty string")
                _claim(seen, f"stage1 {key!r}", path)
                layer.stage1[key] = document[key]
        # an extension of rkt's stage1 kind: build options per backend, for
        # `rkt install` ({"options": {"kvm": {"kernel": "/boot/vmlinuz-..."}}})
        if "options" in document:
            _stage1_options(layer, document["options"], path, seen)


def _stage1_options(layer: Config, options: Any, path: Path, seen: dict[str, Path]) -> None:
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: stage1 'options' must be an object of backend names")
    for backend, values in options.items():
        if not isinstance(values, dict) or not all(
            isinstance(v, str) and v for v in values.values()
        ):
            raise ConfigError(
                f"{path}: stage1 options.{backend} must be an object of non-empty strings"
            )
        for key, value in values.items():
            _claim(seen, f"stage1 options.{backend}.{key}", path)
            layer.stage1_options.setdefault(backend, {})[key] = value
