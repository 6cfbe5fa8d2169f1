"""The agentless settings of `simvault dm server`: server key, recipients, caps.

The server signs the archives it builds with its own key (a directory made by
``simvault keys gen``) and encrypts them to that key's encryption half plus
every ``--recipient``: it can restore them itself, and each operator holding a
recipient's private key can read them offline with ``simvault verify``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from host.backup.keys import Identity, Recipient, load_identity, load_public_point
from host.errors import UsageError

DEFAULT_MAX_NODES = 20_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_GETS_PER_MESSAGE = 64
MODES = ("auto", "agent", "standard")
STRATEGIES = ("tnds", "structdata", "walk")  # what an agentless backup records (the agent's: "agent")


@dataclass(eq=False)
class ServerIdentity(Identity):
    """The server's key directory, with the operator's --recipient keys added."""

    extra: tuple[Recipient, ...] = ()

    def recipients(self) -> list[Recipient]:
        out = super().recipients()
        have = {r.key_id for r in out}
        return out + [r for r in self.extra if r.key_id not in have]


@dataclass
class AgentlessConfig:
    """Caps are per job. ``identity`` None: agentless jobs fail with a message naming --server-key."""

    identity: ServerIdentity | None = None
    max_nodes: int = DEFAULT_MAX_NODES
    max_bytes: int = DEFAULT_MAX_BYTES
    gets_per_message: int = DEFAULT_GETS_PER_MESSAGE
    strategies: tuple[str, ...] = field(default=STRATEGIES)  # tried in this order

    def require_identity(self) -> ServerIdentity:
        if self.identity is None:
            raise UsageError("agentless backups need a server key: start the server with "
                             "--server-key DIR (made with 'simvault keys gen --key DIR')")
        return self.identity


def server_identity(key_dir: Path, recipients: list[Path] | None = None, name: str = "device") -> ServerIdentity:
    """Load the server key directory (passphrase from $SIMVAULT_PASSPHRASE) and the recipients."""
    try:
        base = load_identity(Path(key_dir), name)
    except FileNotFoundError:
        raise UsageError(f"--server-key {key_dir}: no {name}.sign.pem there; "
                         f"create it with 'simvault keys gen --key {key_dir}'") from None
    extra = tuple(Recipient(load_public_point(Path(p))) for p in recipients or [])
    return ServerIdentity(base.name, base.directory, base.signer, base.decryptor, base.recipient, extra)


def add_agentless_options(parser: argparse.ArgumentParser) -> None:
    """`dm server` options for devices without simvault's agent (docs/DM.md)."""
    g = parser.add_argument_group("agentless backup (devices without simvault's agent)")
    g.add_argument("--server-key", type=Path, default=None, metavar="DIR",
                   help="the server's key directory (simvault keys gen --key DIR): signs the archives "
                        "it builds from a device's tree and can decrypt them to restore")
    g.add_argument("--recipient", type=Path, action="append", default=[], metavar="PEM",
                   help="an encryption public key (e.g. an operator's device.enc.pub.pem) every such "
                        "archive is also encrypted to; repeatable")
    g.add_argument("--agentless-max-nodes", type=int, default=DEFAULT_MAX_NODES, metavar="N",
                   help=f"largest tree (nodes) one job reads (default {DEFAULT_MAX_NODES})")
    g.add_argument("--agentless-max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="BYTES",
                   help=f"most data one job reads (default {DEFAULT_MAX_BYTES})")
    g.add_argument("--agentless-gets", type=int, default=DEFAULT_GETS_PER_MESSAGE, metavar="N",
                   help=f"Gets outstanding at a time during a walk (default {DEFAULT_GETS_PER_MESSAGE})")


def agentless_config_from(args: argparse.Namespace) -> AgentlessConfig:
    for opt, value, low in (("--agentless-max-nodes", args.agentless_max_nodes, 1),
                            ("--agentless-max-bytes", args.agentless_max_bytes, 1024),
                            ("--agentless-gets", args.agentless_gets, 1)):
        if value < low:
            raise UsageError(f"{opt} {value}: give at least {low}")
    if args.recipient and args.server_key is None:
        raise UsageError("--recipient needs --server-key DIR (the key that signs the archives)")
    identity = server_identity(args.server_key, args.recipient) if args.server_key else None
    return AgentlessConfig(identity=identity, max_nodes=args.agentless_max_nodes,
                           max_bytes=args.agentless_max_bytes, gets_per_message=args.agentless_gets)
