package org.simvault.card;

/** Status words of apdu_specs/README.md that ISO7816 does not name. */
final class Sw {
    private Sw() {
    }

    /** Short.MAX_VALUE without java.lang.Short (not in the Java Card API). */
    static final short MAX_SHORT = 32767;

    static final short OK = (short) 0x9000;
    static final short BYTES_AVAILABLE = 0x6100;
    static final short VERIFICATION_FAILED = 0x6300;
    static final short WRONG_PIN = 0x63C0;
    static final short MEMORY_FAILURE = 0x6581;
    static final short WRONG_LENGTH = 0x6700;
    static final short LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881;
    static final short SECURE_MESSAGING_NOT_SUPPORTED = 0x6882;
    static final short LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883;
    static final short CHAINING_NOT_SUPPORTED = 0x6884;
    static final short SECURITY_STATUS_NOT_SATISFIED = 0x6982;
    static final short AUTH_METHOD_BLOCKED = 0x6983;
    static final short REFERENCE_DATA_NOT_USABLE = 0x6984;
    static final short CONDITIONS_NOT_SATISFIED = 0x6985;
    static final short COMMAND_NOT_ALLOWED = 0x6986;
    static final short INCORRECT_SM_DATA = 0x6988;
    static final short WRONG_DATA = 0x6A80;
    static final short FILE_NOT_FOUND = 0x6A82;
    static final short NOT_ENOUGH_MEMORY = 0x6A84;
    static final short INCORRECT_P1P2 = 0x6A86;
    static final short REFERENCED_DATA_NOT_FOUND = 0x6A88;
    static final short DATA_ALREADY_EXISTS = 0x6A89;
    static final short INS_NOT_SUPPORTED = 0x6D00;
    static final short CLA_NOT_SUPPORTED = 0x6E00;
    static final short NO_PRECISE_DIAGNOSIS = 0x6F00;
    static final short SIGNATURE_INVALID = 0x6688;
    static final short CHUNK_HASH_MISMATCH = 0x6689;
    static final short SEQUENCE_ROLLBACK = 0x668A;
    static final short CHUNK_TABLE_FULL = 0x668B;
}
