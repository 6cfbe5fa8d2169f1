"""The device agent's management tree: loaded from TNDS, saved back atomically.

Besides the tree the file holds, the agent keeps *volatile* nodes in memory
only: the archive values of ./Vendor/simvault/BaR/Backups/<id>/Archive and
./Vendor/simvault/BaR/Staging/Archive (an archive waits there for the server
to Get it, or for a Restore); they are never written to the tree file and are
never part of a backup.

It also provisions what the agent needs: DevInfo, the DM account (DMAcc with
the client and server credentials, OMA DM 1.2 style) and the Backup MO
skeleton (docs/BACKUP_MO.md), with ACLs that give the DM server access.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from host.errors import TreeError, UsageError
from host.fsutil import atomic_write
from host.tree.model import DMNode, DMTree
from host.tree.tnds import read_tnds, write_tnds
from host.tree.uri import split_uri

BAR = "./Vendor/simvault/BaR"
ACCOUNT = "simvault"
DMACC = f"./DMAcc/{ACCOUNT}"
CLIENT_AUTH = f"{DMACC}/AppAuth/ClientSide"
SERVER_AUTH = f"{DMACC}/AppAuth/ServerSide"
# what a restore never overwrites: the Backup MO itself and our live DM credentials/nonces
PRESERVED_ON_RESTORE = (BAR, DMACC)


@dataclass
class Credentials:
    username: str
    password: str
    server_id: str
    server_password: str
    auth_type: str  # md5 | hmac
    client_nonce: bytes  # nonce the server gave us (our Cred/HMAC uses it)
    server_nonce: bytes  # nonce we gave the server (its Cred/HMAC and Package 0 use it)


def is_volatile(uri: str) -> bool:
    names = split_uri(uri)
    bar = split_uri(BAR)
    if names[: len(bar)] != bar or len(names) < len(bar) + 2:
        return False
    rest = names[len(bar):]
    return (rest[0] == "Backups" and len(rest) == 3 and rest[2] == "Archive") or rest == ["Staging", "Archive"]


class AgentTree:
    """A DMTree plus its file; use ``with tree.lock:`` around reads and changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.tree = read_tnds(self.path.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read the device tree {self.path}: {exc.strerror}") from None
        self.lock = threading.RLock()
        self.generation = 0  # bumped on every change a server command makes outside BaR/DMAcc

    # ------------------------------------------------------------ persistence
    def save(self) -> None:
        """Write the tree (without volatile nodes) atomically, mode 0600."""
        with self.lock:
            volatile = self._volatile_uris()
            if volatile:  # only then a copy to strip them from
                copy = self.tree.copy()
                for uri in volatile:
                    copy.delete(uri)
                data = write_tnds(copy)
            else:
                data = write_tnds(self.tree)
        atomic_write(self.path, data)

    def _volatile_uris(self) -> list[str]:
        """Where volatile nodes can be (Backups/<id>/Archive, Staging/Archive): no walk of the tree."""
        found = []
        backups = self.tree.find(f"{BAR}/Backups")
        for name in (backups.children if backups is not None and backups.interior else {}):
            if self.tree.find(f"{BAR}/Backups/{name}/Archive") is not None:
                found.append(f"{BAR}/Backups/{name}/Archive")
        if self.tree.find(f"{BAR}/Staging/Archive") is not None:
            found.append(f"{BAR}/Staging/Archive")
        return found

    def snapshot_for_backup(self) -> DMTree:
        """A copy of the tree without the Backup MO (volatile archives included)."""
        with self.lock:
            copy = self.tree.copy()
        if copy.find(BAR) is not None:
            copy.delete(BAR)
        return copy

    # ------------------------------------------------------------ small helpers
    def value(self, uri: str, default: str | None = None) -> str | None:
        with self.lock:
            node = self.tree.find(uri)
        if node is None or node.interior or node.value is None:
            return default
        return node.value if isinstance(node.value, str) else node.value.decode("utf-8", "replace")

    def set_leaf(self, uri: str, value: str | bytes, fmt: str = "chr", mime: str | None = None) -> None:
        """Create or replace a leaf (creating interior parents)."""
        with self.lock:
            node = self.tree.find(uri)
            if node is None:
                self.tree.add(uri, value, format=fmt, type=mime, create_parents=True)
            elif node.interior:
                raise TreeError(f"{uri} is an interior node; cannot set a value")
            else:
                self.tree.replace(uri, value, format=fmt, type=mime)

    def ensure_interior(self, uri: str, acl: str | None = None) -> DMNode:
        with self.lock:
            node = self.tree.find(uri)
            if node is None:
                node = self.tree.add(uri, None, format="node", create_parents=True)
            if acl is not None:
                node.acl = acl
            return node

    # ------------------------------------------------------------ provisioning
    def provision(self, *, device_id: str, server_url: str, creds: Credentials, overwrite: bool) -> None:
        """DevInfo/DevId, ./DMAcc/simvault and the Backup MO skeleton (existing values kept
        unless ``overwrite``)."""
        srv = creds.server_id
        with self.lock:
            devid = self.tree.find("./DevInfo/DevId")
            if devid is None:
                self.ensure_interior("./DevInfo", acl="Get=*")
                self.set_leaf("./DevInfo/DevId", device_id)
            elif devid.value != device_id:
                raise UsageError(f"the tree's ./DevInfo/DevId is {devid.value!r}, not {device_id!r}; "
                                 "pass the tree's device id")
            self.ensure_interior("./DMAcc")
            fresh = self.tree.find(DMACC) is None
            self.ensure_interior(DMACC, acl=f"Get={srv}&Replace={srv}")

            def put(uri: str, value: str, fmt: str = "chr") -> None:
                if fresh or overwrite or self.tree.find(uri) is None:
                    self.set_leaf(uri, value, fmt)

            import base64
            put(f"{DMACC}/ServerID", srv)
            put(f"{DMACC}/Name", "simvault DM server")
            put(f"{DMACC}/AppAddr/SrvAddr/Addr", server_url)
            put(f"{DMACC}/AppAddr/SrvAddr/AddrType", "URI")
            put(f"{DMACC}/AAuthPref", "HMAC" if creds.auth_type == "hmac" else "DIGEST")
            kind = "HMAC" if creds.auth_type == "hmac" else "DIGEST"
            for base, level, name, secret, nonce in (
                    (CLIENT_AUTH, "CLCRED", creds.username, creds.password, creds.client_nonce),
                    (SERVER_AUTH, "SRVCRED", srv, creds.server_password, creds.server_nonce)):
                put(f"{base}/AAuthLevel", level)
                put(f"{base}/AAuthType", kind)
                put(f"{base}/AAuthName", name)
                put(f"{base}/AAuthSecret", secret)
                put(f"{base}/AAuthData", base64.b64encode(nonce).decode(), "b64")
            bar_acl = f"Get={srv}&Replace={srv}&Add={srv}&Delete={srv}&Exec={srv}"
            self.ensure_interior("./Vendor/simvault", acl="Get=*")
            self.ensure_interior(BAR, acl=bar_acl)
            for sub in ("Config", "Policy", "Backups", "Operations", "LastResult", "Staging"):
                self.ensure_interior(f"{BAR}/{sub}")
            defaults = {"Config/Destination": ("server", "chr"), "Config/Scope": (".", "chr"),
                        "Config/ExcludeSecrets": ("false", "bool"), "Config/ServerURL": (server_url, "chr"),
                        "Policy/Interval": ("0", "int"), "Policy/BeforeFirmwareUpdate": ("true", "bool"),
                        "Policy/OnChange": ("false", "bool"), "Policy/ServerApproval": ("true", "bool")}
            for rel, (value, fmt) in defaults.items():
                if self.tree.find(f"{BAR}/{rel}") is None:
                    self.set_leaf(f"{BAR}/{rel}", value, fmt)
            for op in ("Backup", "Restore", "Delete", "BackupViaDS", "RestoreViaDS"):
                if self.tree.find(f"{BAR}/Operations/{op}") is None:
                    self.set_leaf(f"{BAR}/Operations/{op}", "", "chr")

    def credentials(self) -> Credentials:
        import base64
        with self.lock:
            def need(uri: str) -> str:
                v = self.value(uri)
                if v is None:
                    raise UsageError(f"the tree lacks {uri}: provision the agent with its credentials")
                return v
            return Credentials(
                username=need(f"{CLIENT_AUTH}/AAuthName"), password=need(f"{CLIENT_AUTH}/AAuthSecret"),
                server_id=need(f"{DMACC}/ServerID"), server_password=need(f"{SERVER_AUTH}/AAuthSecret"),
                auth_type="hmac" if need(f"{CLIENT_AUTH}/AAuthType") == "HMAC" else "md5",
                client_nonce=base64.b64decode(self.value(f"{CLIENT_AUTH}/AAuthData", "") or ""),
                server_nonce=base64.b64decode(self.value(f"{SERVER_AUTH}/AAuthData", "") or ""))

    def set_auth_type(self, auth_type: str) -> None:
        """Switch our DM account to md5 (DIGEST) or hmac (HMAC), both sides."""
        kind = "HMAC" if auth_type == "hmac" else "DIGEST"
        with self.lock:
            self.set_leaf(f"{DMACC}/AAuthPref", kind)
            for base in (CLIENT_AUTH, SERVER_AUTH):
                self.set_leaf(f"{base}/AAuthType", kind)

    def set_nonce(self, side: str, nonce: bytes) -> None:
        """side 'client' (nonce the server gave us) or 'server' (nonce we gave the server)."""
        import base64
        base = CLIENT_AUTH if side == "client" else SERVER_AUTH
        self.set_leaf(f"{base}/AAuthData", base64.b64encode(nonce).decode(), "b64")
