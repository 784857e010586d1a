"""Image dependencies through the real command: fetching them, the render order of
``appc-spec/ace.md`` (filesystem setup), ``pathWhitelist``, pins and bad graphs.

The images come from local files with ``--pull-policy=never``, so dependencies are
looked up in the store only; fetching them by discovery is covered in
``tests/cli/test_fetch_remote.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from rkt.store.cas import CasStore
from rkt.store.tree import render_layers, tree_id_for
from rkt_testing import RktEnv, assert_one_line_error
from rkt_testing.aci import build_aci, image_manifest


def _dep(name: str, **extra: Any) -> dict[str, Any]:
    return {"imageName": f"example.com/{name}", **extra}


def _image(directory: Path, name: str, files: dict[str, str], deps: list[dict[str, Any]]
           | None = None, **extra: Any) -> Path:
    manifest = image_manifest(f"example.com/{name}", version=None, extra=extra)
    if deps:
        manifest["dependencies"] = deps
    return build_aci(directory / f"{name}.aci", manifest=manifest, files=files)


def _fetch(env: RktEnv, *images: Path) -> list[str]:
    ids = []
    for image in images:
        result = env.run("--insecure-options=image", "fetch", "--full", "--pull-policy=never",
                         image)
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    return ids


def _render(env: RktEnv, image: str) -> Path:
    out = env.root / "rendered"
    result = env.run("image", "render", "--rootfs-only", image, out)
    assert result.returncode == 0, result.stderr
    return out


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_tree_order(rkt_env: RktEnv, tmp_path: Path) -> None:
    """A -> [B, C], C -> [D]: laid down B, D, C, A (ace.md)."""
    b = _image(tmp_path, "b", {"b.txt": "b", "last.txt": "b", "bd.txt": "b"})
    d = _image(tmp_path, "d", {"d.txt": "d", "last.txt": "d", "bd.txt": "d", "cd.txt": "d"})
    c = _image(tmp_path, "c", {"c.txt": "c", "last.txt": "c", "cd.txt": "c"}, [_dep("d")])
    a = _image(tmp_path, "a", {"a.txt": "a"}, [_dep("b"), _dep("c")])
    ids = _fetch(rkt_env, b, d, c, a)
    assert _files(_render(rkt_env, "example.com/a")) == {
        "a.txt": "a", "b.txt": "b", "c.txt": "c", "d.txt": "d",
        "last.txt": "c",  # C is laid down last before A
        "bd.txt": "d",  # D after B
        "cd.txt": "c",  # C after its own dependency D
    }
    # rkt's tree ID: the keys of its dependency list (A, C, D, B)
    store = CasStore(rkt_env.data_dir)
    key = {name: store.resolve(image_id).id for name, image_id in zip("bdca", ids, strict=True)}
    layers = render_layers(store, key["a"])
    assert [layer.image_id for layer in layers] == [key["b"], key["d"], key["c"], key["a"]]
    tree = store.render(key["a"])
    assert tree.name == tree_id_for([key["a"], key["c"], key["d"], key["b"]])
    assert (tree / "rootfs" / "last.txt").read_text() == "c"


def test_shared_dependency_is_laid_down_twice(rkt_env: RktEnv, tmp_path: Path) -> None:
    """A -> [B, C], B -> [D], C -> [D]: D, B, D, C, A, so D's files win over B's."""
    d = _image(tmp_path, "d", {"shared.txt": "d", "bd.txt": "d"})
    b = _image(tmp_path, "b", {"bd.txt": "b", "b.txt": "b"}, [_dep("d")])
    c = _image(tmp_path, "c", {"c.txt": "c"}, [_dep("d")])
    a = _image(tmp_path, "a", {}, [_dep("b"), _dep("c")])
    _fetch(rkt_env, d, b, c, a)
    assert _files(_render(rkt_env, "example.com/a")) == {
        "shared.txt": "d", "bd.txt": "d", "b.txt": "b", "c.txt": "c",
    }


def test_path_whitelists(rkt_env: RktEnv, tmp_path: Path) -> None:
    """The image's whitelist filters every layer; an intermediate image's filters its own
    subtree (ace.md: "filtered by any of the pathWhitelist of the image itself and the
    images depending on the image")."""
    d = _image(tmp_path, "d", {"d.txt": "d", "c.txt": "from d"})
    c = _image(tmp_path, "c", {"c.txt": "c", "c-extra.txt": "c"}, [_dep("d")],
               pathWhitelist=["/c.txt", "/b.txt"])
    b = _image(tmp_path, "b", {"b.txt": "b", "etc/b.conf": "b"})
    a = _image(tmp_path, "a", {"a.txt": "a", "secret.txt": "a"}, [_dep("b"), _dep("c")],
               pathWhitelist=["/a.txt", "/b.txt", "/c.txt", "/d.txt", "/etc/b.conf"])
    _fetch(rkt_env, d, c, b, a)
    assert _files(_render(rkt_env, "example.com/a")) == {
        "a.txt": "a", "b.txt": "b", "etc/b.conf": "b", "c.txt": "c",
        # d.txt is in A's whitelist but not in C's, through which D comes
    }
    # rendered alone, C applies only its own whitelist
    out = rkt_env.root / "c-alone"
    rkt_env.run("image", "render", "--rootfs-only", "example.com/c", out, check=True)
    assert _files(out) == {"c.txt": "c"}


def test_empty_whitelist_means_everything(rkt_env: RktEnv, tmp_path: Path) -> None:
    b = _image(tmp_path, "b", {"b.txt": "b"})
    a = _image(tmp_path, "a", {"a.txt": "a"}, [_dep("b")], pathWhitelist=[])
    _fetch(rkt_env, b, a)
    assert _files(_render(rkt_env, "example.com/a")) == {"a.txt": "a", "b.txt": "b"}


def test_dependency_labels_choose_the_version(rkt_env: RktEnv, tmp_path: Path) -> None:
    old = build_aci(tmp_path / "old.aci", files={"v.txt": "1"},
                    manifest=image_manifest("example.com/lib", version="1"))
    new = build_aci(tmp_path / "new.aci", files={"v.txt": "2"},
                    manifest=image_manifest("example.com/lib", version="2"))
    a = _image(tmp_path, "a", {}, [_dep("lib", labels=[{"name": "version", "value": "1"}])])
    _fetch(rkt_env, old, new, a)
    assert _files(_render(rkt_env, "example.com/a")) == {"v.txt": "1"}


def test_pinned_image_id(rkt_env: RktEnv, tmp_path: Path) -> None:
    b = _image(tmp_path, "b", {"b.txt": "b"})
    digest = hashlib.sha512(gzip.decompress(b.read_bytes())).hexdigest()
    pinned = _image(tmp_path, "a", {}, [_dep("b", imageID=f"sha512-{digest}")])
    _fetch(rkt_env, b, pinned)
    assert _files(_render(rkt_env, "example.com/a")) == {"b.txt": "b"}


def test_pin_that_does_not_match(rkt_env: RktEnv, tmp_path: Path) -> None:
    b = _image(tmp_path, "b", {"b.txt": "b"})
    wrong = "sha512-" + "ab" * 64
    a = _image(tmp_path, "a", {}, [_dep("b", imageID=wrong)])
    _fetch(rkt_env, b)
    result = rkt_env.run("--insecure-options=image", "fetch", "--pull-policy=never", a)
    assert assert_one_line_error(result, status=254).startswith(
        f'rkt: dependency "example.com/b" of image "example.com/a" is pinned to imageID '
        f"{wrong}, but the image found is sha512-"
    )


def test_missing_dependency(rkt_env: RktEnv, tmp_path: Path) -> None:
    a = _image(tmp_path, "a", {"a.txt": "a"},
               [_dep("gone", labels=[{"name": "version", "value": "3"}])])
    result = rkt_env.run("--insecure-options=image", "fetch", "--pull-policy=never", a)
    assert_one_line_error(
        result, status=254,
        message='dependency "example.com/gone,version=3" of image "example.com/a": '
                'no image named "example.com/gone:3" in the store',
    )
    # the image itself was stored (as rkt does); rendering it names what is missing
    render = rkt_env.run("image", "render", "example.com/a", rkt_env.root / "out")
    assert assert_one_line_error(render, status=254).startswith(
        'rkt: dependency "example.com/gone" of image "example.com/a" is not in the store'
    )
    assert not (rkt_env.root / "out").exists()


def test_dependency_cycle(rkt_env: RktEnv, tmp_path: Path) -> None:
    b = _image(tmp_path, "b", {}, [_dep("a")])
    a = _image(tmp_path, "a", {}, [_dep("b")])
    first = rkt_env.run("--insecure-options=image", "fetch", "--pull-policy=never", b)
    assert first.returncode == 254  # a is not there yet
    second = rkt_env.run("--insecure-options=image", "fetch", "--pull-policy=never", a)
    assert_one_line_error(second, "dependency cycle", status=254)
    render = rkt_env.run("image", "render", "example.com/a", rkt_env.root / "out")
    assert_one_line_error(
        render, status=254, message='dependency cycle through image "example.com/b"')


def test_image_without_dependencies_keeps_its_tree_id(rkt_env: RktEnv, tmp_path: Path) -> None:
    (image_id,) = _fetch(rkt_env, _image(tmp_path, "solo", {"x": "y"}))
    store = CasStore(rkt_env.data_dir)
    key = store.resolve(image_id).id
    assert store.render(key).name == tree_id_for([key])
    manifest = json.loads((store.render(key) / "manifest").read_text())
    assert manifest["name"] == "example.com/solo"
