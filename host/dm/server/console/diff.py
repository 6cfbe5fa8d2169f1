"""What the console can read of a stored backup, and the diff between two of them.

A server backup is encrypted to the device's recipients. Without one of their private keys the
server reads only the signed manifest: backup id, sequence, scope, sizes, recipients, and the
chain id with the tree MAC (a MAC keyed by the chain: two backups of one chain with equal MACs hold
the same tree). Nodes need a key: the one given by ``dm server --server-key DIR`` (made by
``simvault keys gen``) opens every archive wrapped for it, i.e. when its ``<name>.enc.pub.pem`` is
among the device's recipients (``simvault keys trust --recipient``) or the server built the archive
for its own recipients. Every archive is verified in full (signature by the device's registered
key or the server's own signing key from the same DIR, device id, chunk hashes, tags, tree MAC)
before a node of it is shown; secret leaves are masked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.archive import Archive, verify_archive
from host.backup.keys import Decryptor, load_decryptor, load_public_point
from host.dm.server.backup_plugin import BAR, _OneKey
from host.dm.server.db import Store
from host.errors import ArchiveError, IntegrityError, KeyFileError, SimvaultError, UsageError
from host.tree.model import DMNode, DMTree
from host.tree.ops import DIFF_FIELDS, Change, diff

MAX_SHOWN = 60          # characters of a node value on the page
MAX_ROWS = 2000         # changes listed (the counts are always whole)


class ServerKeys:
    """The keys the server holds (``--server-key DIR``): ``<name>.enc.pem`` decrypts archives wrapped
    for it; ``<name>.sign.pub.pem``, when present, is trusted besides the device's registered key
    (archives the server built and signed itself)."""

    def __init__(self, decryptors: list[Decryptor] | None = None, signers: list[bytes] | None = None) -> None:
        self.decryptors = list(decryptors or [])
        self.signers = list(signers or [])

    @classmethod
    def load(cls, directory: Path, name: str = "device") -> "ServerKeys":
        directory = Path(directory)
        path = directory / f"{name}.enc.pem"
        if not path.is_file():
            raise UsageError(f"--server-key {directory}: no {path.name} there; make the pair with "
                             f"'simvault keys gen --key {directory}'")
        try:
            decryptor = load_decryptor(directory, name)
            sign_pub = directory / f"{name}.sign.pub.pem"
            signers = [load_public_point(sign_pub)] if sign_pub.is_file() else []
        except (KeyFileError, ValueError) as exc:
            raise UsageError(f"--server-key {directory}: {exc}; set $SIMVAULT_PASSPHRASE if the key "
                             "is protected") from None
        return cls([decryptor], signers)

    @property
    def key_ids(self) -> list[str]:
        return [d.key_id.hex() for d in self.decryptors]

    def for_archive(self, archive: Archive) -> Decryptor | None:
        wrapped_for = set(archive.recipients)
        return next((d for d in self.decryptors if d.key_id in wrapped_for), None)

    def trust(self, device_point: bytes) -> "_Trusted":
        return _Trusted([device_point, *self.signers])


class _Trusted:
    """Trust anchors: the device's registered signing key and the server's own."""

    def __init__(self, points: list[bytes]) -> None:
        self.anchors = [_OneKey(p) for p in points]

    def get(self, kid: bytes) -> bytes | None:
        return next((p for p in (a.get(kid) for a in self.anchors) if p is not None), None)


@dataclass
class Opened:
    """A server backup as far as the server can read it: summary always, tree when a key opens it."""

    backup_id: str
    summary: dict[str, Any] = field(default_factory=dict)
    tree: DMTree | None = None
    why: str = ""            # why the nodes cannot be shown (empty when tree is set)
    chain: tuple[bytes, bytes] | None = None   # (chain id, tree MAC) from the signed manifest


def open_backup(store: Store, device_id: str, backup_id: str, keys: ServerKeys) -> Opened:
    """Read a stored backup of this device; its tree only after every check passed."""
    out = Opened(backup_id)
    data = store.backup_archive(device_id, backup_id)
    if data is None:
        out.why = (f"backup {backup_id} is not stored on the server (a card or DS backup: the device "
                   "or the DS server holds it, the DM server cannot read it)")
        return out
    try:
        archive = Archive.from_bytes(data)
    except ArchiveError as exc:
        out.why = f"the stored copy does not parse: {exc}"
        return out
    out.summary = archive.summary()
    out.chain = (archive.host.chain_id, archive.host.tree_digest)
    device = store.device(device_id)
    if device is None or device.public_key is None:
        out.why = "the device has no registered signing key, so the backup cannot be verified"
        return out
    decryptor = keys.for_archive(archive) if keys.decryptors else None
    if decryptor is None:
        out.why = _no_key_reason(out.summary.get("recipients") or [], keys)
        return out
    try:
        out.tree = verify_archive(archive, keys.trust(device.public_key), decryptor, device_id=device_id).tree
    except (IntegrityError, ArchiveError) as exc:
        out.why = f"the backup does not verify, nothing of it is shown: {exc}"
    except SimvaultError as exc:
        out.why = f"the backup cannot be opened: {exc}"
    return out


def _no_key_reason(recipients: list[str], keys: ServerKeys) -> str:
    wrapped = ", ".join(recipients) or "keys not listed in the manifest"
    if not keys.decryptors:
        return (f"the archive is encrypted to the device's recipients ({wrapped}) and the server holds "
                "no decryption key: start it with --server-key DIR and add that key's enc.pub.pem to the "
                "device's recipients (simvault keys trust --recipient) for the nodes of later backups")
    return (f"the archive is encrypted to {wrapped}; the server's key {', '.join(keys.key_ids)} is not "
            "among them: add the server's enc.pub.pem to the device's recipients (simvault keys trust "
            "--recipient) and its next backups can be read here")


def _shown(node: DMNode | None, secret: bool) -> str:
    if node is None:
        return ""
    if node.interior:
        return "(interior node)"
    if secret:
        return "(secret, masked)"
    v = node.value
    if v is None:
        return "(no value)"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v if len(v) <= MAX_SHOWN else v[:MAX_SHOWN - 3] + "..."


def _field(node: DMNode, name: str, secret: bool) -> str:
    if name == "value":
        return _shown(node, secret)
    v = getattr(node, name)
    return "" if v is None else str(v)[:MAX_SHOWN]


def change_rows(changes: list[Change]) -> list[dict[str, Any]]:
    """Display rows of a diff: secret values never leave this function."""
    rows = []
    for c in changes[:MAX_ROWS]:
        row = {"kind": c.kind, "uri": c.uri, "secret": c.secret, "fields": [], "kept": ""}
        if c.kind == "added":
            row["after"] = _shown(c.after, c.secret)
        elif c.kind == "removed":
            row["before"] = _shown(c.before, c.secret)
        else:
            assert c.before is not None and c.after is not None
            row["fields"] = [{"name": DIFF_FIELDS[f], "before": _field(c.before, f, c.secret),
                              "after": _field(c.after, f, c.secret)} for f in c.fields]
        rows.append(row)
    return rows


def mark_kept_by_restore(rows: list[dict[str, Any]]) -> None:
    """Tag the rows a restore leaves as they are on the device (host.backup.ops: the agent carries
    its Backup MO and its own DM account over from the live tree)."""
    for row in rows:
        uri = row["uri"]
        if uri == BAR or uri.startswith(BAR + "/"):
            row["kept"] = "kept: the device keeps its Backup MO"
        elif uri.startswith("./DMAcc/"):
            row["kept"] = "kept when it is the device's own DM account (credentials, nonces)"


SUMMARY_KEYS = ("sequence", "created", "scope", "secrets", "plain_size", "stored_bytes", "chunks", "format",
                "layers", "previous", "recipients")


def summary_rows(a: dict[str, Any], b: dict[str, Any], server_key_ids: list[str] = ()) -> list[tuple[str, str, str]]:
    """What the signed manifests of two backups say, side by side (no key needed); the server's
    own key among the recipients is named."""
    def text(key: str, v: Any) -> str:
        if key == "created" and isinstance(v, int):
            return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(v))
        if key == "recipients" and isinstance(v, list):
            return " ".join(f"{k} (this server)" if k in server_key_ids else k for k in v)
        return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else ("" if v is None else str(v))
    return [(k, text(k, a.get(k)), text(k, b.get(k))) for k in SUMMARY_KEYS]


def backup_diff(store: Store, device_id: str, a: str, b: str, keys: ServerKeys) -> dict[str, Any]:
    """From backup ``a`` to backup ``b`` of one device: node rows when the server can open both,
    else why not and what the signed manifests still tell."""
    old, new = open_backup(store, device_id, a, keys), open_backup(store, device_id, b, keys)
    out: dict[str, Any] = {"a": old, "b": new, "rows": None, "counts": None, "why": old.why or new.why,
                           "same": None, "truncated": False, "summary": summary_rows(old.summary, new.summary, keys.key_ids)}
    if old.tree is not None and new.tree is not None:
        changes = diff(old.tree, new.tree)
        out["rows"] = change_rows(changes)
        out["counts"] = {k: sum(1 for c in changes if c.kind == k) for k in ("added", "removed", "changed")}
        out["truncated"] = len(changes) > MAX_ROWS
    elif old.chain and new.chain and old.chain[0] == new.chain[0]:
        out["same"] = old.chain[1] == new.chain[1]   # one chain key: equal tree MACs, equal trees
    return out
