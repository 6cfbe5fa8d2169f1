"""How every `simvault` command prints: readable lines by default, JSON with --json,
errors as one line on stderr that says what to do next, exit codes from host.cli.exitcodes.

    add_json_option(parser, what)    --json
    emit(args, doc, lines)           doc as JSON with --json, else the lines
    fail(err) -> exit code           end progress bars, print "simvault: error: ..." on stderr
    add_epilogs(parser)              the exit-code table under every parser's --help; argparse's
                                     errors as one line that names that --help
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Iterable
from typing import Any

from host.cli import exitcodes, progress
from host.errors import SimvaultError, UsageError


def add_json_option(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts)")


def emit(args: argparse.Namespace, doc: Any, lines: Iterable[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, sort_keys=True, indent=1, default=str))
    else:
        for line in lines:
            print(line)


def as_simvault_error(err: BaseException) -> SimvaultError | None:
    """A file-system error on a path the user named, as bad input; None for anything else."""
    if isinstance(err, SimvaultError):
        return err
    if isinstance(err, OSError) and err.filename is not None:
        return UsageError(f"{err.filename}: {err.strerror or err}: check the path and its permissions")
    return None


def fail(err: BaseException) -> int:
    """Print err as the one line a user sees (after ending any progress bar); its exit code."""
    progress.end_all()
    if isinstance(err, KeyboardInterrupt):
        print("simvault: interrupted", file=sys.stderr)
    else:
        print(f"simvault: error: {err}", file=sys.stderr)
    sys.stderr.flush()
    return exitcodes.code_for(err)


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions as argparse does; keeps text with its own line breaks (the epilog) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's error, as one line (its usage synopsis is what --help shows first)."""
    parser.exit(exitcodes.USAGE, f"simvault: error: {message}: '{parser.prog} --help' shows the options\n")


def add_epilogs(parser: argparse.ArgumentParser) -> None:
    """The exit-code table under `--help` of the parser and of every sub-command, all levels down;
    a command line argparse refuses is one line too."""
    parser.formatter_class = _Formatter
    parser.error = types.MethodType(_usage_error, parser)  # type: ignore[method-assign]
    if not parser.epilog:
        parser.epilog = exitcodes.EPILOG
    elif exitcodes.EPILOG not in parser.epilog:
        parser.epilog = f"{parser.epilog}\n\n{exitcodes.EPILOG}"
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk of sub-parsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in set(action.choices.values()):
                add_epilogs(sub)
