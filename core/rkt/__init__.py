"""rkt: an App Container (appc) runtime.

The core is deliberately small: it defines the hook specs (``rkt.hookspecs``), the
appc schema (``rkt.schema``), the image store (``rkt.store``), pods and the command
line. Everything that talks to the outside world lives in plugins.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The App Container spec version this runtime implements.
APPC_VERSION = "0.8.11"
