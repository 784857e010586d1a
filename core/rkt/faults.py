"""Named points where the fault-injection test kills rkt with SIGKILL.

``RKT_TEST_KILL_AT=NAME`` makes the process kill itself the moment it reaches the
point ``NAME``: the test then checks that ``rkt gc`` and ``rkt image gc`` leave
exactly what the surviving state needs (``tests/pods/test_faults.py``). The
points sit between the steps whose order keeps the store and the pods
consistent; reaching one costs an environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "RKT_TEST_KILL_AT"

#: every point, in the order a fetch, a prepare, a run and the two gcs reach them
POINTS = (
    "fetch:fetched", "import:written", "import:blob-committed",
    "prepare:embryo", "prepare:stage1", "render:extracted", "prepare:apps",
    "run:started", "gc:marked", "gc:deleting", "image-gc:trees", "image-rm:forgotten",
)


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
