"""Secrets a user types: from an environment variable or a no-echo prompt (never echoed, never logged)."""
from __future__ import annotations

import getpass
import os
import sys

from host.errors import UsageError


def read_secret(env: str | None, what: str, confirm: bool = False, *, strip: bool = True) -> str:
    """A secret from the environment variable ``env`` or a no-echo prompt "<what>: "
    (twice with ``confirm``); ``strip`` trims white space around the variable's value."""
    if env and os.environ.get(env):
        return os.environ[env].strip() if strip else os.environ[env]
    if not sys.stdin.isatty():
        hint = f"set ${env} or run in a terminal" if env else "run in a terminal"
        raise UsageError(f"no {what}: {hint} to be prompted")
    value = getpass.getpass(f"{what}: ")
    if confirm and getpass.getpass(f"{what} again: ") != value:
        raise UsageError(f"the two {what}s differ: try again")
    return value
