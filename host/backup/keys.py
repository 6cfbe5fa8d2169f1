"""Keys: the device's and servers' EC P-256 key pairs, signers, and the trust store.

A key directory (``--key DIR``, default $SIMVAULT_HOME or ~/.config/simvault) holds

    <name>.sign.pem      PKCS#8 PEM private key for manifest signatures (0600)
    <name>.enc.pem       PKCS#8 PEM private key that chain keys are wrapped to (0600)
    <name>.sign.pub.pem  <name>.enc.pub.pem   their public keys
    trusted/<keyid>.pem  public keys whose signatures a restore accepts
    recipients/<keyid>.pem  extra public encryption keys every backup is wrapped for
                         (e.g. the DM server's)

Signing and key wrapping use separate key pairs (no key serves two algorithms).
A key id is SHA-256 of the uncompressed point, first 8 bytes (apdu_specs).
``Signer`` and ``Decryptor`` are protocols: a key in a file today, in a card or an
HSM later.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from apdu_specs.manifest import key_id as point_key_id
from apdu_specs.manifest import public_point, sign_raw
from host.errors import IntegrityError, KeyFileError, UsageError

HPKE_SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def default_key_dir() -> Path:
    env = os.environ.get("SIMVAULT_HOME")
    return Path(env) if env else Path.home() / ".config" / "simvault"


class Signer(Protocol):
    key_id: bytes
    public_point: bytes

    def sign(self, message: bytes) -> bytes:
        """Raw ECDSA P-256/SHA-256 signature r||s (64 bytes)."""


class Decryptor(Protocol):
    key_id: bytes

    def unwrap(self, blob: bytes, info: bytes) -> bytes:
        """HPKE-open a wrapped secret addressed to this key; IntegrityError if it fails."""


@dataclass(frozen=True)
class Recipient:
    """A public encryption key that chain keys are wrapped to."""

    public_point: bytes

    @property
    def key_id(self) -> bytes:
        return point_key_id(self.public_point)

    def wrap(self, secret: bytes, info: bytes) -> bytes:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.public_point)
        return HPKE_SUITE.encrypt(secret, key, info=info)


class FileSigner:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self.public_point = public_point(private_key.public_key())
        self.key_id = point_key_id(self.public_point)

    def sign(self, message: bytes) -> bytes:
        return sign_raw(self._key, message)

    def __repr__(self) -> str:
        return f"FileSigner(key_id={self.key_id.hex()})"


class FileDecryptor:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self.recipient = Recipient(public_point(private_key.public_key()))
        self.key_id = self.recipient.key_id

    def unwrap(self, blob: bytes, info: bytes) -> bytes:
        try:
            return HPKE_SUITE.decrypt(blob, self._key, info=info)
        except (InvalidTag, ValueError):  # wrong key, altered blob or info
            raise IntegrityError("wrapped backup keys do not open with this device key: "
                                 "tampered backup or another device's: restore it with the keys that "
                                 "made it") from None

    def __repr__(self) -> str:
        return f"FileDecryptor(key_id={self.key_id.hex()})"


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> None:
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_public(path: Path, point: bytes) -> None:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}; create one with 'simvault keys gen'") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise KeyFileError(f"key {path} is readable by others; chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise KeyFileError(f"key {path} is encrypted: give its passphrase (SIMVAULT_PASSPHRASE)") from None
    except ValueError:
        raise KeyFileError(f"key {path} is not a PEM PKCS#8 key or the passphrase is wrong: check "
                           "$SIMVAULT_PASSPHRASE, or make new keys with 'simvault keys gen'") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"key {path} is not an EC P-256 key")
    return key


def load_public_point(path: Path) -> bytes:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key: give a .pub.pem file (what 'simvault keys gen' "
                           "writes: device.sign.pub.pem)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path} is not an EC P-256 public key: give a .pub.pem file of 'simvault keys gen'")
    return public_point(key)


class TrustStore:
    """A directory of trusted public signing keys, one PEM per key id."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def add(self, point: bytes) -> bytes:
        self.directory.mkdir(parents=True, exist_ok=True)
        kid = point_key_id(point)
        _write_public(self.directory / f"{kid.hex()}.pem", point)
        return kid

    def get(self, key_id: bytes) -> bytes | None:
        path = self.directory / f"{key_id.hex()}.pem"
        if not path.exists():
            return None
        point = load_public_point(path)
        if point_key_id(point) != key_id:
            raise KeyFileError(f"trusted key {path} does not match its file name; remove it")
        return point

    def key_ids(self) -> list[bytes]:
        if not self.directory.is_dir():
            return []
        return sorted(bytes.fromhex(p.stem) for p in self.directory.glob("*.pem") if len(p.stem) == 16)


