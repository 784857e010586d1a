"""Bad input found by hand (issue 10): one line, non-zero exit, no pod left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.plugin import FLY, needs_root

pytestmark = [needs_root, pytest.mark.root]



@pytest.fixture
def image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("busybox.aci", name="example.com/busybox", busybox=True,
                             exec_=["/bin/true"])


def run(env: RktEnv, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return env.run("--insecure-options=image", "run", FLY, *args)


def no_pods(env: RktEnv) -> bool:
    return not list((env.data_dir / "pods").glob("*/*"))


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--hostname=a/b"], ['--hostname "a/b": not a valid host name']),
        (["--hostname=" + "h" * 65], ["not a valid host name", "at most 64 characters"]),
        (["--hostname=-lead"], ["not a valid host name"]),
        (["--uuid-file-save=/no/such/dir/uuid"], ["--uuid-file-save", "cannot create a file"]),
        # root may "write" it (access(2) says so); the write itself fails
        (["--uuid-file-save=/proc/version"], ["--uuid-file-save /proc/version"]),
        (["--uuid-file-save=/tmp"], ["--uuid-file-save /tmp: is a directory"]),
    ],
    ids=["hostname-slash", "hostname-long", "hostname-dash", "uuid-file-dir-missing",
         "uuid-file-proc", "uuid-file-directory"],
)
def test_pod_flags(rkt_env: RktEnv, image: Path, flags: list[str],
                   fragments: list[str]) -> None:
    assert_one_line_error(run(rkt_env, *flags, image), *fragments)
    assert no_pods(rkt_env)


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--user=99999999999"], ['user "99999999999" is not a valid ID']),
        (["--group=4294967295"], ['group "4294967295" is not a valid ID']),
        (["--name=" + "a" * 300], ["--name", "an app name may have at most 200 characters"]),
    ],
    ids=["uid-too-big", "gid-no-id", "long-name"],
)
def test_app_flags(rkt_env: RktEnv, image: Path, flags: list[str],
                   fragments: list[str]) -> None:
    assert_one_line_error(run(rkt_env, image, *flags), *fragments)
    assert no_pods(rkt_env)


def test_the_largest_ids_still_run(rkt_env: RktEnv, image: Path) -> None:
    result = run(rkt_env, image, "--user=4294967294", "--group=4294967294")
    assert result.returncode == 0, result.stderr


def test_status_wait_on_a_prepared_pod_nobody_starts_ends(rkt_env: RktEnv,
                                                          image: Path) -> None:
    uuid = rkt_env.run("--insecure-options=image", "prepare", "--quiet", FLY, image,
                       check=True).stdout.strip()
    result = rkt_env.run("status", "--wait=true", uuid, timeout=60)
    assert_one_line_error(result, f'pod "{uuid}" is prepared and nobody is starting it')
    assert rkt_env.run("status", uuid).stdout.startswith("state=prepared")


def test_uuid_file_is_written_for_a_good_path(rkt_env: RktEnv, image: Path,
                                              tmp_path: Path) -> None:
    target = tmp_path / "saved" / "uuid"
    target.parent.mkdir()
    target.write_text("the UUID of an older pod, longer than one\n")
    result = run(rkt_env, f"--uuid-file-save={target}", image)
    assert result.returncode == 0, result.stderr
    assert len(target.read_text()) == 36
    assert os.listdir(rkt_env.data_dir / "pods" / "run") == [target.read_text()]
    assert os.listdir(target.parent) == ["uuid"]  # moved into place, nothing left beside it
