"""`simvault readers | card ... | apdu ...`: the card commands, and the card
connection options every card-touching command shares.

    add_card_options(parser)      --reader, --emulator, --trace, --no-t0-get-response, --pin-env
    open_card(args, pin=True)     -> a selected BackupCard (PIN verified unless pin=False)

Secrets (PIN, PUK, admin key) come from environment variables, files or
getpass prompts; they are never printed.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from apdu_specs.sw import describe
from host.cli import exitcodes
from host.cli.ui import add_json_option, emit
from host.errors import SimvaultError, TransportError, UsageError
from host.cli.card_link import (  # noqa: F401 - the shared card options, importable from here as before
    ADMIN_KEY_ENV,
    PIN_ENV,
    closes_links,
    add_card_options,
    close_link,
    open_card,
    open_link,
)
from host.cli.admin_keys import (  # noqa: F401 - importable from here as before
    ADMIN_KEY_FILE_HELP,
    add_admin_options,
    open_admin as _open_admin,
    read_admin_keys,
    emulator_admin_key as _emulator_admin_key,
    write_admin_keys,
)
from host.cli.prompt import read_secret  # re-exported: part of this module's API

log = logging.getLogger(__name__)

NEW_PIN_ENV = "SIMVAULT_NEW_PIN"
PUK_ENV = "SIMVAULT_PUK"


# ---- handlers -------------------------------------------------------------------------

def _cmd_readers(args: argparse.Namespace) -> int:
    from host.link.pcsc import list_readers, reader_state
    names = list_readers()
    readers = []
    for index, name in enumerate(names):
        present, atr = reader_state(name)
        readers.append({"index": index, "name": name, "card_present": bool(present),
                        "atr": atr.hex().upper() if present and atr else None})
    if getattr(args, "json", False):
        print(json.dumps({"readers": readers}, indent=1))
        return exitcodes.OK if names else exitcodes.UNAVAILABLE
    if not names:
        print("simvault: error: no PC/SC reader: connect one (a virtual one: install vsmartcard-vpcd and "
              "restart pcscd)", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    for r in readers:
        print(f"{r['index']}: {r['name']}: " + (f"card present, ATR {r['atr']}" if r["card_present"] else "no card"))
    return 0


def _limits(args: argparse.Namespace):
    from card.runtime import CardLimits
    return CardLimits.short(t0=args.t0) if args.short else CardLimits(t0=args.t0)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    from card.emulator import VirtualCard
    from card.vpcd import DEFAULT_HOST, DEFAULT_PORT, VpcdBridge
    host, _, port = (args.vpcd or f"{DEFAULT_HOST}:{DEFAULT_PORT}").rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--vpcd {args.vpcd!r}: expected HOST:PORT")
    if args.impl == "javacard":
        return _serve_javacard(args, host or DEFAULT_HOST, int(port))
    if args.image is None:
        raise UsageError("--image IMAGE is needed: a card image made by 'simvault card init' "
                         "(or serve the Java card: --impl javacard)")
    with VirtualCard.open(args.image, _limits(args), exclusive=True) as card:
        bridge = VpcdBridge(card, host or DEFAULT_HOST, int(port), notify=_stderr_line)
        print(f"serving {args.image} on vpcd {bridge.address} (ctrl-C to stop)", file=sys.stderr, flush=True)
        bridge.serve_forever()      # reconnects when pcscd restarts; SIGINT/SIGTERM stop it
    print("stopped", file=sys.stderr)
    return 0


def _serve_javacard(args: argparse.Namespace, host: str, port: int) -> int:
    """The Java Card applet in jCardSim on vpcd, personalised as 'card init' would; it
    lives in RAM only: its backups are gone when it stops."""
    import signal
    import threading

    from card.emulator import MIN_CAPACITY
    from card.jcardsim import JavaCard, Personalisation
    from host.backup.keys import load_public_point
    if args.image is not None or args.t0 or args.short:
        raise UsageError("--image, --t0 and --short are for the Python emulator: the Java card keeps no image "
                         "and always offers T=1 with extended length")
    if args.capacity < MIN_CAPACITY:
        raise UsageError(f"--capacity {args.capacity}: too small: at least {MIN_CAPACITY} bytes (default 1048576)")
    points = [load_public_point(Path(p)) for p in args.trust]
    pin = args.pin or read_secret(args.pin_env, "new PIN", confirm=True)
    puk = args.puk or read_secret(args.puk_env, "new PUK (8 digits)", confirm=True)
    keys = read_admin_keys(args.admin_key_file, create=True)
    card = JavaCard(Personalisation(pin=pin, puk=puk, admin_key=keys.to_bytes(), trust_anchors=tuple(points),
                                    capacity=args.capacity, admin_key_version=keys.version or 1,
                                    chunk_entries=args.chunk_entries), host, port,
                    notify=_stderr_line)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        card.start()
        print(f"serving the Java Card applet in jCardSim on vpcd {card.address} (ctrl-C to stop); its memory is "
              "RAM only: every backup on it is lost when it stops", file=sys.stderr, flush=True)
        card.wait_connected()
        while not stop.wait(0.2):
            if not card.running:
                raise TransportError("the Java card stopped: " + (card.error_text() or "no message"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        card.stop()
    print("stopped", file=sys.stderr)
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from card.emulator import MIN_CAPACITY, personalise
    from host.backup.keys import load_public_point
    if args.capacity < MIN_CAPACITY:
        raise UsageError(f"--capacity {args.capacity}: too small: at least {MIN_CAPACITY} bytes (default 1048576)")
    if args.image.exists() and not args.force:
        raise UsageError(f"{args.image} already exists: it may hold backups; pass --force to overwrite it")
    points = [load_public_point(Path(p)) for p in args.trust]
    pin = args.pin or read_secret(args.pin_env, "new PIN", confirm=True)
    puk = args.puk or read_secret(args.puk_env, "new PUK (8 digits)", confirm=True)
    keys = read_admin_keys(args.admin_key_file, create=True, single_key=True)
    try:
        personalise(args.image, args.capacity, pin, puk, _emulator_admin_key(keys), points, force=args.force,
                    admin_key_version=keys.version or 1, chunk_entries=args.chunk_entries)
    except UsageError as exc:
        if keys.single_key or "admin key" not in str(exc):
            raise
        raise UsageError(f"{exc}: this card image keeps one admin key, used as K-ENC, K-MAC and K-DEK: give a key "
                         "file whose enc, mac and dek are equal (or one 16-byte key); the Java card "
                         "('card serve --impl javacard') takes three") from None
    size = args.image.stat().st_size
    entries = f", {args.chunk_entries} chunk entries" if args.chunk_entries is not None else ""
    emit(args, {"image": str(args.image), "capacity": args.capacity, "image_bytes": size, "anchors": len(points),
                "chunk_entries": args.chunk_entries},
         [f"card image {args.image} personalised: NVM {args.capacity} bytes (image file "
          f"{size} bytes with header and journal), {len(points)} trust anchor(s){entries}"])
    return 0


ENTRIES_HELP = ("chunk table size, 1-8192: how many distinct chunks the card holds (default one per 2 KiB "
                "of capacity, at least 64; install parameter 07)")


def _tries_word(n: int) -> str:
    return "try" if n == 1 else "tries"


@closes_links
def _cmd_status(args: argparse.Namespace) -> int:
    from host.client import UNBLOCK_HINT, tries_left
    card = open_card(args, pin=False)
    status = card.status()
    fci = card.fci
    assert fci is not None
    doc = {**status.__dict__, "life_cycle_name": status.life_cycle_name, "free_entries": status.free_entries,
           "max_command_data": fci.max_command_data, "max_response_data": fci.max_response_data,
           "max_chunk_size": fci.max_chunk_size, "extended_length": fci.extended_length,
           "reader": card.link.transport.name}
    if args.json:
        print(json.dumps(doc, sort_keys=True, indent=1))
        return 0
    print(f"card: {doc['reader']}, applet version {status.applet_version}, {status.life_cycle_name}")
    print(f"PIN: {status.pin_tries}/{status.pin_max_tries} {_tries_word(status.pin_tries)} left, "
          f"PUK: {tries_left(status.puk_tries)}" + ("; the PIN is blocked: " + UNBLOCK_HINT if not status.pin_tries
                                                     else ""))
    entries = (f"{status.free_entries} of {status.chunk_entries} chunk entries free" if status.chunk_entries
               is not None else f"{status.chunks} chunks stored (this card does not report its chunk entries)")
    print(f"memory: {status.free} of {status.capacity} bytes free; {entries}")
    print(f"backups: {status.backups} of {status.max_backups}; highest sequence {status.highest_sequence}"
          + ("; an interrupted upload is pending (run the same backup again to resume it, or "
             "'simvault card abort-upload' to free its memory)" if status.session_active else ""))
    print(f"trust anchors: {status.anchors}")
    print(f"limits: command {fci.max_command_data}, response {fci.max_response_data}, chunk {fci.max_chunk_size}, "
          f"extended length {'yes' if fci.extended_length else 'no'}")
    return 0


@closes_links
def _cmd_pin(args: argparse.Namespace) -> int:
    card = open_card(args, pin=False)
    if args.pin_action == "verify":
        card.verify_pin(read_secret(args.pin_env, "PIN"))
        done = "PIN verified"
    elif args.pin_action == "change":
        old = read_secret(args.pin_env, "current PIN")
        card.change_pin(old, read_secret(args.new_pin_env, "new PIN", confirm=True))
        done = "PIN changed"
    else:
        puk = read_secret(args.puk_env, "PUK")
        card.unblock_pin(puk, read_secret(args.new_pin_env, "new PIN", confirm=True))
        done = "PIN unblocked and set"
    emit(args, {"pin": args.pin_action, "done": True}, [done])
    return 0


@closes_links
def _cmd_abort_upload(args: argparse.Namespace) -> int:
    card = open_card(args)
    if not card.status().session_active:
        emit(args, {"aborted": False}, ["no interrupted upload on the card: nothing to abort"])
        return 0
    card.abort()
    free = card.status().free
    emit(args, {"aborted": True, "free": free},
         [f"interrupted upload aborted: its memory is free again ({free} bytes free)"])
    return 0


@closes_links
def _cmd_trust(args: argparse.Namespace) -> int:
    from host.backup.keys import load_public_point
    card = open_card(args, pin=False)
    if args.trust_action == "list":
        kids = [kid.hex() for kid in card.list_anchors()]
        emit(args, {"anchors": kids}, kids or ["no trust anchors: add one with 'simvault card trust add KEYFILE'"])
        return 0
    if args.trust_action == "add":
        point = load_public_point(Path(args.keyfile))       # bad input is refused before the admin channel
        _open_admin(card, args)
        kid = card.put_trust_anchor(point).hex()
        emit(args, {"added": kid}, [f"trust anchor {kid} added"])
    else:
        try:
            kid = bytes.fromhex(args.key_id)
        except ValueError:
            kid = b""
        if len(kid) != 8:
            raise UsageError("a key id is 16 hex digits (see 'simvault card trust list')")
        _open_admin(card, args)
        card.delete_trust_anchor(kid)
        emit(args, {"removed": kid.hex()}, [f"trust anchor {kid.hex()} removed"])
    return 0


@closes_links
def _cmd_erase(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("this deletes every backup on the card: add --yes to confirm")
    card = open_card(args, pin=False)
    _open_admin(card, args)
    card.erase_backups()
    emit(args, {"erased": True}, ["every backup on the card erased (PIN, keys, trust anchors and the sequence kept)"])
    return 0


@closes_links
def _cmd_apdu(args: argparse.Namespace) -> int:
    from host.link.apdu import parse_apdu
    link = open_link(args)
    worst = 0
    exchanges = []
    for text in args.hex:
        try:
            raw = bytes.fromhex(text.replace(":", "").replace(" ", ""))
        except ValueError:
            raise UsageError(f"{text!r} is not hex") from None
        try:
            response = link.transmit(parse_apdu(raw))
            data, sw = response.data, response.sw
        except ValueError:        # not a well-formed APDU: send it as is
            out = link.transmit_raw(raw)
            if len(out) < 2:
                raise TransportError("the card answered without a status word") from None
            data, sw = out[:-2], int.from_bytes(out[-2:], "big")
        info = describe(sw)
        exchanges.append({"apdu": raw.hex().upper(), "response": data.hex().upper(), "sw": f"{sw:04X}",
                          "name": info.name, "meaning": info.meaning})
        if not args.json:
            print(f"<< {data.hex().upper()} {sw:04X} {info.name}: {info.meaning}".replace("<<  ", "<< "))
        if sw != 0x9000 and sw >> 8 not in (0x61,):
            worst = exitcodes.FAILED
    if args.json:
        print(json.dumps(exchanges, indent=1))
    return worst



# ---- registration ---------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("readers", help="list PC/SC readers, card presence and ATR")
    p.add_argument("--json", action="store_true", help="print JSON: {readers: [{index, name, card_present, atr}]}")
    p.set_defaults(func=_cmd_readers)

    card = subparsers.add_parser("card", help="the simvault card: serve, init, status, PIN, abort-upload, trust, erase")
    sub = card.add_subparsers(dest="card_command", metavar="ACTION", required=True)

    p = sub.add_parser("serve", help="serve a card image on pcscd's vpcd reader",
                       description="Connect the virtual card in IMAGE to pcscd's vpcd driver (package "
                                   "vsmartcard-vpcd): the card then sits in reader 'Virtual PCD 00 00' for every "
                                   "PC/SC program. Reconnects when pcscd restarts; SIGINT/SIGTERM stop it. The "
                                   "image is locked: a second emulator on it is refused.")
    p.add_argument("--image", type=Path, default=None, help="card image made by 'simvault card init' (--impl python)")
    p.add_argument("--vpcd", metavar="HOST:PORT", default=None, help="default 127.0.0.1:35963 (reader 'Virtual PCD 00 00')")
    p.add_argument("--t0", action="store_true", help="behave as a T=0 card (61xx / 6Cxx)")
    p.add_argument("--short", action="store_true", help="short APDUs only (chunks through chaining)")
    p.add_argument("--impl", choices=("python", "javacard"), default="python",
                   help="python: the emulator on IMAGE (default); javacard: the Java Card applet (javacard/) in "
                        "jCardSim, personalised from the options below like 'card init', in RAM only (its backups "
                        "are lost when it stops); its jar is built on first use (cd javacard && mvn -q package)")
    g = p.add_argument_group("personalisation of the Java card (--impl javacard)")
    g.add_argument("--capacity", type=int, default=1 << 20, help="store size in bytes (default 1 MiB)")
    g.add_argument("--chunk-entries", type=int, default=None, metavar="N", help=ENTRIES_HELP)
    g.add_argument("--pin", default=None, help=f"PIN (prefer ${PIN_ENV} or the prompt)")
    g.add_argument("--puk", default=None, help=f"PUK (prefer ${PUK_ENV} or the prompt)")
    g.add_argument("--pin-env", default=PIN_ENV, metavar="VAR", help=f"variable holding the PIN (default {PIN_ENV})")
    g.add_argument("--puk-env", default=PUK_ENV, metavar="VAR", help=f"variable holding the PUK (default {PUK_ENV})")
    g.add_argument("--admin-key-file", type=Path, default=None, metavar="FILE",
                   help="the admin key set (SCP03 K-ENC, K-MAC, K-DEK; see 'card trust add --help'); generated "
                        "there (three random keys) when the file does not exist")
    g.add_argument("--trust", nargs="*", default=[], metavar="KEYFILE",
                   help="PEM public keys whose signatures the card accepts")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("init", help="create and personalise a new card image",
                       description="Create the image of a new virtual card: format its memory, set PIN "
                                   "(4-8 digits), PUK (8 digits), the admin key and the trust anchors that "
                                   "may sign backups.")
    p.add_argument("--image", type=Path, required=True, help="the card image file to create")
    p.add_argument("--capacity", type=int, default=1 << 20,
                   help="the card's NVM in bytes, at least 16384 (default 1 MiB); the image file is larger "
                        "(header and transaction journal)")
    p.add_argument("--chunk-entries", type=int, default=None, metavar="N", help=ENTRIES_HELP)
    p.add_argument("--pin", default=None, help=f"new PIN (prefer ${PIN_ENV} or the prompt)")
    p.add_argument("--puk", default=None, help=f"new PUK (prefer ${PUK_ENV} or the prompt)")
    p.add_argument("--pin-env", default=PIN_ENV, metavar="VAR", help=f"variable holding the PIN (default {PIN_ENV})")
    p.add_argument("--puk-env", default=PUK_ENV, metavar="VAR", help=f"variable holding the PUK (default {PUK_ENV})")
    p.add_argument("--admin-key-file", type=Path, default=None, metavar="FILE",
                   help="the admin key set (SCP03; see 'card trust add --help'); generated there when the file "
                        "does not exist (one random key as K-ENC, K-MAC and K-DEK: the emulator's store keeps one)")
    p.add_argument("--trust", nargs="*", default=[], metavar="KEYFILE",
                   help="PEM public keys whose signatures the card accepts (more: 'card trust add')")
    p.add_argument("--force", action="store_true", help="overwrite an existing image")
    add_json_option(p)
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("status", help="applet status: PIN tries, memory, backups")
    add_card_options(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("pin", help="verify, change or unblock the PIN")
    p.add_argument("pin_action", choices=("verify", "change", "unblock"),
                   help="verify the PIN, change it, or unblock it with the PUK and set a new one")
    add_card_options(p)
    p.add_argument("--new-pin-env", default=NEW_PIN_ENV, metavar="VAR",
                   help=f"variable holding the new PIN (default {NEW_PIN_ENV}); else a prompt")
    p.add_argument("--puk-env", default=PUK_ENV, metavar="VAR",
                   help=f"variable holding the PUK (default {PUK_ENV}); else a prompt")
    add_json_option(p)
    p.set_defaults(func=_cmd_pin)

    p = sub.add_parser("abort-upload", help="abort an interrupted backup upload and free its memory",
                       description="ABORT BACKUP: drop the card's pending upload session (chunks sent by a "
                                   "backup that failed or was interrupted), so its memory is free again. "
                                   "Committed backups are not touched. Needs the PIN.")
    add_card_options(p)
    add_json_option(p)
    p.set_defaults(func=_cmd_abort_upload)

    p = sub.add_parser("trust", help="trust anchors: list, add, remove (admin channel)")
    tsub = p.add_subparsers(dest="trust_action", metavar="ACTION", required=True)
    for name, helptext in (("list", "list the key ids"), ("add", "add a PEM public key"),
                           ("remove", "remove a key id")):
        t = tsub.add_parser(name, help=helptext)
        if name == "add":
            t.add_argument("keyfile", help="PEM public key (EC P-256) whose signatures the card accepts")
        elif name == "remove":
            t.add_argument("key_id", help="16 hex digits (see 'simvault card trust list')")
        add_card_options(t)
        if name != "list":
            add_admin_options(t)
        add_json_option(t)
        t.set_defaults(func=_cmd_trust)

    p = sub.add_parser("erase", help="erase every backup (admin channel)")
    add_card_options(p)
    add_admin_options(p)
    p.add_argument("--yes", action="store_true", help="confirm")
    add_json_option(p)
    p.set_defaults(func=_cmd_erase)

    p = subparsers.add_parser(
        "apdu", help="send raw APDUs (hex) and decode the status words",
        description="Send each C-APDU as given and print the answer and its decoded status word. Give Le for "
                    "commands that return data: GET STATUS is 8010000000 (case 2), not 80100000 (case 1). "
                    "Over T=1 a case-1 command that has data to return answers 61xx, which is fetched with GET "
                    "RESPONSE (disable with --no-t0-get-response). "
                    "Exit code 1 when any answer is an error.")
    p.add_argument("hex", nargs="+", metavar="HEX",
                   help="one C-APDU in hex (spaces/colons allowed), e.g. 00A404000AF053494D5641554C540100 "
                        "8010000000")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list of {apdu, response, sw, name, meaning}")
    add_card_options(p)
    p.set_defaults(func=_cmd_apdu)


def main(argv: list[str] | None = None) -> int:
    """Only the card commands (``python -m host.cli.card card serve ...``), same
    error handling as host.cli."""
    parser = argparse.ArgumentParser(prog="simvault")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    from host.cli import run  # host.cli imports this module: import at call time
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SimvaultError", "add_card_options", "close_link", "closes_links", "open_card", "open_link", "read_secret", "register"]
