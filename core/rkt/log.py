"""Module loggers that import :mod:`logging` only when a record could go somewhere.

``logging`` (with the traceback, string and threading modules it imports) costs a
pod start about 3 ms (issue 14). Until something imports it, nothing can have
configured a handler or a level, so a debug or info record would be dropped by
logging's defaults anyway (the root logger's level is WARNING): such calls
return at once. A warning or error, or any call once ``logging`` is imported (a
program that embeds rkt and configured it; ``rkt --debug``), goes to the real
``logging.getLogger(name)``. Used as the standard one::

    LOG = get_logger(__name__)
    LOG.debug("running %s", command)
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any


class LazyLogger:
    """The parts of :class:`logging.Logger` rkt's modules use."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _logger(self) -> logging.Logger:
        import logging

        return logging.getLogger(self.name)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self._logger().debug(msg, *args, stacklevel=2, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self._logger().info(msg, *args, stacklevel=2, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._logger().warning(msg, *args, stacklevel=2, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._logger().error(msg, *args, stacklevel=2, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._logger().exception(msg, *args, stacklevel=2, **kwargs)


def get_logger(name: str) -> LazyLogger:
    """The logger for ``name`` (a module's ``__name__``), imported on first real use."""
    return LazyLogger(name)
