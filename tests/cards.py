"""Personalised test cards and signed test backups (importable from any test:
``from cards import build_test_card, make_backup, TEST_PIN``).

The test keys are fixed (derived from constants) so failures reproduce; they
are for tests only.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from apdu_specs.manifest import (
    MANIFEST,
    ChunkRef,
    OnCardManifest,
    key_id,
    public_point,
    sign_raw,
)
from card import emulator
from card.emulator import VirtualCard
from card.runtime import CardLimits

TEST_PIN = "1234"
TEST_PUK = "12345678"
TEST_ADMIN_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
TEST_CAPACITY = 1 << 20

TEST_SIGNER = ec.derive_private_key(0x5157_4155_4C54_0001, ec.SECP256R1())   # the trust anchor
OTHER_SIGNER = ec.derive_private_key(0x5157_4155_4C54_0002, ec.SECP256R1())  # not provisioned
TEST_POINT = public_point(TEST_SIGNER.public_key())
TEST_KEY_ID = key_id(TEST_POINT)


def build_test_card(path: str | os.PathLike[str], *, capacity: int = TEST_CAPACITY,
                    limits: CardLimits | None = None, anchors: list[bytes] | None = None,
                    journal_capacity: int | None = None, force: bool = False,
                    chunk_entries: int | None = None) -> VirtualCard:
    """A personalised card image at ``path`` (PIN 1234, PUK 12345678,
    TEST_ADMIN_KEY, trust anchor TEST_POINT) opened as a VirtualCard, powered off."""
    emulator.personalise(Path(path), capacity, TEST_PIN, TEST_PUK, TEST_ADMIN_KEY,
                         [TEST_POINT] if anchors is None else anchors, force=force,
                         journal_capacity=journal_capacity, chunk_entries=chunk_entries)
    return VirtualCard.open(path, limits)


# ---- the same personalisation for the Java card (pytest --card javacard) ---------------

PERSONALISED: dict[Path, object] = {}     # image path -> card.jcardsim.Personalisation


def record_personalisations() -> None:
    """Make card.emulator.personalise remember what it wrote into each image (test keys
    only), so a test that serves an image on vpcd can serve the Java card personalised
    alike instead. Called once by conftest under --card javacard, before the test modules
    import personalise."""
    from card.jcardsim import Personalisation
    original = emulator.personalise
    if getattr(original, "records_personalisation", False):
        return

    signature = inspect.signature(original)

    def personalise(*args, **kwargs):
        original(*args, **kwargs)
        a = signature.bind(*args, **kwargs)
        a.apply_defaults()
        p = a.arguments
        PERSONALISED[Path(p["image_path"]).resolve()] = Personalisation(
            pin=p["pin"], puk=p["puk"], admin_key=bytes(p["admin_key"]), trust_anchors=tuple(p["trust_anchors"]),
            capacity=p["capacity"], admin_key_version=p.get("admin_key_version", 1),
            chunk_entries=p.get("chunk_entries"))

    personalise.records_personalisation = True          # type: ignore[attr-defined]
    emulator.personalise = personalise


def personalisation_of(card: VirtualCard):
    """The Personalisation of a freshly personalised emulator card (for the Java card that
    replaces it); ValueError when it is unknown, holds data already, or is configured in
    a way the applet is not (T=0, short APDUs only)."""
    path = Path(card.nvm.path).resolve()
    perso = PERSONALISED.get(path)
    if perso is None:
        raise ValueError(f"{path} was not personalised through card.emulator.personalise in this session")
    store = card.store
    if store.list_backups() or store.session() is not None or store.high_water_mark:
        raise ValueError(f"{path} already holds backups or an upload: the Java card would start empty")
    if card.limits != CardLimits():
        raise ValueError(f"{card.limits} is an emulator configuration the applet does not have")
    return perso


@dataclass
class TestBackup:
    """A signed backup ready to upload: chunks by id, manifest bytes, signature."""

    __test__ = False     # not a pytest class

    backup_id: bytes
    sequence: int
    chunks: dict[bytes, bytes]
    manifest: bytes
    signature: bytes
    parsed: OnCardManifest


def chunk_id_of(data: bytes) -> bytes:
    return hashlib.sha256(b"test-chunk-id" + data).digest()


def make_backup(sequence: int, chunks: list[bytes], *, backup_id: bytes | None = None,
                signer: ec.EllipticCurvePrivateKey = TEST_SIGNER, created: int = 1_700_000_000,
                device_id: str = "IMEI:490154203237518", host_section: bytes = b"{}",
                table_override: dict[int, ChunkRef] | None = None) -> TestBackup:
    """Manifest over ``chunks`` signed by ``signer``; ``table_override`` swaps
    entries of the chunk table (to make tampered backups)."""
    bid = backup_id or hashlib.sha256(b"backup" + sequence.to_bytes(8, "big") + b"".join(chunks)).digest()[:16]
    by_id = {chunk_id_of(c): c for c in chunks}
    refs = [ChunkRef(cid, hashlib.sha256(data).digest(), len(data)) for cid, data in by_id.items()]
    for index, ref in (table_override or {}).items():
        refs[index] = ref
    parsed = OnCardManifest(backup_id=bid, sequence=sequence, created=created, device_id=device_id,
                            signer_key_id=key_id(public_point(signer.public_key())), chunks=tuple(refs),
                            host_section=host_section)
    raw = MANIFEST.encode(parsed)
    return TestBackup(bid, sequence, by_id, raw, sign_raw(signer, raw), parsed)


# ---- helpers for tests that talk to a card directly ----------------------------------


def tx(card, apdu: bytes | str) -> tuple[bytes, int]:
    """Send one raw APDU (bytes or hex) to a virtual card; (data, sw)."""
    raw = bytes.fromhex(apdu) if isinstance(apdu, str) else apdu
    out = card.transmit(raw)
    assert len(out) >= 2, "the card answered without a status word"
    return out[:-2], int.from_bytes(out[-2:], "big")


SELECT_APDU = bytes.fromhex("00A404000A") + b"\xf0SIMVAULT\x01"
VERIFY_APDU = bytes.fromhex("0020008108") + TEST_PIN.encode() + b"\xff" * 4


def emulator_client(card: VirtualCard, pin: bool = True):
    """A BackupCard over an EmulatorTransport on ``card``: connected, selected,
    the PIN verified when ``pin``."""
    from host.client import BackupCard
    from host.link import EmulatorTransport
    return BackupCard.connect(EmulatorTransport(card), TEST_PIN if pin else None)


def pcsc_card(reader: str):
    """A BackupCard on a PC/SC reader (pcscd): connected, selected, the PIN verified."""
    from host.client import BackupCard
    from host.link import PcscTransport
    return BackupCard.connect(PcscTransport(reader), TEST_PIN)


def upload(client, backup: TestBackup, commit: bool = True):
    """BEGIN, the missing chunks, the manifest, COMMIT (the entry) or None."""
    client.begin_backup(backup.backup_id, backup.sequence, len(backup.manifest))
    for cid in client.missing_chunks(list(backup.chunks)):
        client.put_chunk(cid, backup.chunks[cid])
    client.put_manifest(backup.manifest)
    return client.commit(backup.signature) if commit else None


def snapshot(card: VirtualCard) -> dict[bytes, tuple]:
    """Every committed backup as stored: entry, manifest, signature, chunk bytes."""
    store = card.store
    out = {}
    for info in store.list_backups():
        manifest = store.read_manifest(info.backup_id, 0, info.manifest_length)
        chunks = tuple(store.read_chunk(cid) for cid in store.backup_chunk_ids(info.backup_id))
        out[info.backup_id] = (info, manifest, chunks)
    return out


# ---- store-level helpers (card/store.py driven directly, no applet) ----------------

def seeded_chunk(seed: str, size: int) -> tuple[bytes, bytes]:
    """(sha256 id, data): ``size`` reproducible bytes from ``seed``."""
    data = hashlib.shake_256(seed.encode()).digest(size)
    return hashlib.sha256(data).digest(), data


def store_state(store, *, credentials: bool = False) -> tuple:
    """Everything visible through the BackupStore API, to compare before/after a call;
    ``credentials`` adds the life cycle, admin key and the PIN/PUK records."""
    backups = []
    for b in store.list_backups():
        ids = store.backup_chunk_ids(b.backup_id)
        backups.append((b, store.read_manifest(b.backup_id, 0, 1 << 20), tuple(ids),
                        tuple(store.read_chunk(c) for c in ids)))
    s = store.session()
    state = (tuple(backups), store.high_water_mark, store.stats(), s,
             store.read_session_manifest(0, 1 << 20) if s else None,
             store.pin_tries_left(), store.puk_tries_left(), tuple(store.list_anchors()))
    if credentials:
        state += (store.lifecycle, store.admin_key(),
                  store.nvm.read(store.off_config + 8, 96))   # PIN and PUK records (salted hashes)
    return state


def run_cli(argv: list[str], capsys, *commands) -> tuple[int, str, str]:
    """host.cli's contract (one-line errors, exit codes) over the command modules given
    (each with ``register(sub)``): (exit code, stdout, stderr)."""
    import argparse
    import sys

    from host.cli import ui
    from host.errors import SimvaultError
    parser = argparse.ArgumentParser(prog="simvault")
    sub = parser.add_subparsers(dest="command")
    for module in commands:
        module.register(sub)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
    except SimvaultError as err:
        code = ui.fail(err)
    out = capsys.readouterr()
    return code, out.out, out.err
