"""The OMA DM server: session engine (engine), database (db), plugins, admin API (webapp).

Before issue 12 this name was the module host/dm/server.py: its names (DMServer, ...)
are still found here, loaded on first use (no import at package load: that would run
the engine whenever any host.dm.server module is imported).
"""
import importlib
from typing import Any

_ENGINE_NAMES = frozenset({
    "DMServer", "Reply", "ServerSession", "MAX_AUTH_FAILURES", "MAX_MESSAGES_PER_SESSION",
    "SESSION_IDLE_TIMEOUT", "CONTENT_TYPE", "WIRE_WBXML_TYPE", "CONTENT_TYPES", "HMAC_HEADER", "NOTIFY_TYPE"})


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:  # only these: a submodule name must not come here (import recursion)
        return getattr(importlib.import_module("host.dm.server.engine"), name)
    raise AttributeError(f"module 'host.dm.server' has no attribute {name!r}")
