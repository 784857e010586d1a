"""rkt: an App Container (appc) runtime.

The core is deliberately small: it defines the hook specs (``rkt.hookspecs``), the
appc schema (``rkt.schema``), the image store (``rkt.store``), pods and the command
line. Everything that talks to the outside world lives in plugins.
"""

from __future__ import annotations

#: This project's own version (the distribution's).
__version__ = "0.1.0"

#: The rkt release whose command line and output formats this implements. ``rkt
#: version`` prints it as ``rkt Version:``, the line tools written for rkt read
#: (Nomad's driver requires at least 1.27.0); docs/version.md.
RKT_COMPAT_VERSION = "1.30.0"

#: The App Container spec version this runtime implements.
APPC_VERSION = "0.8.11"
