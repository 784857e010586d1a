"""rkt's built-in plugins.

Each module is an ordinary plugin that uses only the public ``rkt.hookspecs.hookimpl``,
listed in ``rkt.plugins.BUILTIN_PLUGINS``: whatever a built-in does, a third-party
plugin can do the same way.
"""
