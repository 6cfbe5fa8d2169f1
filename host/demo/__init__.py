"""`simvault demo`: the whole system on its embedded defaults, in one command.

    simvault demo [--workdir DIR] [--keep] [--slot 0|1] [--no-pcsc] [--card python|javacard] [--json]

Builds, in a fresh work directory: the device's keys, a personalised card
image (the emulator behind pcscd through vpcd, or in-process with --no-pcsc),
the DM server and simvault's DS server on SQLite, and a device agent holding
the sample handset tree. Then walks through the origin document's use cases
(server-initiated backups to the server and the card; device-initiated
backups by user request and by the firmware-update policy; backup and restore
through Data Sync), restores after corruption from each place, and shows a
tampered backup refused by the server (re-check of its copy) and by the device
(a tampered copy in its Staging node). Every step verifies what it claims; the exit code is
0 only if all did. No PIN, key or password is ever printed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from host.errors import SimvaultError, UsageError

STEPS: tuple[tuple[str, str], ...] = (
    ("use_case_1", "Use case 1: backup initiated by the DM server (remote, then local on the card)"),
    ("use_case_2", "Use case 2: backup initiated by the device (user request, firmware-update policy)"),
    ("restores", "Corruption and restore: from the DM server, then from the smart card"),
    ("use_case_3", "Use case 3: backup and restore through Data Sync"),
    ("tampered", "A tampered backup is refused"),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run the complete demo (DM server, DS server, device agent, card) and verify every step",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="build everything here (new or empty directory; kept)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory and print its path")
    p.add_argument("--slot", type=int, choices=(0, 1), default=0,
                   help="vpcd slot: 0 = 'Virtual PCD 00 00', 1 = 'Virtual PCD 00 01' (default 0)")
    p.add_argument("--no-pcsc", action="store_true",
                   help="use the card emulator in-process instead of through pcscd + vpcd")
    p.add_argument("--card", choices=("python", "javacard"), default=os.environ.get("SIMVAULT_DEMO_CARD") or "python",
                   help="the card behind pcscd: the Python emulator (default, or $SIMVAULT_DEMO_CARD) or the Java "
                        "Card applet in jCardSim (javacard/, built on first use)")
    p.add_argument("--json", action="store_true", help="narrative on stderr, a JSON report on stdout")
    p.set_defaults(func=run_demo)


class Narrative:
    """One line per step; on stderr when stdout carries the JSON report."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.events: list[dict[str, Any]] = []
        self.step = ""

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def title(self, number: int, text: str) -> None:
        self.step = text
        self.line(f"\n[{number}] {text}")

    def say(self, text: str) -> None:
        self.events.append({"step": self.step, "kind": "info", "text": text})
        self.line(f"    {text}")

    def ok(self, text: str) -> None:
        self.events.append({"step": self.step, "kind": "verified", "text": text})
        self.line(f"  ✔ {text}")

    def fail(self, text: str) -> None:
        self.events.append({"step": self.step, "kind": "failed", "text": text})
        self.line(f"  ✘ FAILED: {text}")


def run_demo(args: argparse.Namespace) -> int:
    from host.demo.rig import DemoFailure, DemoRig, check_workdir
    from host.demo.steps import Steps
    narrative = Narrative(sys.stderr if args.json else sys.stdout)
    if args.workdir is not None:
        check_workdir(args.workdir)
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir, temporary = args.workdir.resolve(), False
    else:
        workdir, temporary = Path(tempfile.mkdtemp(prefix="simvault-demo-")), True
    quiet = _quiet_logs(getattr(args, "verbose", 0))
    started = time.monotonic()
    mode = "in-process emulator" if args.no_pcsc else f"pcscd + vpcd slot {args.slot}"
    card_impl = getattr(args, "card", "python")
    if card_impl == "javacard" and args.no_pcsc:
        raise UsageError("--card javacard runs behind pcscd: drop --no-pcsc")
    steps: Steps | None = None
    passed = 0
    failure = ""
    try:
        narrative.title(0, f"Set-up in {workdir} (card: {mode}"
                           + (", the Java Card applet in jCardSim)" if card_impl == "javacard" else ")"))
        with DemoRig.build(workdir, narrative.say, use_pcsc=not args.no_pcsc, slot=args.slot,
                           card_impl=card_impl) as rig:
            steps = Steps(rig, narrative.say, narrative.ok)
            for number, (name, title) in enumerate(STEPS, start=1):
                narrative.title(number, title)
                try:
                    getattr(steps, name)()
                except DemoFailure as exc:
                    failure = str(exc)
                    narrative.fail(failure)
                    break
                except SimvaultError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                    narrative.fail(failure)
                    break
                passed += 1
            narrative.title(len(STEPS) + 1, "Stopping")
    except DemoFailure as exc:  # set-up did not verify
        failure = str(exc)
        narrative.fail(failure)
    except KeyboardInterrupt:  # the rig's exit stack has stopped every thread, server and bridge
        narrative.line("\ninterrupted: agent, servers and card bridge stopped")
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return 130
    except SimvaultError:  # set-up impossible (pcscd down, slot busy...): one line from the CLI
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        quiet()
    elapsed = time.monotonic() - started
    ok = passed == len(STEPS) and not failure
    rows = steps.rows if steps is not None else []
    narrative.title(len(STEPS) + 2, "Summary")
    for line in summary_table(rows):
        narrative.line(f"    {line}")
    verdict = (f"ALL {len(STEPS)} STEPS VERIFIED in {elapsed:.1f}s" if ok
               else f"DEMO FAILED after {passed}/{len(STEPS)} steps: {failure}")
    narrative.line(f"\n{verdict}")
    kept = not temporary or args.keep or not ok
    if kept:
        narrative.line(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        json.dump({"ok": ok, "seconds": round(elapsed, 2), "card": mode, "card_impl": card_impl, "steps_verified": passed,
                   "steps": len(STEPS), "failure": failure or None, "workdir": str(workdir) if kept else None,
                   "summary": [r.as_dict() for r in rows], "events": narrative.events},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0 if ok else 1


def summary_table(rows: list[Any]) -> list[str]:
    header = ("use case", "destination", "result", "backup id", "bytes", "time", "APDUs")
    body = [(r.use_case, r.destination, r.result, r.backup_id[:16], "" if r.size is None else str(r.size),
             f"{r.seconds:.2f}s", "" if r.apdus is None else str(r.apdus)) for r in rows]
    if all(not b[-1] for b in body):
        header, body = header[:-1], [b[:-1] for b in body]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt: Callable[[tuple[str, ...]], str] = lambda cells: "  ".join(
        c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(header), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body]


def _quiet_logs(verbose: int) -> Callable[[], None]:
    """Without -v the narrative says what happened: the refusals the demo provokes
    (the tampered restore) would otherwise also appear as library warnings."""
    if verbose:
        return lambda: None
    loggers = [logging.getLogger(n) for n in ("host", "card")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)

    def restore() -> None:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return restore
