"""SCP03-style secure channel for the admin commands (GlobalPlatform Amd. D, C-MAC level).

One static 16-byte AES key K serves as both K-ENC and K-MAC (documented
simplification: the card keeps one admin key). Session keys and cryptograms are
derived with the SCP03 KDF (NIST SP 800-108 counter mode over AES-CMAC):

    data = 00*11 | constant | 00 | L (2 bytes, bits) | 01 | host_challenge | card_challenge
    card cryptogram = KDF(S-MAC, 0x00, 64 bits), host cryptogram = KDF(S-MAC, 0x01, 64 bits)
    S-ENC = KDF(K, 0x04, 128 bits), S-MAC = KDF(K, 0x06, 128 bits)

Every command after EXTERNAL AUTHENTICATE (CLA 84) carries an 8-byte C-MAC:
    chain = CMAC(S-MAC, chain | CLA INS P1 P2 | Lc | data), C-MAC = chain[:8]
with Lc counting the MAC, coded as one byte (< 256) or 00 hi lo. The chain starts at 16 zero bytes
and EXTERNAL AUTHENTICATE itself is the first MACed command.
"""
from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from . import constants as C

DERIVE_CARD_CRYPTOGRAM = 0x00
DERIVE_HOST_CRYPTOGRAM = 0x01
DERIVE_S_ENC = 0x04
DERIVE_S_MAC = 0x06


def cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def kdf(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        data = bytes(11) + bytes([constant, 0]) + bits.to_bytes(2, "big") + bytes([counter]) + context
        out += cmac(key, data)
        counter += 1
    return out[:bits // 8]


def _lc(length: int) -> bytes:
    return bytes([length]) if length < 256 else b"\x00" + length.to_bytes(2, "big")


class SecureChannel:
    """Session state of one side (card or host); both compute the same values."""

    def __init__(self, static_key: bytes, host_challenge: bytes, card_challenge: bytes) -> None:
        if len(static_key) != C.SCP_KEY_LENGTH:
            raise ValueError("the admin key is 16 bytes (AES-128)")
        context = host_challenge + card_challenge
        self.s_mac = kdf(static_key, DERIVE_S_MAC, context, 128)
        self.s_enc = kdf(static_key, DERIVE_S_ENC, context, 128)
        self.card_cryptogram = kdf(self.s_mac, DERIVE_CARD_CRYPTOGRAM, context, 64)
        self.host_cryptogram = kdf(self.s_mac, DERIVE_HOST_CRYPTOGRAM, context, 64)
        self._chain = bytes(16)

    def _mac(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        header = bytes([cla | C.CLA_SM_BIT, ins, p1, p2]) + _lc(len(data) + C.SCP_MAC_LENGTH)
        return cmac(self.s_mac, self._chain + header + data)

    def wrap(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        """Host side: data followed by its C-MAC; advances the chain."""
        self._chain = self._mac(cla, ins, p1, p2, data)
        return data + self._chain[:C.SCP_MAC_LENGTH]

    def unwrap(self, cla: int, ins: int, p1: int, p2: int, data_with_mac: bytes) -> bytes | None:
        """Card side: the data without its C-MAC, or None when the MAC is wrong (chain unchanged)."""
        if len(data_with_mac) < C.SCP_MAC_LENGTH:
            return None
        data, mac = data_with_mac[:-C.SCP_MAC_LENGTH], data_with_mac[-C.SCP_MAC_LENGTH:]
        expected = self._mac(cla, ins, p1, p2, data)
        if not hmac.compare_digest(expected[:C.SCP_MAC_LENGTH], mac):
            return None
        self._chain = expected
        return data
