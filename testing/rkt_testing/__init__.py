"""Test support for rkt and for third-party rkt plugins and stage1 backends.

The ``rkt-testing`` distribution, kept out of ``rkt`` so that running rkt never
needs pytest. Its pytest plugin (fixtures) is :mod:`rkt_testing.plugin`; this
package and its other modules import no pytest, so demos, benchmarks and other
scripts can build images, run GnuPG, serve HTTPS or start a Docker registry with them.
"""

from __future__ import annotations

from rkt_testing.aci import AciBuilder, build_aci, image_manifest
from rkt_testing.checks import assert_one_line_error
from rkt_testing.env import RktEnv, pythonpath_with, run_tool, wait_for_file

__all__ = [
    "AciBuilder",
    "RktEnv",
    "assert_one_line_error",
    "build_aci",
    "image_manifest",
    "pythonpath_with",
    "run_tool",
    "wait_for_file",
]
