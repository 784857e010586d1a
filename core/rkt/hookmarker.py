"""``@hookimpl`` without importing pluggy.

Every built-in plugin module marks its hooks with :data:`hookimpl`, and a pod start
imports the built-ins; pluggy (and the ``importlib.metadata`` it imports) is only
needed when an external plugin is installed (see :mod:`rkt.facade`). This marker
writes what pluggy's ``HookimplMarker("rkt")`` writes, the ``rkt_impl`` attribute
with the same options (a test compares the two), so pluggy reads these markers
as its own.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see rkt.context
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, overload

    F = TypeVar("F", bound=Callable[..., Any])

#: the attribute pluggy looks for: its project name plus ``_impl``
MARKER_ATTRIBUTE = "rkt_impl"


class HookimplMarker:
    """Marks a function as a hook implementation, with pluggy's options."""

    if TYPE_CHECKING:
        @overload
        def __call__(self, function: F, *, hookwrapper: bool = False,
                     optionalhook: bool = False, tryfirst: bool = False, trylast: bool = False,
                     specname: str | None = None, wrapper: bool = False) -> F: ...

        @overload
        def __call__(self, function: None = None, *, hookwrapper: bool = False,
                     optionalhook: bool = False, tryfirst: bool = False, trylast: bool = False,
                     specname: str | None = None, wrapper: bool = False
                     ) -> Callable[[F], F]: ...

    def __call__(self, function: F | None = None, *, hookwrapper: bool = False,
                 optionalhook: bool = False, tryfirst: bool = False, trylast: bool = False,
                 specname: str | None = None, wrapper: bool = False) -> F | Callable[[F], F]:
        options = {
            "wrapper": wrapper, "hookwrapper": hookwrapper, "optionalhook": optionalhook,
            "tryfirst": tryfirst, "trylast": trylast, "specname": specname,
        }

        def mark(target: F) -> F:
            setattr(target, MARKER_ATTRIBUTE, dict(options))
            return target

        return mark if function is None else mark(function)


#: The marker plugins use on their hook implementations.
hookimpl = HookimplMarker()


def is_hookimpl(function: object) -> bool:
    return isinstance(getattr(function, MARKER_ATTRIBUTE, None), dict)
