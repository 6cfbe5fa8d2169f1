"""`simvault keys|backup|restore|list|verify|delete|export|import`: the backup commands.

Sources and destinations are "card" (through host.cli.card's reader options)
or a PATH (a .svarch file, or a directory of them). The archive bytes are the
same wherever they go. Output is a few readable lines, or JSON with --json
(host.cli.ui); transfers show a progress bar on a terminal (host.cli.progress).
"""
from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apdu_specs.sw import SW
from host.backup import ops
from host.archive import Archive, verify_archive
from host.archive.build import device_id_of
from host.cli import progress as cli_progress
from host.cli.ui import emit as _emit
from host.client_errors import BackupRejectedError, NotFoundOnCardError
from host.errors import UsageError
from host.backup.keys import (
    Identity,
    TrustStore,
    default_key_dir,
    fingerprint,
    generate_identity,
    load_decryptor,
    load_identity,
    load_public_point,
    passphrase_from_env,
)

# ---- shared helpers ----------------------------------------------------------------


def _key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", type=Path, default=None, metavar="DIR",
                   help="key directory (default $SIMVAULT_HOME or ~/.config/simvault)")
    p.add_argument("--name", default="device", help="key name inside the directory (default device)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _card_options(p: argparse.ArgumentParser) -> None:
    from host.cli.card import add_card_options
    add_card_options(p)


def _open_card(args: argparse.Namespace) -> Any:
    from host.cli.card import open_card
    return open_card(args)


def _identity(args: argparse.Namespace) -> Identity:
    return load_identity(args.key or default_key_dir(), args.name)


def _reader(card: Any) -> str:
    return card.link.transport.name


def _apdus(card: Any) -> int:
    return card.link.stats.apdus


def _not_on_card(backup_id: bytes, err: NotFoundOnCardError) -> NotFoundOnCardError:
    sw = err.sw or SW.REFERENCED_DATA_NOT_FOUND
    return NotFoundOnCardError(f"backup {backup_id.hex()} is not on the card ({sw:04X}): 'simvault list' shows the "
                               "ids it holds", sw)


def _backup_id(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise UsageError(f"backup id {text!r} must be 32 hex digits (see 'simvault list')")
    return raw


def _is_card(where: str | None) -> bool:
    return where is None or where == "card"


# ---- keys --------------------------------------------------------------------------


def cmd_keys_gen(args: argparse.Namespace) -> int:
    ident = generate_identity(args.key or default_key_dir(), args.name, passphrase_from_env())
    return _show(args, ident)


def cmd_keys_show(args: argparse.Namespace) -> int:
    return _show(args, _identity(args))


def _show(args: argparse.Namespace, ident: Identity) -> int:
    sign_point, enc_point = ident.signer.public_point, ident.recipient.public_point
    doc = {"name": ident.name, "directory": str(ident.directory),
           "sign": {"key_id": ident.signer.key_id.hex(), "public_point": sign_point.hex(),
                    "fingerprint": fingerprint(sign_point)},
           "enc": {"key_id": ident.recipient.key_id.hex(), "public_point": enc_point.hex(),
                   "fingerprint": fingerprint(enc_point)},
           "trusted": [k.hex() for k in ident.trust.key_ids()],
           "recipients": [r.key_id.hex() for r in ident.recipients()]}
    _emit(args, doc, [
        f"signing key     {doc['sign']['key_id']}  {doc['sign']['fingerprint']}",
        f"  point         {sign_point.hex()}",
        f"encryption key  {doc['enc']['key_id']}  {doc['enc']['fingerprint']}",
        f"  point         {enc_point.hex()}",
        f"trusted signers {' '.join(doc['trusted']) or '-'}",
        f"recipients      {' '.join(doc['recipients'])}"])
    return 0


def cmd_keys_trust(args: argparse.Namespace) -> int:
    directory = args.key or default_key_dir()
    point = load_public_point(args.public_key)
    store = TrustStore(directory / ("recipients" if args.recipient else "trusted"))
    kid = store.add(point)
    _emit(args, {"key_id": kid.hex(), "recipient": args.recipient},
          [f"{'recipient' if args.recipient else 'trusted signer'} {kid.hex()} added"])
    return 0


# ---- backup ------------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    ident = _identity(args)
    tree = ops.read_tree_file(args.tree)
    device_id = device_id_of(tree)
    scope = args.scope or None
    if _is_card(args.to):
        card = _open_card(args)
        before = _apdus(card)
        archive, report = ops.backup_tree_to_card(
            card, tree, ident, scope=scope, exclude_secrets=args.exclude_secrets,
            incremental=not args.full, pending_dir=ops.host_state(ident).pending_dir(),
            progress=cli_progress.bar(args, "upload to card"))
        doc = {"destination": "card", **report.__dict__, "reader": _reader(card), "apdus": _apdus(card) - before,
               "previous": archive.host.previous.hex() if archive.host.previous else None}
        where = (f"committed to card '{doc['reader']}': {report.bytes_sent} bytes in {doc['apdus']} APDUs, "
                 f"{report.chunks_sent} of {report.chunks_total} chunk(s) sent")
    else:
        dest = Path(args.to)
        to_dir = ops.is_directory_target(args.to)
        previous = None
        if dest.is_dir() and not args.full:
            mine = [a for _, a in ops.archives_in(dest) if a.device_id == device_id]
            previous = mine[-1] if mine else None
        archive = ops.backup_tree(tree, ident, previous=previous, scope=scope,
                                  exclude_secrets=args.exclude_secrets)
        path = ops.write_archive_file(dest, archive, directory=to_dir)
        new = [c for c in archive.manifest.chunks if previous is None or c.chunk_id not in previous.chunks]
        doc = {"destination": str(path), "backup_id": archive.backup_id.hex(),
               "sequence": archive.sequence, "chunks_total": len(archive.manifest.chunks),
               "chunks_new": len(new), "bytes_total": path.stat().st_size,
               "previous": previous.backup_id.hex() if previous else None}
        where = (f"written to {path}: {doc['bytes_total']} bytes, {doc['chunks_new']} of {doc['chunks_total']} "
                 "chunk(s) new")
    chain = f"incremental on {doc['previous']}" if doc["previous"] else "full backup (a new chain)"
    resumed = "; resumed an interrupted upload" if doc.get("resumed") else ""
    _emit(args, doc, [f"backup {doc['backup_id']} {where}, {chain}{resumed}"])
    return 0


# ---- restore / list / verify / delete / export / import ----------------------------


def _load(args: argparse.Namespace, where: str | None, backup_id: bytes | None, card: Any = None) -> Archive:
    if _is_card(where):
        card = card or _open_card(args)
        if backup_id is None:
            entries = sorted(card.list_backups(), key=lambda e: ops._field(e, "sequence"))
            if not entries:
                raise UsageError("the card holds no backup: make one with 'simvault backup --tree FILE', or "
                                 "restore from a file (--from PATH)")
            backup_id = ops._field(entries[-1], "backup_id")
        try:
            return ops.archive_from_card(card, backup_id, progress=cli_progress.bar(args, "read from card"))
        except NotFoundOnCardError as err:
            raise _not_on_card(backup_id, err) from None
    return ops.find_archive(Path(where), backup_id)


def cmd_restore(args: argparse.Namespace) -> int:
    ident = _identity(args)
    archive = _load(args, args.source, _backup_id(args.id))
    report = ops.restore_tree_file(args.tree, archive, ident, dry_run=args.dry_run,
                                   keep_secrets=args.keep_secrets, force_device=args.force_device,
                                   force_sequence=args.force, state=ops.host_state(ident),
                                   create=args.create)
    doc = report.as_dict()
    source = "the card" if _is_card(args.source) else args.source
    head = f"{'would restore' if args.dry_run else 'restored'} backup {report.backup_id} " \
           f"(sequence {report.sequence}) from {source} onto {args.tree}: {len(report.changes)} change(s)"
    _emit(args, doc, [head] + report.render().splitlines())
    return 0


def iso_utc(epoch: int | None) -> str:
    """Seconds since the epoch as ISO-8601 UTC (2026-11-24T08:54:15Z); '-' when unknown."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_line(entry: dict) -> str:
    """One `simvault list` line: id, sequence, creation time (UTC), size, device."""
    return (f"{entry['backup_id']}  seq {entry['sequence']}  created {iso_utc(entry.get('created'))}  "
            f"{entry.get('stored_bytes', '?')} bytes  device {entry.get('device_id') or '-'}")


def cmd_list(args: argparse.Namespace) -> int:
    if _is_card(args.source):
        entries = ops.card_entries(_open_card(args), with_device=True)
    else:
        src = Path(args.source)
        if not src.exists():
            raise ops._missing(src)
        found = ops.archives_in(src) if src.is_dir() else [(src, ops.read_archive_file(src))]
        entries = [{**a.summary(), "path": str(p)} for p, a in found]
    for e in entries:
        if e.get("created") is not None:
            e["created_utc"] = iso_utc(e["created"])
    _emit(args, {"backups": entries}, [list_line(e) for e in entries] or ["no backups"])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    # Verifying needs the trust store and the decryption key, never the signing key.
    directory = args.key or default_key_dir()
    decryptor = load_decryptor(directory, args.name)
    archive = _load(args, args.source, _backup_id(args.id))
    verified = verify_archive(archive, TrustStore(directory / "trusted"), decryptor)
    doc = {**archive.summary(), "verified": True, "nodes": verified.tree.node_count()}
    line = (f"backup {doc['backup_id']} verified: signature, {doc['chunks']} chunk(s), "
            f"tree hash ({doc['nodes']} nodes, device {doc['device_id']})")
    _emit(args, doc, [line])
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    backup_id = _backup_id(args.id)
    assert backup_id is not None
    if _is_card(args.source):
        try:
            _open_card(args).delete_backup(backup_id)
        except NotFoundOnCardError as err:
            raise _not_on_card(backup_id, err) from None
    else:
        src = Path(args.source)
        if not src.exists():
            raise ops._missing(src)
        paths = [p for p, a in ops.archives_in(src) if a.backup_id == backup_id] if src.is_dir() else [src]
        if not paths:
            raise UsageError(f"no backup {args.id} in {src}: 'simvault list --from {src}' shows the ids it holds")
        for p in paths:
            p.unlink()
    _emit(args, {"deleted": args.id}, [f"deleted backup {args.id}"])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    archive = _load(args, "card", _backup_id(args.id))
    path = ops.write_archive_file(args.out, archive)
    size = path.stat().st_size
    _emit(args, {"backup_id": archive.backup_id.hex(), "path": str(path), "bytes": size},
          [f"exported backup {archive.backup_id.hex()} to {path}: {size} bytes"])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    archive = ops.read_archive_file(args.path)
    card = _open_card(args)
    before = _apdus(card)
    try:
        report = ops.backup_to_card(card, archive, cli_progress.bar(args, "upload to card"))
    except BackupRejectedError as err:
        if err.sw != SW.SEQUENCE_ROLLBACK:
            raise
        raise BackupRejectedError(f"backup {archive.backup_id.hex()} (sequence {archive.sequence}) is not newer than "
                                  f"the newest on this card ({err.sw:04X}): a card takes newer backups only; import "
                                  "it onto another card (--reader), or restore from the file "
                                  f"('simvault restore --from {args.path}')", err.sw) from None
    doc = {**report.__dict__, "reader": _reader(card), "apdus": _apdus(card) - before}
    line = (f"imported backup {report.backup_id} (sequence {report.sequence}) onto card '{doc['reader']}': "
            f"{report.bytes_sent} bytes in {doc['apdus']} APDUs, {report.chunks_sent} of {report.chunks_total} "
            "chunk(s) sent")
    _emit(args, doc, [line])
    return 0


# ---- registration ------------------------------------------------------------------


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="device/server key pairs and trusted keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    gen = ksub.add_parser("gen", help="create signing and encryption key pairs")
    gen.add_argument("--key", "--out", dest="key", type=Path, default=None, metavar="DIR",
                     help="key directory to create them in (default $SIMVAULT_HOME or ~/.config/simvault; "
                          "--out is an alias)")
    gen.add_argument("--name", default="device", help="key name inside the directory (default device)")
    gen.add_argument("--json", action="store_true", help="print JSON")
    gen.set_defaults(func=cmd_keys_gen)
    show = ksub.add_parser("show", help="key ids, public points, fingerprints")
    _key_options(show)
    show.set_defaults(func=cmd_keys_show)
    trust = ksub.add_parser("trust", help="trust a public signing key (or --recipient: wrap backups for it)")
    trust.add_argument("public_key", type=Path, help="PEM public key file")
    trust.add_argument("--recipient", action="store_true",
                       help="an encryption key every backup is also wrapped for (e.g. the DM server's), "
                            "not a trusted signer")
    _key_options(trust)
    trust.set_defaults(func=cmd_keys_trust)

    def common(name: str, help_: str, func, where: str | None = None, card: bool = True,  # type: ignore[no-untyped-def]
               transfer: bool = True):
        p = subparsers.add_parser(name, help=help_)
        _key_options(p)
        if transfer:
            cli_progress.add_progress_options(p)
        if where:
            p.add_argument(f"--{where}", dest="source" if where == "from" else "to", default="card",
                           metavar="card|PATH",
                           help="the card (default) or an archive file/directory" +
                           (" (a path ending in '/' is a directory, created if missing)" if where == "to" else ""))
        if card:
            _card_options(p)
        p.set_defaults(func=func)
        return p

    b = common("backup", "back up a tree file", cmd_backup, "to")
    b.add_argument("--tree", type=Path, required=True, help="the live tree (TNDS file)")
    b.add_argument("--scope", action="append", metavar="URI", help="back up only this subtree (repeatable)")
    b.add_argument("--exclude-secrets", action="store_true", help="leave DMAcc credentials out")
    b.add_argument("--full", action="store_true", help="a new chain, not incremental")
    r = common("restore", "verify a backup, then restore it onto a tree file", cmd_restore, "from")
    r.add_argument("--id", help="backup id, 32 hex digits (default: the newest; see 'simvault list')")
    r.add_argument("--tree", type=Path, required=True, help="the live tree (TNDS file) to restore onto")
    r.add_argument("--create", action="store_true",
                   help="the tree file is lost: write the restored tree to --tree, a new file (refused if it "
                        "exists)")
    r.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    r.add_argument("--force-device", action="store_true",
                   help="restore another device's backup; the live device's identity (./DevInfo, ./DevDetail) "
                        "is kept, and the diff preview says so")
    r.add_argument("--force", action="store_true", help="restore a backup older than the last restored")
    r.add_argument("--keep-secrets", action="store_true", help="keep the live credentials")
    common("list", "list backups", cmd_list, "from", transfer=False)
    v = common("verify", "verify a backup completely (needs the trust store and the decryption key only)",
               cmd_verify, "from")
    v.add_argument("--id", help="backup id, 32 hex digits (default: the newest; see 'simvault list')")
    d = common("delete", "delete a backup", cmd_delete, "from", transfer=False)
    d.add_argument("--id", required=True, help="backup id, 32 hex digits (see 'simvault list')")
    e = common("export", "copy a backup from the card into an archive file", cmd_export)
    e.add_argument("--id", required=True, help="backup id on the card, 32 hex digits (see 'simvault list')")
    e.add_argument("--out", required=True, metavar="FILE|DIR/",
                   help="the archive file to write; a directory (ending in '/', or existing) gets <id>.svarch")
    i = common("import", "copy an archive file onto the card", cmd_import)
    i.add_argument("path", type=Path, help="the archive file (.svarch) to upload")
