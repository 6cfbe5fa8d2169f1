"""GlobalPlatform SCP03 for the admin channel, both sides (GP Card Spec v2.2 Amendment D, AES-128, S8 mode).

Static keys: a key set K-ENC, K-MAC, K-DEK (16 bytes each) with a key version.
Every derivation is the Amendment D KDF, NIST SP 800-108 in counter mode with
AES-CMAC as the PRF and this fixed-input layout:

    00*11 | constant | 00 | L (2 bytes, bits) | i (1 byte, from 01) | context

    card challenge (i has 10) = KDF(K-ENC, 02, 64, sequence counter (3) | applet AID)
    S-ENC = KDF(K-ENC, 04, 128, host challenge | card challenge)
    S-MAC = KDF(K-MAC, 06, 128, ...), S-RMAC = KDF(K-MAC, 07, 128, ...)
    card cryptogram = KDF(S-MAC, 00, 64, ...), host cryptogram = KDF(S-MAC, 01, 64, ...)

INITIALIZE UPDATE (80 50 kv 00, host challenge 8) answers
``INITIALIZE_UPDATE_RESPONSE_SCP03``: key diversification data 10, key
information (kv, 03, i), card challenge 8, card cryptogram 8, and the sequence
counter 3 when i has bit 10 (pseudo-random card challenge). EXTERNAL
AUTHENTICATE (84 82 SL 00) carries the host cryptogram and the first C-MAC,
over a zero chaining value. Security levels (P1): 01 C-MAC, 03 C-DECRYPTION +
C-MAC, 11 C-MAC + R-MAC, 13 C-DEC + C-MAC + R-MAC, 33 + R-ENCRYPTION.

After it, every command (modified CLA: channel and chaining bits cleared, 04 set):
    C-MAC = CMAC(S-MAC, chaining value | CLA INS P1 P2 | Lc | data')   (the chaining value becomes it)
    data' = AES-CBC(S-ENC, ICV, data | 80 00..) with ICV = AES(S-ENC, counter as 16 bytes), at C-DEC
where Lc counts data' and the 8 MAC bytes, coded as one byte below 256, else 00 hi lo, and
the encryption counter goes up by one for every command (also one without data, which
is not encrypted). A successful response (9000, 62xx, 63xx) at R-MAC carries
    R-MAC = CMAC(S-RMAC, chaining value | data' | SW)[:8], data' encrypted at R-ENC with
    ICV = AES(S-ENC, 80 | counter as 15 bytes); an empty response is not encrypted.
A wrong C-MAC, padding or length answers 6988 and closes the channel.

Published vectors checking this module: apdu_specs/vectors/scp03.json (tests/test_scp03.py).
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from construct import Bytes, If, Int8ub, Int24ub, Struct, this
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from .codec import struct_codec

KEY_LENGTH = 16
BLOCK = 16
MAC_LENGTH = 8              # S8 mode
CHALLENGE_LENGTH = 8
CRYPTOGRAM_LENGTH = 8
SEQUENCE_LENGTH = 3
SEQUENCE_MAX = (1 << 24) - 1
SCP_ID = 0x03

# the "i" parameter of SCP03 (key information, third byte)
I_PSEUDO_RANDOM = 0x10      # card challenge from the sequence counter (else random)
I_RMAC = 0x20               # R-MAC supported
I_RENC = 0x40               # R-ENC supported (with R-MAC)
I_KNOWN = I_PSEUDO_RANDOM | I_RMAC | I_RENC

# security levels (EXTERNAL AUTHENTICATE P1)
SL_CMAC = 0x01
SL_CDEC = 0x02
SL_RMAC = 0x10
SL_RENC = 0x20
LEVELS = (0x01, 0x03, 0x11, 0x13, 0x33)
LEVEL_NAMES = {0x01: "C-MAC", 0x03: "C-DEC C-MAC", 0x11: "C-MAC R-MAC", 0x13: "C-DEC C-MAC R-MAC",
               0x33: "C-DEC C-MAC R-MAC R-ENC"}

DERIVE_CARD_CRYPTOGRAM = 0x00
DERIVE_HOST_CRYPTOGRAM = 0x01
DERIVE_CARD_CHALLENGE = 0x02
DERIVE_S_ENC = 0x04
DERIVE_S_MAC = 0x06
DERIVE_S_RMAC = 0x07

SW_OK = 0x9000
SW_VERIFICATION_FAILED = 0x6300
SW_INCORRECT_SM_DATA = 0x6988


class ScpError(ValueError):
    """A secure-channel check failed; ``sw`` is what the card answers (6300 cryptogram, 6988 MAC/padding)."""

    def __init__(self, message: str, sw: int) -> None:
        super().__init__(message)
        self.sw = sw


# ---- primitives ---------------------------------------------------------------------------


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


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _cbc(key: bytes, icv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(icv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def pad80(data: bytes, block: int = BLOCK) -> bytes:
    """ISO/IEC 9797-1 method 2: 80 then zeros up to a whole block (always at least one byte)."""
    return data + b"\x80" + bytes(block - 1 - len(data) % block)


def unpad80(data: bytes, block: int = BLOCK) -> bytes | None:
    """The data before method-2 padding, or None when the padding is wrong. The
    scan does not stop early (its time depends on the length only)."""
    if not data or len(data) % block:
        return None
    end, found = -1, False
    for i in range(len(data) - 1, max(-1, len(data) - 1 - block), -1):
        byte = data[i]
        take = not found and byte == 0x80
        bad = not found and byte not in (0x00, 0x80)
        end = i if take else end
        found = found or take or bad
    if end < 0:
        return None
    return data[:end]


def _lc(length: int) -> bytes:
    return bytes([length]) if length < 256 else b"\x00" + length.to_bytes(2, "big")


def mac_cla(cla: int) -> int:
    """The CLA the C-MAC covers: logical channel and chaining bits cleared, 04 (GP secure messaging) set."""
    return (cla & ~0x13 & 0xFF) | 0x04


def _sw_protected(sw: int) -> bool:
    """Amendment D: only 9000 and the warnings 62xx/63xx get R-MAC (and R-ENC)."""
    return sw == SW_OK or sw >> 8 in (0x62, 0x63)


# ---- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """The static keys of the admin channel. repr never shows them."""

    enc: bytes = field(repr=False)
    mac: bytes = field(repr=False)
    dek: bytes = field(repr=False)
    version: int = 0        # 0 in a host's key set: any version the card has

    def __post_init__(self) -> None:
        for name in ("enc", "mac", "dek"):
            if len(getattr(self, name)) != KEY_LENGTH:
                raise ValueError(f"K-{name.upper()} is {KEY_LENGTH} bytes (AES-128)")
        if not 0 <= self.version <= 0xFF:
            raise ValueError(f"key version {self.version}: out of range 0-255")

    @classmethod
    def from_bytes(cls, keys: bytes, version: int = 0) -> KeySet:
        """48 bytes K-ENC|K-MAC|K-DEK, or 16 bytes used as all three (the single-key form)."""
        if len(keys) == KEY_LENGTH:
            return cls(keys, keys, keys, version)
        if len(keys) == 3 * KEY_LENGTH:
            return cls(keys[:16], keys[16:32], keys[32:], version)
        raise ValueError("an SCP03 key set is 48 bytes (K-ENC|K-MAC|K-DEK) or one 16-byte key")

    def to_bytes(self) -> bytes:
        return self.enc + self.mac + self.dek

    @property
    def single_key(self) -> bool:
        return self.enc == self.mac == self.dek


def pseudo_random_challenge(k_enc: bytes, sequence: int, aid: bytes) -> bytes:
    """The card challenge of i = 1x: KDF(K-ENC, 02, 64, sequence counter | AID)."""
    return kdf(k_enc, DERIVE_CARD_CHALLENGE, sequence.to_bytes(SEQUENCE_LENGTH, "big") + aid, 64)


@dataclass(frozen=True, repr=False)
class SessionKeys:
    s_enc: bytes
    s_mac: bytes
    s_rmac: bytes
    card_cryptogram: bytes
    host_cryptogram: bytes

    @classmethod
    def derive(cls, keys: KeySet, host_challenge: bytes, card_challenge: bytes) -> SessionKeys:
        if len(host_challenge) != CHALLENGE_LENGTH or len(card_challenge) != CHALLENGE_LENGTH:
            raise ValueError("host and card challenges are 8 bytes")
        context = host_challenge + card_challenge
        s_mac = kdf(keys.mac, DERIVE_S_MAC, context, 128)
        return cls(s_enc=kdf(keys.enc, DERIVE_S_ENC, context, 128), s_mac=s_mac,
                   s_rmac=kdf(keys.mac, DERIVE_S_RMAC, context, 128),
                   card_cryptogram=kdf(s_mac, DERIVE_CARD_CRYPTOGRAM, context, 64),
                   host_cryptogram=kdf(s_mac, DERIVE_HOST_CRYPTOGRAM, context, 64))

    def __repr__(self) -> str:
        return "SessionKeys(<redacted>)"


# ---- the INITIALIZE UPDATE layouts ----------------------------------------------------------

INITIALIZE_UPDATE_RESPONSE_SCP03 = struct_codec("INITIALIZE_UPDATE_RESPONSE_SCP03", Struct(
    "key_diversification" / Bytes(10),
    "key_version" / Int8ub,
    "scp_id" / Int8ub,
    "scp_i" / Int8ub,
    "card_challenge" / Bytes(CHALLENGE_LENGTH),
    "card_cryptogram" / Bytes(CRYPTOGRAM_LENGTH),
    "sequence_counter" / If(this.scp_i & I_PSEUDO_RANDOM, Int24ub),
), [("00" * 10 + "30" + "03" + "70" + "3EB51047495B249F" + "66C484C1D2EF1948" + "000002",
     {"key_diversification": b"\x00" * 10, "key_version": 0x30, "scp_id": 3, "scp_i": 0x70,
      "card_challenge": bytes.fromhex("3EB51047495B249F"), "card_cryptogram": bytes.fromhex("66C484C1D2EF1948"),
      "sequence_counter": 2}),
    ("00" * 10 + "01" + "03" + "60" + "AA" * 8 + "BB" * 8,
     {"key_diversification": b"\x00" * 10, "key_version": 1, "scp_id": 3, "scp_i": 0x60,
      "card_challenge": b"\xaa" * 8, "card_cryptogram": b"\xbb" * 8, "sequence_counter": None})])


def strongest_level(scp_i: int) -> int:
    """The strongest security level a card announcing ``scp_i`` supports."""
    if scp_i & I_RENC and scp_i & I_RMAC:
        return 0x33
    if scp_i & I_RMAC:
        return 0x13
    return 0x03


def level_supported(level: int, scp_i: int) -> bool:
    if level not in LEVELS:
        return False
    if level & SL_RENC and not (scp_i & I_RENC and scp_i & I_RMAC):
        return False
    return not (level & SL_RMAC and not scp_i & I_RMAC)


# ---- the channel ----------------------------------------------------------------------------


class SecureChannel:
    """One SCP03 session of either side: created with the challenges of an
    INITIALIZE UPDATE, open once EXTERNAL AUTHENTICATE succeeded (``level`` set).
    Holds the session keys, the MAC chaining value and the encryption counter."""

    def __init__(self, keys: KeySet, host_challenge: bytes, card_challenge: bytes) -> None:
        self._keys = SessionKeys.derive(keys, host_challenge, card_challenge)
        self.card_cryptogram = self._keys.card_cryptogram
        self.host_cryptogram = self._keys.host_cryptogram
        self.level: int | None = None
        self._chain = bytes(BLOCK)
        self._counter = 0

    def __repr__(self) -> str:
        return f"SecureChannel(level={self.level})"

    @property
    def is_open(self) -> bool:
        return self.level is not None

    def _c_mac(self, cla: int, ins: int, p1: int, p2: int, payload: bytes) -> bytes:
        header = bytes([mac_cla(cla), ins, p1, p2]) + _lc(len(payload) + MAC_LENGTH)
        return cmac(self._keys.s_mac, self._chain + header + payload)

    def _icv(self, response: bool) -> bytes:
        block = self._counter.to_bytes(BLOCK, "big")
        if response:
            block = b"\x80" + block[1:]
        return _aes_block(self._keys.s_enc, block)

    # -- EXTERNAL AUTHENTICATE ------------------------------------------------------------

    def external_authenticate(self, level: int, cla: int = 0x84) -> bytes:
        """Host: the EXTERNAL AUTHENTICATE data (host cryptogram, C-MAC); the
        channel is open at ``level`` once the card answers 9000."""
        if level not in LEVELS:
            raise ValueError(f"security level {level:02X}: not one of " + ", ".join(f"{v:02X}" for v in LEVELS))
        self._chain = bytes(BLOCK)
        self._chain = self._c_mac(cla, 0x82, level, 0, self.host_cryptogram)
        self.level, self._counter = level, 0
        return self.host_cryptogram + self._chain[:MAC_LENGTH]

    def check_external_authenticate(self, cla: int, level: int, p2: int, data: bytes) -> None:
        """Card: check the host cryptogram (6300) then the C-MAC (6988), both in
        constant time; opens the channel at ``level``. The caller checks P1/P2/length first."""
        cryptogram, mac = data[:CRYPTOGRAM_LENGTH], data[CRYPTOGRAM_LENGTH:]
        if not hmac.compare_digest(cryptogram, self.host_cryptogram):
            raise ScpError("host cryptogram wrong", SW_VERIFICATION_FAILED)
        expected = cmac(self._keys.s_mac, bytes(BLOCK) + bytes([mac_cla(cla), 0x82, level, p2])
                        + _lc(len(data)) + cryptogram)
        if not hmac.compare_digest(expected[:MAC_LENGTH], mac):
            raise ScpError("EXTERNAL AUTHENTICATE C-MAC wrong", SW_INCORRECT_SM_DATA)
        self._chain, self.level, self._counter = expected, level, 0

    def _need_open(self) -> int:
        if self.level is None:
            raise ValueError("the secure channel is not open: EXTERNAL AUTHENTICATE first")
        return self.level

    # -- host side ----------------------------------------------------------------------------

    def wrap_command(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        """Host: the command data to send (encrypted at C-DEC) followed by its C-MAC."""
        level = self._need_open()
        self._counter += 1
        payload = data
        if level & SL_CDEC and data:
            payload = _cbc(self._keys.s_enc, self._icv(False), pad80(data), True)
        self._chain = self._c_mac(cla, ins, p1, p2, payload)
        return payload + self._chain[:MAC_LENGTH]

    def unwrap_response(self, data: bytes, sw: int) -> bytes:
        """Host: check the R-MAC and decrypt (R-ENC); ScpError when the R-MAC is wrong."""
        level = self._need_open()
        if not level & SL_RMAC or not _sw_protected(sw):
            return data
        if len(data) < MAC_LENGTH:
            raise ScpError("response without its R-MAC", SW_INCORRECT_SM_DATA)
        body, mac = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
        expected = cmac(self._keys.s_rmac, self._chain + body + sw.to_bytes(2, "big"))
        if not hmac.compare_digest(expected[:MAC_LENGTH], mac):
            raise ScpError("R-MAC wrong", SW_INCORRECT_SM_DATA)
        if level & SL_RENC and body:
            if len(body) % BLOCK:
                raise ScpError("R-ENC data not a whole number of blocks", SW_INCORRECT_SM_DATA)
            plain = unpad80(_cbc(self._keys.s_enc, self._icv(True), body, False))
            if plain is None:
                raise ScpError("R-ENC padding wrong", SW_INCORRECT_SM_DATA)
            return plain
        return body

    # -- card side ----------------------------------------------------------------------------

    def unwrap_command(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        """Card: check the C-MAC and decrypt (C-DEC); the plain data. ScpError
        (6988) for a missing or wrong MAC, bad length or padding: the caller closes."""
        level = self._need_open()
        self._counter += 1
        if len(data) < MAC_LENGTH:
            raise ScpError("C-MAC missing", SW_INCORRECT_SM_DATA)
        payload, mac = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
        expected = self._c_mac(cla, ins, p1, p2, payload)
        if not hmac.compare_digest(expected[:MAC_LENGTH], mac):
            raise ScpError("C-MAC wrong", SW_INCORRECT_SM_DATA)
        self._chain = expected
        if level & SL_CDEC and payload:
            if len(payload) % BLOCK:
                raise ScpError("C-DEC data not a whole number of blocks", SW_INCORRECT_SM_DATA)
            plain = unpad80(_cbc(self._keys.s_enc, self._icv(False), payload, False))
            if plain is None:
                raise ScpError("C-DEC padding wrong", SW_INCORRECT_SM_DATA)
            return plain
        return payload

    def wrap_response(self, data: bytes, sw: int = SW_OK) -> bytes:
        """Card: the response data with R-ENC and R-MAC per the level (none on an error SW)."""
        level = self._need_open()
        if not level & SL_RMAC or not _sw_protected(sw):
            return data
        body = data
        if level & SL_RENC and data:
            body = _cbc(self._keys.s_enc, self._icv(True), pad80(data), True)
        return body + cmac(self._keys.s_rmac, self._chain + body + sw.to_bytes(2, "big"))[:MAC_LENGTH]

