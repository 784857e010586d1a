"""``kill -9`` at every fault point of fetch, prepare, run and the gcs; then ``rkt gc``
and ``rkt image gc`` leave exactly what the surviving state needs (issue 10).

The kill comes from ``RKT_TEST_KILL_AT`` (:mod:`rkt.faults`): the real ``rkt``
process sends itself SIGKILL at the named point, so each kill lands at a known
step instead of wherever a timer happens to fire. After the recovery the data
directory holds no scratch files, no half pods, no tree no pod uses, no blob
without its index row (nor a row without its blob), every image verifies and
every prepared pod runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rkt.faults import ENV, POINTS
from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import FLY, needs_root

pytestmark = [
    needs_root,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]



def image(builder: AciBuilder, name: str) -> Path:
    return builder.build(f"{name}.aci", name=f"example.com/{name}", busybox=True,
                         exec_=["/bin/echo", f"{name} ran"])


def rkt(env: RktEnv, *args: str | Path, kill_at: str | None = None) -> int:
    result = env.run("--insecure-options=image", *args,
                     env={ENV: kill_at} if kill_at else None)
    if kill_at is None:
        assert result.returncode == 0, (args, result.stderr)
    else:
        assert "Traceback" not in result.stderr, result.stderr
    return result.returncode


def the_command(point: str, images: dict[str, Path]) -> list[str | Path]:
    """What reaches ``point`` in the world :func:`world` sets up."""
    if point.startswith(("fetch:", "import:")):
        return ["fetch", images["fresh"]]
    if point.startswith(("prepare:", "render:")):
        return ["prepare", FLY, images["fetched"]]
    if point == "run:started":
        return ["run", FLY, images["ran"]]
    if point.startswith("gc:"):
        return ["gc", "--grace-period=0s"]
    if point == "image-gc:trees":
        return ["image", "gc"]
    assert point == "image-rm:forgotten"
    return ["image", "rm", "example.com/unused"]


def world(env: RktEnv, builder: AciBuilder) -> tuple[dict[str, Path], str]:
    """Images in every state, a prepared pod, an exited pod, a tree no pod uses."""
    images = {name: image(builder, name)
              for name in ("fresh", "fetched", "ran", "gone", "unused")}
    for name in ("fetched", "unused"):
        rkt(env, "fetch", images[name])
    uuid = env.run("--insecure-options=image", "prepare", "--quiet", FLY, images["ran"],
                   check=True).stdout.strip()
    rkt(env, "run", FLY, images["gone"])
    rkt(env, "gc", "--grace-period=0s")  # the pod goes; its tree stays until image gc
    rkt(env, "run", FLY, images["ran"])  # an exited pod for gc to collect
    return images, uuid


def check_consistent(env: RktEnv) -> None:
    data = env.data_dir
    assert sorted(p.name for p in (data / "cas" / "tmp").iterdir()) == []
    pods = {p.parent.name + "/" + p.name for p in (data / "pods").glob("*/*")}
    assert all(p.startswith("prepared/") for p in pods), pods
    used = set()
    for pod in (data / "pods" / "prepared").iterdir():
        used.add((pod / "stage1TreeStoreID").read_text().strip())
        used |= {f.read_text().strip() for f in (pod / "appsinfo").glob("*/treeStoreID")}
    trees = {t.name for t in (data / "cas" / "tree").iterdir()}
    assert trees == used
    assert all((data / "cas" / "tree" / t / "rendered").exists() for t in trees)
    blobs = {b.name for b in (data / "cas" / "blob" / "sha512").glob("*/*")}
    manifests = {m.name for m in (data / "cas" / "imageManifest" / "sha512").glob("*/*")}
    listed = set(env.image_ids())
    assert blobs == manifests == listed
    verified = env.run("image", "verify", *listed)
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_then_gc_leaves_exactly_what_survivors_need(
    rkt_env: RktEnv, aci_builder: AciBuilder, point: str
) -> None:
    images, prepared = world(rkt_env, aci_builder)
    status = rkt(rkt_env, *the_command(point, images), kill_at=point)
    assert status == -9, f"{point} was not reached"

    rkt(rkt_env, "gc", "--grace-period=0s")
    rkt(rkt_env, "image", "gc")
    check_consistent(rkt_env)
    ran = rkt_env.run("run-prepared", prepared)
    assert ran.stdout == "ran ran\n", ran.stderr
