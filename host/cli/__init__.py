"""The `simvault` command line: one entry point, sub-commands registered by their modules.

Each module that adds commands exposes ``register(subparsers)`` and sets
``func`` on its parsers (``parser.set_defaults(func=handler)``); a handler takes
the parsed ``argparse.Namespace`` and returns an exit code (host.cli.exitcodes). A
SimvaultError is printed as one line on stderr that says what to do (never a
traceback) and sets the exit code; host.cli.ui prints results (human or --json).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from host.cli import exitcodes, ui

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
    ui.add_epilogs(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(getattr(args, "verbose", 0), 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not getattr(args, "func", None):
        where = " ".join(["simvault", *([args.command] if getattr(args, "command", None) else [])])
        print(f"simvault: error: a command is needed: '{where} --help' lists them", file=sys.stderr)
        return exitcodes.USAGE
    try:
        return int(args.func(args) or 0)
    except (KeyboardInterrupt, Exception) as err:
        known = err if isinstance(err, KeyboardInterrupt) else ui.as_simvault_error(err)
        if known is None:
            raise                   # a bug: its traceback is what a report needs
        return ui.fail(known)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