@dataclass
class Identity:
    """What a host needs to back up and restore: its keys, trust store and extra recipients."""

    name: str
    directory: Path
    signer: Signer
    decryptor: Decryptor
    recipient: Recipient

    @property
    def trust(self) -> TrustStore:
        return TrustStore(self.directory / "trusted")

    def extra_recipients(self) -> list[Recipient]:
        d = self.directory / "recipients"
        return [Recipient(load_public_point(p)) for p in sorted(d.glob("*.pem"))] if d.is_dir() else []

    def recipients(self) -> list[Recipient]:
        out = [self.recipient]
        out += [r for r in self.extra_recipients() if r.key_id != self.recipient.key_id]
        return out


def generate_identity(directory: Path, name: str = "device", passphrase: bytes | None = None) -> Identity:
    """Create the signing and encryption key pairs; trust our own signing key."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix" and directory.stat().st_mode & 0o077:
        os.chmod(directory, 0o700)   # an existing directory: private keys go in, close it
    for suffix in ("sign.pem", "enc.pem"):
        if (directory / f"{name}.{suffix}").exists():
            raise UsageError(f"{directory / (name + '.' + suffix)} exists; pick another --name or directory")
    sign_key = ec.generate_private_key(ec.SECP256R1())
    enc_key = ec.generate_private_key(ec.SECP256R1())
    _write_private(directory / f"{name}.sign.pem", sign_key, passphrase)
    _write_private(directory / f"{name}.enc.pem", enc_key, passphrase)
    _write_public(directory / f"{name}.sign.pub.pem", public_point(sign_key.public_key()))
    _write_public(directory / f"{name}.enc.pub.pem", public_point(enc_key.public_key()))
    TrustStore(directory / "trusted").add(public_point(sign_key.public_key()))
    return load_identity(directory, name, passphrase)


PASSPHRASE_ENV = "SIMVAULT_PASSPHRASE"


def passphrase_from_env() -> bytes | None:
    """The key files' passphrase from $SIMVAULT_PASSPHRASE (None when unset or empty)."""
    return os.environ.get(PASSPHRASE_ENV, "").encode() or None


def load_identity(directory: Path | None = None, name: str = "device",
                  passphrase: bytes | None = None) -> Identity:
    directory = Path(directory) if directory else default_key_dir()
    if passphrase is None:
        passphrase = passphrase_from_env()
    signer = FileSigner(load_private(directory / f"{name}.sign.pem", passphrase))
    decryptor = FileDecryptor(load_private(directory / f"{name}.enc.pem", passphrase))
    return Identity(name, directory, signer, decryptor, decryptor.recipient)


def load_decryptor(directory: Path | None = None, name: str = "device",
                   passphrase: bytes | None = None) -> FileDecryptor:
    """Only the encryption key: what verifying a backup needs besides the trust
    store (no signing key is read)."""
    directory = Path(directory) if directory else default_key_dir()
    if passphrase is None:
        passphrase = passphrase_from_env()
    return FileDecryptor(load_private(directory / f"{name}.enc.pem", passphrase))


def fingerprint(point: bytes) -> str:
    """SHA-256 of the point as colon-separated hex pairs (for reading out loud)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(point)
    return ":".join(f"{b:02X}" for b in digest.finalize()[:16])
