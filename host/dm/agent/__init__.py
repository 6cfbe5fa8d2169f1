"""The OMA DM device agent: core (DMAgent), its tree, sessions, Exec handlers, listener.

Before issue 12 this name was the module host/dm/agent.py: its names (DMAgent,
AgentConfig, ...) are still found here, loaded on first use (no import at package
load: that would run the whole agent whenever one of its modules is imported).
"""
import importlib
from typing import Any

_CORE_NAMES = frozenset({"DMAgent", "AgentConfig", "PendingReport", "SessionRecord", "REQUEST_TYPE"})


def __getattr__(name: str) -> Any:
    if name in _CORE_NAMES:  # only these: a submodule name must not come here (import recursion)
        return getattr(importlib.import_module("host.dm.agent.core"), name)
    raise AttributeError(f"module 'host.dm.agent' has no attribute {name!r}")
