"""The `simvault` command line: one entry point, sub-commands registered by their modules.

Each module that adds commands exposes ``register(subparsers)`` and sets
``func`` on its parsers (``parser.set_defaults(func=handler)``); a handler takes
the parsed ``argparse.Namespace`` and returns an exit code. A SimvaultError is
printed as one line on stderr (never a traceback) and sets the exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from host.errors import SimvaultError

# Modules that register sub-commands, in help order. A module missing here is a bug, not optional.
COMMAND_MODULES = (
    "host.cli.card",
    "host.cli.backup",
    "host.cli.dm",
    "host.cli.ds",
    "host.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simvault", description="Signed, encrypted DM-tree backups on a SIM/UICC.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, set up logging, run the chosen handler; a SimvaultError is one line on stderr."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(getattr(args, "verbose", 0), 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SimvaultError as err:
        print(f"simvault: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("simvault: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
