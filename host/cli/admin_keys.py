"""The card's admin key set file (GlobalPlatform SCP03 K-ENC, K-MAC, K-DEK and key version)
and the admin options of the card commands (host.cli.card re-exports them).

    read_admin_keys(path, create=False, single_key=False) -> apdu_specs.scp.KeySet
    write_admin_keys(path, keys)     a new 0600 JSON file, never overwriting one
    add_admin_options(parser)        --admin-key-file, --scp-level
    open_admin(card, args)           an SCP03 session at the level asked for (default: strongest)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from host.cli.card_link import ADMIN_KEY_ENV
from host.errors import UsageError

KEY_FILE_FORMAT = "simvault SCP03 key set"
ADMIN_KEY_FILE_HELP = (f"the card's admin key set (default ${ADMIN_KEY_ENV}): JSON {{\"format\": \"{KEY_FILE_FORMAT}\", "
                       "\"key_version\": 1, \"enc\", \"mac\", \"dek\": 32 hex digits each}; an old file of one "
                       "16-byte key (32 hex digits) is used as K-ENC, K-MAC and K-DEK alike, key version any")


def _admin_key_path(path: Path | None) -> Path:
    if path is None:
        env = os.environ.get(ADMIN_KEY_ENV)
        if not env:
            raise UsageError(f"no admin key set: pass --admin-key-file FILE (or set ${ADMIN_KEY_ENV})")
        path = Path(env)
    return path


def write_admin_keys(path: Path, keys) -> None:  # keys: apdu_specs.scp.KeySet
    """A new key file (mode 0600; an existing file is never overwritten)."""
    doc = {"format": KEY_FILE_FORMAT, "key_version": keys.version, "enc": keys.enc.hex().upper(),
           "mac": keys.mac.hex().upper(), "dek": keys.dek.hex().upper()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(doc, indent=1) + "\n")


def read_admin_keys(path: Path | None, create: bool = False, single_key: bool = False):  # -> KeySet
    """The admin key set in ``path`` (or $SIMVAULT_ADMIN_KEY_FILE). ``create``: a
    missing file is generated with fresh random keys (K-ENC = K-MAC = K-DEK when
    ``single_key``: the Python emulator's store keeps one key), key version 1."""
    from apdu_specs.scp import KEY_LENGTH, KeySet
    path = _admin_key_path(path)
    if not path.exists():
        if not create:
            raise UsageError(f"admin key file {path} does not exist")
        key = os.urandom(KEY_LENGTH)
        keys = KeySet(key, key, key, 1) if single_key else KeySet(key, os.urandom(KEY_LENGTH),
                                                                    os.urandom(KEY_LENGTH), 1)
        write_admin_keys(path, keys)
        print(f"admin key set generated in {path} (keep it safe: it administers the card)", file=sys.stderr)
        return keys
    raw = path.read_bytes()
    bad = (f"{path} is not an admin key file: expected JSON {{\"format\": \"{KEY_FILE_FORMAT}\", "
           "\"key_version\", \"enc\", \"mac\", \"dek\"} or one 16-byte key (32 hex digits)")
    text = raw.decode("ascii", errors="replace").strip()
    if not text.startswith("{") or len(raw) == KEY_LENGTH:     # the old form: one AES key, hex or raw
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = raw
        if len(key) != KEY_LENGTH:
            raise UsageError(bad)
        return KeySet(key, key, key, 0)
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
            raise ValueError("format")
        version = doc.get("key_version", 0)
        if not isinstance(version, int) or not 0 <= version <= 0x7F:
            raise UsageError(f"{path}: key_version must be 0 (any) to 127")
        return KeySet(*(bytes.fromhex(str(doc[k])) for k in ("enc", "mac", "dek")), version)
    except UsageError:
        raise
    except (ValueError, KeyError, TypeError):
        raise UsageError(bad + "; enc, mac and dek are 32 hex digits each") from None


def emulator_admin_key(keys) -> bytes:  # keys: KeySet
    """What card.emulator.personalise stores: its store keeps one 16-byte key."""
    return keys.enc if keys.single_key else keys.to_bytes()


def open_admin(card, args: argparse.Namespace) -> None:
    level = getattr(args, "scp_level", None)
    card.open_admin(read_admin_keys(args.admin_key_file), None if level is None else int(level, 16))


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin-key-file", type=Path, default=None, metavar="FILE", help=ADMIN_KEY_FILE_HELP)
    parser.add_argument("--scp-level", choices=("01", "03", "11", "13", "33"), default=None,
                        help="SCP03 security level: 01 C-MAC, 03 +C-DECRYPTION, 11/13 +R-MAC, 33 +R-ENCRYPTION "
                             "(default: the strongest the card offers)")
