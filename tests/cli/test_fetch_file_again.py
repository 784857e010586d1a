"""A file fetched again: not hashed again when it is provably the same file, always
read again when it may have changed (issue 14, ``rkt run ./file.aci`` of a stored image).

What shows whether the bytes were read again is the file fetcher's ``--debug`` line
and, for a changed file, the image ID that comes back.
"""

from __future__ import annotations

import os
from pathlib import Path

from rkt_testing import AciBuilder, RktEnv

INSECURE = "--insecure-options=image"
SKIPPED = "imported before"


def fetch(rkt_env: RktEnv, image: Path, *flags: str) -> tuple[str, str]:
    result = rkt_env.run(*flags, "--debug", "fetch", image)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


def test_the_same_file_is_not_hashed_again(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build(exec_=["/bin/true"], compression="none")
    first, stderr = fetch(rkt_env, image, INSECURE)
    assert SKIPPED not in stderr
    second, stderr = fetch(rkt_env, image, INSECURE)
    assert second == first
    assert SKIPPED in stderr
    assert "signature verification has been disabled" in stderr


def test_a_file_changed_in_place_with_its_size_and_mtime_kept_is_read_again(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    # an uncompressed ACI ends in the tar's zero padding: any byte there is harmless
    image = aci_builder.build(exec_=["/bin/true"], compression="none")
    assert image.read_bytes()[-1] == 0
    first, _ = fetch(rkt_env, image, INSECURE)
    before = image.stat()
    with open(image, "r+b") as handle:
        handle.seek(before.st_size - 1)
        handle.write(b"\x01")
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = image.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    second, stderr = fetch(rkt_env, image, INSECURE)
    assert SKIPPED not in stderr
    assert second != first  # other bytes, another ID: they were hashed
    stored = rkt_env.image_ids()
    assert len(stored) == 2
    assert {i for i in stored if i.startswith((first, second))} == set(stored)


def test_a_file_whose_image_was_removed_is_imported_again(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    image = aci_builder.build(exec_=["/bin/true"])
    first, _ = fetch(rkt_env, image, INSECURE)
    rkt_env.run("image", "rm", first, check=True)
    second, stderr = fetch(rkt_env, image, INSECURE)
    assert second == first
    assert SKIPPED not in stderr
    assert [i[:len(first)] for i in rkt_env.image_ids()] == [first]


def test_a_signed_file_is_verified_every_time(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.trust("example.com/hello", key_file)
    image = aci_builder.build(exec_=["/bin/true"])
    gpg.sign_detached(fingerprint, image)
    fetch(rkt_env, image)
    _, stderr = fetch(rkt_env, image)
    assert SKIPPED not in stderr
    assert "signature verified" in stderr
