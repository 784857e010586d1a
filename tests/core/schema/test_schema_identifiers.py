"""Property checks of the identifier validators against the spec's regexes (types.md).

The strings are enumerated exhaustively over small alphabets that contain every
character class that matters, so every edge case up to that length is covered and
the test needs no random data. Our choices (see rkt.schema.types):

- AC Identifier: accepted iff the reference's two rules accept it AND no "/"-separated
  segment is empty, "." or "..". This is a superset of the spec regex.
- AC Name: accepted iff the reference's two rules accept it (a superset of the regex).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterator

import pytest

from rkt.schema.types import (
    validate_ac_identifier,
    validate_ac_name,
    validate_dependency_image_id,
    validate_environment_name,
    validate_image_id,
    validate_semver,
    validate_timestamp,
)

SPEC_AC_IDENTIFIER = re.compile(r"^[a-z0-9]+([-._~/][a-z0-9]+)*$")
SPEC_AC_NAME = re.compile(r"^[a-z0-9]+([-][a-z0-9]+)*$")
ALNUM = set("abcdefghijklmnopqrstuvwxyz0123456789")


def _reference_identifier(value: str) -> bool:
    return (
        bool(value)
        and all(c in ALNUM or c in "-._~/" for c in value)
        and value[0] in ALNUM
        and value[-1] in ALNUM
    )


def _reference_name(value: str) -> bool:
    return (
        bool(value)
        and all(c in ALNUM or c == "-" for c in value)
        and value[0] in ALNUM
        and value[-1] in ALNUM
    )


def _accepts(validator: Callable[[str], str], value: str) -> bool:
    try:
        result = validator(value)
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return False
    assert result == value
    return True


def _strings(alphabet: str, max_length: int) -> Iterator[str]:
    for length in range(max_length + 1):
        for chars in itertools.product(alphabet, repeat=length):
            yield "".join(chars)


def _random_strings(alphabet: str, count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 24)))


IDENTIFIER_ALPHABET = "a0-._~/A%"


def _identifier_cases() -> Iterator[str]:
    yield from _strings(IDENTIFIER_ALPHABET, 4)
    yield from _strings("a./", 6)
    yield from _random_strings("ab9-._~/", 3000, seed=7)


def test_ac_identifier_matches_our_rule_exactly() -> None:
    checked = 0
    for value in _identifier_cases():
        segments_ok = all(s not in ("", ".", "..") for s in value.split("/"))
        expected = _reference_identifier(value) and segments_ok
        assert _accepts(validate_ac_identifier, value) is expected, value
        checked += 1
    assert checked > 10_000


def test_ac_identifier_accepts_everything_the_spec_regex_accepts() -> None:
    for value in _identifier_cases():
        if SPEC_AC_IDENTIFIER.match(value):
            assert _accepts(validate_ac_identifier, value), value


def test_ac_identifier_accepts_nothing_the_reference_rejects() -> None:
    for value in _identifier_cases():
        if _accepts(validate_ac_identifier, value):
            assert _reference_identifier(value), value


@pytest.mark.parametrize(
    "value",
    [
        "database",
        "example.com/database",
        "example.com/~user/app_v1",
        "sub-domain.example.com/org/product/release",
        # Accepted by the reference but not by the spec regex; kept for real images.
        "a..b",
        "a/-b",
        "a-_b",
        "example.com/.hidden",
    ],
)
def test_ac_identifier_accepted(value: str) -> None:
    assert validate_ac_identifier(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "A", "a b", "-a", "a-", "a/", "/a", "é", "a\n", "a//b", "a/./b", "a/../b", "a/..", "../a"],
)
def test_ac_identifier_rejected(value: str) -> None:
    assert not _accepts(validate_ac_identifier, value)


def test_ac_name_matches_the_reference_rule_exactly() -> None:
    checked = 0
    for value in itertools.chain(_strings("a0-_.A/", 5), _random_strings("ab9-", 3000, seed=11)):
        assert _accepts(validate_ac_name, value) is _reference_name(value), value
        if SPEC_AC_NAME.match(value):
            assert _accepts(validate_ac_name, value), value
        checked += 1
    assert checked > 10_000


@pytest.mark.parametrize("value", ["database", "product-database-release", "a--b", "0"])
def test_ac_name_accepted(value: str) -> None:
    assert validate_ac_name(value) == value


@pytest.mark.parametrize("value", ["", "a.b", "a_b", "a/b", "-a", "a-", "Db", "a\n"])
def test_ac_name_rejected(value: str) -> None:
    assert not _accepts(validate_ac_name, value)


def test_validator_messages_name_the_value_and_the_rule() -> None:
    with pytest.raises(ValueError, match=r'^"Foo" is not an AC Identifier: only lowercase'):
        validate_ac_identifier("Foo")
    with pytest.raises(ValueError, match=r'^"-a" is not an AC Name: must start and end'):
        validate_ac_name("-a")


@pytest.mark.parametrize("value", ["sha512-" + "0" * 64, "sha512-" + "af" * 64])
def test_image_id_accepted(value: str) -> None:
    assert validate_image_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "sha512-" + "0" * 63,
        "sha512-" + "0" * 65,
        "sha512-" + "0" * 127,
        "sha512-" + "0" * 129,
        "sha512-" + "0" * 32,
        "sha512-" + "A" * 64,
        "sha512-" + "g" * 64,
        "sha256-" + "0" * 64,
        "0" * 128,
        "sha512-" + "0" * 64 + "\n",
        "sha512-...",
        "",
    ],
)
def test_image_id_rejected(value: str) -> None:
    assert not _accepts(validate_image_id, value)


@pytest.mark.parametrize("value", ["sha512-...", "sha512-abc", "sha512-" + "0" * 128])
def test_dependency_image_id_accepted(value: str) -> None:
    assert validate_dependency_image_id(value) == value


@pytest.mark.parametrize(
    "value", ["sha512-", "sha512-a-b", "sha256-abc", "sha512-../../x", "sha512-a b", "abc"]
)
def test_dependency_image_id_rejected(value: str) -> None:
    assert not _accepts(validate_dependency_image_id, value)


@pytest.mark.parametrize(
    "value", ["0.8.11", "1.0.0", "0.0.1", "1.0.0-alpha.1", "1.0.0+build.5", "0.0.0-rc1", "10.20.30"]
)
def test_semver_accepted(value: str) -> None:
    assert validate_semver(value) == value


@pytest.mark.parametrize(
    "value",
    ["0.0.0", "0.0.0+meta", "1.0", "1", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0 ", "", "1.0.0-01"],
)
def test_semver_rejected(value: str) -> None:
    assert not _accepts(validate_semver, value)


@pytest.mark.parametrize(
    "value",
    [
        "2014-10-27T19:32:27.67021798Z",
        "2014-10-27T19:32:27Z",
        "2015-05-18T13:49:28.351729952-04:00",
        "2016-02-29t00:00:00z",
    ],
)
def test_timestamp_accepted(value: str) -> None:
    assert validate_timestamp(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "2014-10-27 19:32:27Z",
        "2014-10-27T19:32:27",
        "2014-10-27",
        "2015-02-29T00:00:00Z",
        "2014-10-27T24:00:00Z",
        "2014-10-27T19:32:27+25:00",
        "27 Oct 2014",
    ],
)
def test_timestamp_rejected(value: str) -> None:
    assert not _accepts(validate_timestamp, value)


@pytest.mark.parametrize("value", ["PATH", "_x", "a.b-c", "REDUCE_WORKER_DEBUG", "x1"])
def test_environment_name_accepted(value: str) -> None:
    assert validate_environment_name(value) == value


@pytest.mark.parametrize("value", ["", "1A", ".a", "-a", "A=B", "A B", "É"])
def test_environment_name_rejected(value: str) -> None:
    assert not _accepts(validate_environment_name, value)
