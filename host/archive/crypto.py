"""Archive cryptography: chain keys, chunk ids, chunk encryption, key wrapping.

- A chain (a full backup and the incrementals made from it) has one random
  64-byte secret: data key (32) | chunk-id key (32). It is wrapped for each
  recipient with HPKE (RFC 9180) base mode: DHKEM(P-256, HKDF-SHA256),
  HKDF-SHA256, AES-256-GCM; info binds the chain id and the recipient key id.
- chunk id = HMAC-SHA256(chunk-id key, plaintext chunk): equal plaintexts get
  equal ids (dedup), and an id says nothing to someone without the key.
- A chunk is stored as nonce(12) | AES-256-GCM ciphertext | tag(16); the key is
  HKDF(data key, "enc"). The nonce is synthetic (SIV-style): HMAC(nonce key,
  chunk id | payload)[:12] with nonce key = HKDF(data key, "nonce"). The same
  chunk therefore always encrypts to the same bytes (a resumed or re-exported
  backup is byte-identical, and dedup by hash works), and a nonce can only
  repeat when the whole payload repeats, in which case the ciphertext repeats
  too and nothing leaks beyond the equality the chunk id already shows. A
  random nonce would be as safe per chunk but would break that determinism.
- The AAD binds the format label, the chain id and the chunk id: a chunk cannot
  be passed off under another id, and a chunk of another chain does not decrypt.
- tree MAC (host section v2) = HMAC-SHA256(HKDF(data key, "tree-mac"), canonical
  plaintext). Version 1 stored a bare SHA-256 of the plaintext in the clear
  (signed, unencrypted) manifest: anyone holding the archive could confirm a
  guessed tree offline, e.g. brute-force one low-entropy leaf of an otherwise
  known tree. v1 archives stay readable.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from host.errors import IntegrityError

NONCE_LENGTH = 12
TAG_LENGTH = 16
STORED_OVERHEAD = NONCE_LENGTH + TAG_LENGTH
STORED_OVERHEAD_V4 = TAG_LENGTH           # host section v4: the nonce is derived, not stored
TREE_MAC_V4_LENGTH = 16
CHAIN_ID_LENGTH = 16
CHAIN_SECRET_LENGTH = 64
_AAD_PREFIX = b"simvault/chunk/v1"
_AAD_PREFIX_V4 = b"simvault/chunk/v4"
_WRAP_INFO = b"simvault/chain-keys/v1"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True)
class ChainKeys:
    """The secret keys of one backup chain. Never log or serialise unwrapped."""

    chain_id: bytes
    data_key: bytes = field(repr=False)
    id_key: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> ChainKeys:
        return cls(os.urandom(CHAIN_ID_LENGTH), os.urandom(32), os.urandom(32))

    @classmethod
    def from_secret(cls, chain_id: bytes, secret: bytes) -> ChainKeys:
        if len(secret) != CHAIN_SECRET_LENGTH or len(chain_id) != CHAIN_ID_LENGTH:
            raise IntegrityError("wrapped chain keys have the wrong length: damaged backup")
        return cls(chain_id, secret[:32], secret[32:])

    @property
    def secret(self) -> bytes:
        return self.data_key + self.id_key

    def __post_init__(self) -> None:
        object.__setattr__(self, "_enc", AESGCM(_hkdf(self.data_key, b"simvault/enc/v1")))
        object.__setattr__(self, "_nonce_key", _hkdf(self.data_key, b"simvault/nonce/v1"))
        object.__setattr__(self, "_tree_key", _hkdf(self.data_key, b"simvault/tree-mac/v2"))
        object.__setattr__(self, "_nonce_key_v4", _hkdf(self.data_key, b"simvault/nonce/v4"))

    def tree_mac(self, plaintext: bytes) -> bytes:
        """Keyed digest of the whole canonical plaintext (host section v2)."""
        return hmac.new(self._tree_key, plaintext, hashlib.sha256).digest()  # type: ignore[attr-defined]

    def chunk_id(self, plaintext: bytes) -> bytes:
        return hmac.new(self.id_key, plaintext, hashlib.sha256).digest()

    def _aad(self, chunk_id: bytes) -> bytes:
        return _AAD_PREFIX + self.chain_id + chunk_id

    def seal(self, chunk_id: bytes, payload: bytes) -> bytes:
        """nonce | ciphertext | tag of payload (deterministic, see module doc)."""
        nonce = hmac.new(self._nonce_key, chunk_id + payload, hashlib.sha256).digest()[:NONCE_LENGTH]  # type: ignore[attr-defined]
        return nonce + self._enc.encrypt(nonce, payload, self._aad(chunk_id))  # type: ignore[attr-defined]

    def open(self, chunk_id: bytes, stored: bytes) -> bytes:
        if len(stored) < STORED_OVERHEAD:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is too short: damaged backup")
        try:
            return self._enc.decrypt(stored[:NONCE_LENGTH], stored[NONCE_LENGTH:],  # type: ignore[attr-defined]
                                     self._aad(chunk_id))
        except InvalidTag:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} fails its GCM tag: tampered "
                                 "or from another backup chain") from None

    # ---- host section v4 (format 3): the nonce is a function of the chunk id ---------------
    # The chunk id is already an HMAC of the piece and its place (segment, piece index), so
    # it is the synthetic IV: nonce = HMAC(nonce key v4, chunk id)[:12]. Equal ids mean an
    # equal piece (same ciphertext, nothing new leaks); different pieces get different ids
    # and so different nonces. The nonce need not be stored: 12 bytes less per chunk.

    def _nonce_v4(self, chunk_id: bytes) -> bytes:
        return hmac.new(self._nonce_key_v4, chunk_id, hashlib.sha256).digest()[:NONCE_LENGTH]  # type: ignore[attr-defined]

    def seal_v4(self, chunk_id: bytes, payload: bytes) -> bytes:
        """ciphertext | tag of payload; the nonce is derived from chunk_id (not stored)."""
        return self._enc.encrypt(self._nonce_v4(chunk_id), payload,  # type: ignore[attr-defined]
                                 _AAD_PREFIX_V4 + self.chain_id + chunk_id)

    def open_v4(self, chunk_id: bytes, stored: bytes) -> bytes:
        if len(stored) < STORED_OVERHEAD_V4:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is too short: damaged backup")
        try:
            return self._enc.decrypt(self._nonce_v4(chunk_id), stored,  # type: ignore[attr-defined]
                                     _AAD_PREFIX_V4 + self.chain_id + chunk_id)
        except InvalidTag:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} fails its GCM tag: tampered "
                                 "or from another backup chain") from None

    def tree_mac_v4(self, plaintext: bytes) -> bytes:
        """The tree MAC of host section v4: HMAC-SHA256 truncated to 128 bits."""
        return self.tree_mac(plaintext)[:TREE_MAC_V4_LENGTH]


def wrap_info(chain_id: bytes, recipient_key_id: bytes) -> bytes:
    return _WRAP_INFO + chain_id + recipient_key_id


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
