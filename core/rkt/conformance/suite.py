"""Running the checks against one stage1 and the table of their results.

What a stage1 claims comes from its backend class, read without starting
anything: ``unsupported`` (``rkt.stage1.STAGE1_FEATURES`` names and reasons) and
``network_modes``. A check of something the stage1 declares it does not do is
not run and shows as NOT SUPPORTED; every other check must pass.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple

from rkt.conformance.checks import CHECKS, PROBES, Check, CheckFailed, CheckSkipped
from rkt.conformance.world import SetupError, World, last_line

PASS, FAIL, NOT_SUPPORTED, SKIPPED = "PASS", "FAIL", "NOT SUPPORTED", "SKIPPED"


class Result(NamedTuple):
    check: str
    outcome: str
    reason: str = ""


class Claims(NamedTuple):
    """What the stage1's backend says about itself."""

    backend: str
    unsupported: dict[str, str]
    network_modes: frozenset[str]

    def refusal(self, check: Check) -> str | None:
        """Why ``check`` is not for this stage1, or None if the stage1 claims it."""
        if check.feature is None:
            return None
        if check.feature.startswith("net-"):
            mode = check.feature.removeprefix("net-")
            if mode in self.network_modes:
                return None
            return f"network_modes has no \"{mode}\" ({', '.join(sorted(self.network_modes))})"
        return self.unsupported.get(check.feature)

    def everyday_net(self) -> str:
        """``--net`` for the checks not about networks: no CNI network shared with others."""
        for mode in ("host", "none"):
            if mode in self.network_modes:
                return mode
        return "default"


def stage1_images_dir() -> Path:
    from rkt.stage1 import DEFAULT_STAGE1_DIR

    return Path(os.environ.get("RKT_STAGE1_IMAGES_DIR") or DEFAULT_STAGE1_DIR)


def backend_name_of(stage1_name: str) -> str:
    """The backend ``stage1_name``'s image names (its annotation), read from the
    image ``rkt install`` built; else the name's ``stage1-<backend>`` ending."""
    from rkt.stage1 import STAGE1_NAME_PREFIX, stage1_backend_name

    flavor = stage1_name.rsplit("/", 1)[-1].removeprefix("stage1-")
    image = stage1_images_dir() / f"stage1-{flavor}.aci"
    if stage1_name.startswith(STAGE1_NAME_PREFIX) and image.is_file():
        with tarfile.open(image) as tar:
            extracted = tar.extractfile("manifest")
            if extracted is not None:
                return stage1_backend_name(json.loads(extracted.read()))
    return flavor


def read_claims(stage1_name: str) -> Claims:
    """The claims of the installed backend behind ``stage1_name`` (imported, not run)."""
    from rkt.plugins import stage1_entry_point
    from rkt.stage1 import unsupported_features

    backend = backend_name_of(stage1_name)
    target = stage1_entry_point(backend)
    if target is None:
        raise SetupError(f'no stage1 backend "{backend}" is installed (for {stage1_name}; '
                         "is its package installed in this Python?)")
    module, _, attribute = target.partition(":")
    cls = importlib.import_module(module)
    for part in attribute.split("."):
        cls = getattr(cls, part)
    modes = frozenset(getattr(cls, "network_modes", frozenset({"host"})))
    return Claims(backend, unsupported_features(cls), modes)


def run_check(world: World, check: Check) -> Result:
    try:
        check.run(world)
    except CheckFailed as failed:
        return Result(check.name, FAIL, str(failed))
    except CheckSkipped as skipped:
        return Result(check.name, SKIPPED, str(skipped))
    except subprocess.TimeoutExpired as expired:
        return Result(check.name, FAIL, f"rkt did not return within {expired.timeout:.0f} s")
    except Exception as exc:  # a check's own bug must not hide the other results
        return Result(check.name, FAIL, f"{type(exc).__name__}: {exc}")
    return Result(check.name, PASS)


def run_checks(world: World, checks: list[Check]) -> list[Result]:
    return [run_check(world, check) for check in checks]


def probe_refusal(world: World, feature: str, reason: str, checks: list[Check]
                  ) -> list[Result]:
    """The rows of a feature the stage1 declares unsupported: NOT SUPPORTED if rkt
    refuses a pod that uses it (where the suite has such a pod), else FAIL."""
    probe = PROBES.get(feature)
    outcome, why = NOT_SUPPORTED, reason
    if probe is not None:
        try:
            result = probe(world)
        except subprocess.TimeoutExpired:
            result = None
        if result is None or result.returncode == 0 or not last_line(
                result.stderr).startswith("rkt: "):
            outcome = FAIL
            why = (f"declared unsupported ({reason}), but rkt accepted a pod using it; "
                   "a stage1 must refuse what it cannot do")
    return [Result(check.name, outcome, why) for check in checks]


def run_suite(world: World, claims: Claims, *, jobs: int = 2,
              only: Iterable[str] = (), on_result: Callable[[Result], None] | None = None,
              ) -> list[Result]:
    """Every check, in the table's order; ``only`` limits them to those names.

    The first pod runs alone (it imports the stage1 image into the world's store),
    then independent checks and the refusal probes of what the stage1 declares
    unsupported share ``jobs`` threads, then the checks marked ``last`` run one
    by one (``rkt gc`` collects every pod of the world).
    """
    wanted = set(only)
    chosen = [c for c in CHECKS if not wanted or c.name in wanted]
    results: dict[str, Result] = {}

    def record(found: list[Result]) -> None:
        for result in found:
            results[result.check] = result
            if on_result is not None:
                on_result(result)

    runnable: list[Check] = []
    declared: dict[str, tuple[str, list[Check]]] = {}
    for check in chosen:
        reason = claims.refusal(check)
        if reason is None:
            runnable.append(check)
        else:
            declared.setdefault(check.feature or "", (reason, []))[1].append(check)
    world.fetch_images()
    first, rest = runnable[:1], runnable[1:]
    for check in first:
        record([run_check(world, check)])
    tasks: list[Callable[[], list[Result]]] = [
        partial(run_checks, world, [check]) for check in rest if not check.last]
    tasks += [partial(probe_refusal, world, feature, reason, checks)
              for feature, (reason, checks) in declared.items()]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for found in pool.map(lambda task: task(), tasks):
            record(found)
    for check in (c for c in rest if c.last):
        record([run_check(world, check)])
    return [results[c.name] for c in chosen]


def table(results: list[Result]) -> str:
    width = max([len("CHECK"), *(len(r.check) for r in results)])
    lines = [f"{'CHECK':<{width}}  RESULT"]
    for result in results:
        outcome = f"{result.outcome}: {result.reason}" if result.reason else result.outcome
        lines.append(f"{result.check:<{width}}  {outcome}")
    return "\n".join(lines)


def summary(stage1_name: str, results: list[Result]) -> str:
    counts = {outcome: sum(r.outcome == outcome for r in results)
              for outcome in (PASS, FAIL, NOT_SUPPORTED, SKIPPED)}
    text = (f"{stage1_name}: {counts[PASS]} passed, {counts[FAIL]} failed, "
            f"{counts[NOT_SUPPORTED]} not supported")
    return text + (f", {counts[SKIPPED]} skipped (this host)" if counts[SKIPPED] else "")
