"""The card connection options every card-touching command shares (host.cli.card re-exports them).

    add_card_options(parser)      --reader, --emulator, --trace, --no-t0-get-response, --pin-env
    open_card(args, pin=True)     -> a selected BackupCard (PIN verified unless pin=False)
"""
from __future__ import annotations

import argparse
import atexit
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from apdu_specs.sw import describe
from host.errors import UsageError
from host.cli.prompt import read_secret

log = logging.getLogger("host.cli.card")

PIN_ENV = "SIMVAULT_PIN"
ADMIN_KEY_ENV = "SIMVAULT_ADMIN_KEY_FILE"


# ---- shared connection options ------------------------------------------------------


def add_card_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that talks to a card."""
    group = parser.add_argument_group("card connection")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--reader", "-r", metavar="R", default=None,
                       help="PC/SC reader: index, exact name or pattern (default: the only reader with a card)")
    where.add_argument("--emulator", metavar="IMAGE", type=Path, default=None,
                       help="use the virtual card in IMAGE in-process (no pcscd)")
    group.add_argument("--trace", action="store_true", help="print every APDU to stderr (secrets redacted)")
    group.add_argument("--no-t0-get-response", action="store_true",
                       help="do not fetch 61xx answers with GET RESPONSE nor re-issue on 6Cxx")
    group.add_argument("--pin-env", metavar="VAR", default=PIN_ENV,
                       help=f"environment variable holding the PIN (default {PIN_ENV}); else a prompt")


def open_link(args: argparse.Namespace):  # -> host.link.Link
    """A connected Link to the card the options name (closed at exit)."""
    from host.link import ApduTracer, EmulatorTransport, Link, PcscTransport

    emulator = getattr(args, "emulator", None)
    if emulator is not None:
        from card.emulator import VirtualCard
        if not Path(emulator).exists():
            raise UsageError(f"no card image {emulator}: create one with 'simvault card init --image {emulator}'")
        key = Path(emulator).resolve()
        previous = _EMULATOR_LINKS.pop(key, None)
        if previous is not None:        # one handle per image in a process: the older one is closed
            close_link(previous)
        transport = EmulatorTransport(VirtualCard.open(emulator, exclusive=True), name=f"emulator {emulator}")
    else:
        transport = PcscTransport(_default_reader(getattr(args, "reader", None)))
    tracer = ApduTracer(sys.stderr, sw_namer=lambda sw: describe(sw).name) if getattr(args, "trace", False) else None
    auto = not getattr(args, "no_t0_get_response", False)
    link = Link(transport, tracer=tracer, t0_auto_get_response=auto, t0_auto_reissue=auto)
    if emulator is not None:
        _EMULATOR_LINKS[Path(emulator).resolve()] = link
    atexit.register(close_link, link)       # a fallback: commands close it when done
    if _OPENED is not None:
        _OPENED.append(link)
    link.connect()
    return link


_EMULATOR_LINKS: dict[Path, object] = {}


def _default_reader(spec: str | None) -> str | None:
    """Without --reader: the only reader, or else the only reader with a card in it."""
    if spec is not None:
        return spec
    from host.errors import ReaderNotFound
    from host.link.pcsc import card_present, list_readers
    names = list_readers()
    if len(names) <= 1:
        return None                 # PcscTransport names the one reader, or says there is none
    listing = "; ".join(f"{i}: {n}" for i, n in enumerate(names))
    with_card = [n for n in names if card_present(n)]
    if len(with_card) == 1:
        return with_card[0]
    if not with_card:
        raise ReaderNotFound(f"no card in any reader ({listing}): insert one, or start 'simvault card serve', "
                             "then retry")
    raise ReaderNotFound(f"{len(with_card)} readers hold a card, choose one with --reader: "
                         + "; ".join(f"{names.index(n)}: {n}" for n in with_card))


def close_link(link) -> None:  # link: host.link.Link
    """Disconnect (PC/SC: the card is reset, the PIN forgotten); close an
    emulator's image. Idempotent."""
    link.disconnect()
    card = getattr(link.transport, "card", None)
    if card is not None and hasattr(card, "close"):
        card.close()


def open_card(args: argparse.Namespace, pin: bool = True):  # -> host.client.BackupCard
    """The simvault applet, selected; the PIN verified when ``pin`` (from
    --pin-env's variable or a prompt)."""
    from host.client import BackupCard

    card = BackupCard(open_link(args))
    card.select()
    if pin:
        card.verify_pin(read_secret(getattr(args, "pin_env", PIN_ENV), "PIN"))
    return card


_OPENED: list | None = None      # links opened by the running handler


def closes_links(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Close every link the handler opened (PC/SC connections are exclusive)."""

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        global _OPENED
        previous, _OPENED = _OPENED, []
        opened = _OPENED
        try:
            return handler(args)
        finally:
            _OPENED = previous
            for link in opened:
                close_link(link)

    return wrapper
