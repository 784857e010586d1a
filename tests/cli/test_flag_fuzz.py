"""Every command's flags, fed generated values: a clean failure or a success, never a
traceback or an "internal error" (issue 10, "Bad input gets one line").

The commands run in-process through :func:`rkt.cli.main.main` (a process per input
would cost a minute per hundred inputs) against a private data dir. Their
positional arguments name things that do not exist (a pod, an image file, a key),
so no input reaches a pod or the network; generated values never start with "/"
or hold "/", so no flag can point rkt at a host file such as /dev/zero, nor NUL,
which no real command line can carry.
``RKT_FUZZ_EXAMPLES`` sets the inputs per command (default 40).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkt.cli.context import RktArgumentParser, add_global_flags
from rkt.cli.main import COMMANDS, main
from rkt_testing import RktEnv

EXAMPLES = int(os.environ.get("RKT_FUZZ_EXAMPLES", "40"))
POD = "0e0e0e0e"
IMAGE_ID = "sha512-0e0e0e0e"
#: positional arguments per command: things that do not exist
POSITIONALS: dict[str, list[str]] = {
    "cat-manifest": [POD], "enter": [POD], "export": [POD, "out.aci"], "rm": [POD],
    "status": [POD], "stop": [POD], "run-prepared": [POD],
    "fetch": ["./missing.aci"], "run": ["./missing.aci"], "prepare": ["./missing.aci"],
    "trust": ["./missing.asc"], "list": [], "gc": [], "config": [], "version": [],
    "image list": [], "image gc": [], "image rm": [IMAGE_ID], "image cat-manifest": [IMAGE_ID],
    "image verify": [IMAGE_ID], "image export": [IMAGE_ID, "out.aci"],
    "image extract": [IMAGE_ID, "outdir"], "image render": [IMAGE_ID, "outdir"],
    "image fetch": ["./missing.aci"],
}
#: flags left alone: where rkt keeps its data, and the ones that change the contract
#: under test (--debug prints tracebacks on purpose, --help prints and exits 0)
FIXED = {"--dir", "--local-config", "--system-config", "--user-config", "--debug",
         "--help", "-h"}
#: values people get wrong, besides generated text
AWKWARD = ["", " ", "-1", "0", "99999999999999999999", "4294967295", "a/b", "../..", "\n",
           "x" * 300, "true", "false", "maybe", "CAP_BOGUS", "0s", "-5m", "1h", "none",
           "all", "name=value", "volume=a,target=b", "a,kind=host,source=b", "a=b=c",
           "é", "json", "10G", "NaN"]
VALUES = st.one_of(
    st.sampled_from(AWKWARD),
    st.text(alphabet=st.characters(blacklist_characters="/\x00",
                                   blacklist_categories=("Cs",)), max_size=40),
)
TRIED: dict[str, int] = {}


def _parsers_for(command: str) -> list[argparse.ArgumentParser]:
    """The command's parser, and its subcommand's (``image rm``) when it has one."""
    group, _, sub = command.partition(" ")
    module = importlib.import_module(COMMANDS[group][0])
    parser = RktArgumentParser(prog=f"rkt {group}")
    add_global_flags(parser, top_level=False)
    module.add_arguments(group, parser)
    if not sub:
        return [parser]
    subparsers = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction))
    return [parser, subparsers.choices[sub]]


def _flags(command: str) -> list[tuple[str, bool]]:
    """(flag, takes a value) for every option of ``command``."""
    found = []
    for parser in _parsers_for(command):
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in FIXED:
                    found.append((flag, action.nargs != 0))
    return sorted(set(found))


def _arguments(command: str) -> st.SearchStrategy[list[str]]:
    flags = _flags(command)
    one = st.sampled_from(flags).flatmap(
        lambda flag: VALUES.map(lambda value: f"{flag[0]}={value}") if flag[1]
        else st.just(flag[0]))
    return st.lists(one, min_size=1, max_size=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RktEnv]:
    root = tmp_path_factory.mktemp("fuzz")
    env = RktEnv(root / "rkt")
    for directory in (env.data_dir, env.local_config, env.system_config):
        directory.mkdir(parents=True)
    cwd = Path.cwd()
    os.chdir(root)  # relative paths in generated values land here
    try:
        yield env
    finally:
        os.chdir(cwd)


def _run(env: RktEnv, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*env.global_flags(), *argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", sorted(POSITIONALS))
def test_generated_flag_values_fail_cleanly(world: RktEnv, command: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKT_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("RKT_HTTP_ATTEMPTS", "1")

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(flags=_arguments(command))
    def check(flags: list[str]) -> None:
        TRIED[command] = TRIED.get(command, 0) + 1
        argv = [*command.split(" "), *flags, *POSITIONALS[command]]
        code, _, err = _run(world, argv)
        assert "Traceback" not in err, (argv, err)
        assert "internal error" not in err, (argv, err)
        if code != 0:
            lines = err.strip().splitlines()
            assert lines and lines[-1].startswith("rkt: "), (argv, err)
            # short: what rkt adds to the input it quotes back
            assert len(lines[-1]) < 300 + len(" ".join(argv)), (argv, lines[-1][:200])

    check()
    assert TRIED[command] >= min(EXAMPLES, 10)
