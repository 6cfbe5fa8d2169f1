"""Status words of the simvault applet and of the ISO 7816-4 runtime.

A status word is an ``int`` (0x9000). ``describe(sw)`` gives its name and
meaning; the host turns an error SW into a typed exception with that text.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class SW(IntEnum):
    OK = 0x9000
    # Warnings / counters
    VERIFICATION_FAILED = 0x6300
    # Execution errors
    MEMORY_FAILURE = 0x6581
    # Checking errors
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883
    CHAINING_NOT_SUPPORTED = 0x6884
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    INCORRECT_SM_DATA = 0x6988
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    DATA_ALREADY_EXISTS = 0x6A89
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00
    # simvault, within ISO's '66XX' security-related range
    SIGNATURE_INVALID = 0x6688
    CHUNK_HASH_MISMATCH = 0x6689
    SEQUENCE_ROLLBACK = 0x668A
    CHUNK_TABLE_FULL = 0x668B


@dataclass(frozen=True)
class SwInfo:
    name: str
    meaning: str


_MEANINGS: dict[int, str] = {
    SW.OK: "success",
    SW.VERIFICATION_FAILED: "verification failed (secure channel cryptogram wrong)",
    SW.MEMORY_FAILURE: "memory failure: a write to the card's memory failed",
    SW.WRONG_LENGTH: "wrong length (Lc or Le)",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    SW.LAST_COMMAND_OF_CHAIN_EXPECTED: "last command of the chain expected",
    SW.CHAINING_NOT_SUPPORTED: "command chaining not supported for this command",
    SW.SECURITY_STATUS_NOT_SATISFIED: "security status not satisfied: verify the PIN (or open the admin channel) first",
    SW.AUTH_METHOD_BLOCKED: "authentication method blocked: unblock the PIN with the PUK "
                            "(a locked PUK or admin key is final)",
    SW.REFERENCE_DATA_NOT_USABLE: "reference data not usable: the signing key is not a trust anchor on this card",
    SW.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied (no backup session, or manifest incomplete)",
    SW.COMMAND_NOT_ALLOWED: "command not allowed: select the simvault applet first",
    SW.INCORRECT_SM_DATA: "incorrect secure messaging data: C-MAC wrong or missing",
    SW.WRONG_DATA: "incorrect data field (malformed command data or manifest)",
    SW.FUNCTION_NOT_SUPPORTED: "function not supported",
    SW.FILE_NOT_FOUND: "application not found",
    SW.NOT_ENOUGH_MEMORY: "card full: not enough free bytes on the card: delete a backup",
    SW.INCORRECT_P1P2: "incorrect P1-P2",
    SW.REFERENCED_DATA_NOT_FOUND: "referenced data not found (no such backup, chunk or key)",
    SW.DATA_ALREADY_EXISTS: "data already exists on the card",
    SW.WRONG_P1P2: "wrong parameters P1-P2",
    SW.INS_NOT_SUPPORTED: "instruction not supported",
    SW.CLA_NOT_SUPPORTED: "class not supported",
    SW.NO_PRECISE_DIAGNOSIS: "no precise diagnosis (internal card error)",
    SW.SIGNATURE_INVALID: "manifest signature invalid: tampered or signed by another key",
    SW.CHUNK_HASH_MISMATCH: "a chunk on the card does not match the manifest hash: tampered or foreign chunk",
    SW.SEQUENCE_ROLLBACK: "sequence number not above the newest committed backup: rollback refused",
    SW.CHUNK_TABLE_FULL: "card full: no free chunk entry on the card (its bytes may still be free): delete a backup",
}


def describe(sw: int) -> SwInfo:
    """Name and meaning of a status word, including the parametrised ones."""
    if sw in _MEANINGS:
        return SwInfo(SW(sw).name, _MEANINGS[sw])
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return SwInfo("BYTES_AVAILABLE", f"{sw2 or 256} response bytes available (GET RESPONSE)")
    if sw1 == 0x6C:
        return SwInfo("WRONG_LE", f"wrong Le: {sw2 or 256} bytes available, re-issue with that Le")
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return SwInfo("WRONG_PIN", f"wrong PIN or PUK, {sw2 & 0x0F} {'try' if sw2 & 0x0F == 1 else 'tries'} left")
    return SwInfo(f"SW_{sw:04X}", "unknown status word")


def name(sw: int) -> str:
    return describe(sw).name


def is_documented(sw: int) -> bool:
    """True for every status word the card may answer (used by fuzz tests)."""
    sw1, sw2 = sw >> 8, sw & 0xFF
    return sw in _MEANINGS or sw1 in (0x61, 0x6C) or (sw1 == 0x63 and sw2 & 0xF0 == 0xC0)


def pin_tries(sw: int) -> int | None:
    """Tries left from a 63Cx answer, else None."""
    if sw >> 4 == 0x63C:
        return sw & 0x0F
    return None
