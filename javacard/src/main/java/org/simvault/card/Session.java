package org.simvault.card;

import javacard.framework.JCSystem;
import javacard.framework.Util;

/**
 * What a card keeps in RAM (card/applet.py AppletSession): the PIN-verified flag
 * and the command chain are cleared by SELECT, reset and power loss
 * (CLEAR_ON_DESELECT); the selection and the upload announced by BEGIN BACKUP survives a
 * re-SELECT but not a reset (CLEAR_ON_RESET), as in the emulator. The upload
 * itself (chunks, manifest bytes) is the Store's persistent, resumable session.
 */
final class Session {
    static final short CHAIN_MAX = 255;

    // flags[] (CLEAR_ON_DESELECT)
    private static final short F_PIN = 0;
    private static final short F_CHAIN = 1;      // a chain is open (header in chainHeader)
    private static final short F_SIZE = 2;

    private final byte[] flags;
    /** [0]: selected since power-up. CLEAR_ON_RESET: a failed SELECT of this AID (which the
     *  platform routes here as a selection) leaves the selection as it was, as in the emulator. */
    private final byte[] selected;
    /** CLA (chaining bit cleared) INS P1 P2 of the open chain. */
    private final byte[] chainHeader;
    /** Data of a chained non-streaming command, assembled here. */
    final byte[] chainData;
    /** [0] chain data length. */
    private final short[] chainLength;

    private final byte[] upload;                 // active | backup id (16)
    private final short[] uploadLength;          // announced manifest length

    Session() {
        flags = JCSystem.makeTransientByteArray(F_SIZE, JCSystem.CLEAR_ON_DESELECT);
        selected = JCSystem.makeTransientByteArray((short) 1, JCSystem.CLEAR_ON_RESET);
        chainHeader = JCSystem.makeTransientByteArray((short) 4, JCSystem.CLEAR_ON_DESELECT);
        chainData = JCSystem.makeTransientByteArray(CHAIN_MAX, JCSystem.CLEAR_ON_DESELECT);
        chainLength = JCSystem.makeTransientShortArray((short) 1, JCSystem.CLEAR_ON_DESELECT);
        upload = JCSystem.makeTransientByteArray((short) 17, JCSystem.CLEAR_ON_RESET);
        uploadLength = JCSystem.makeTransientShortArray((short) 1, JCSystem.CLEAR_ON_RESET);
    }

    boolean selected() {
        return selected[0] != 0;
    }

    /** SELECT (again): PIN and chain forgotten; the announced upload stays. */
    void select() {
        selected[0] = 1;
        forget();
    }

    /** Deselected, or a SELECT refused: PIN and chain forgotten. */
    void forget() {
        flags[F_PIN] = 0;
        endChain();
    }

    boolean pinVerified() {
        return flags[F_PIN] != 0;
    }

    void setPinVerified(boolean v) {
        flags[F_PIN] = v ? (byte) 1 : (byte) 0;
    }

    // ---- command chaining --------------------------------------------------------------

    boolean chainOpen() {
        return flags[F_CHAIN] != 0;
    }

    /** Whether header buf[0..4) (chaining bit ignored) is the open chain's. */
    boolean chainMatches(byte[] buf) {
        return (byte) (buf[0] & (byte) 0xEF) == chainHeader[0]
                && Util.arrayCompare(buf, (short) 1, chainHeader, (short) 1, (short) 3) == 0;
    }

    void openChain(byte[] buf) {
        Util.arrayCopyNonAtomic(buf, (short) 0, chainHeader, (short) 0, (short) 4);
        chainHeader[0] &= (byte) 0xEF;
        chainLength[0] = 0;
        flags[F_CHAIN] = 1;
    }

    void endChain() {
        flags[F_CHAIN] = 0;
        chainLength[0] = 0;
    }

    short chainLength() {
        return chainLength[0];
    }

    /** Append part data; false when the chain would outgrow CHAIN_MAX. */
    boolean appendChain(byte[] src, short off, short len) {
        short have = chainLength[0];
        if (len > (short) (CHAIN_MAX - have)) {
            return false;
        }
        Util.arrayCopyNonAtomic(src, off, chainData, have, len);
        chainLength[0] = (short) (have + len);
        return true;
    }

    // ---- the announced upload ---------------------------------------------------------

    boolean uploadActive() {
        return upload[0] != 0;
    }

    boolean uploadIs(byte[] id, short off) {
        return upload[0] != 0 && Util.arrayCompare(upload, (short) 1, id, off, Store.BACKUP_ID_LENGTH) == 0;
    }

    short uploadLength() {
        return uploadLength[0];
    }

    void setUpload(byte[] id, short off, short manifestLength) {
        Util.arrayCopyNonAtomic(id, off, upload, (short) 1, Store.BACKUP_ID_LENGTH);
        uploadLength[0] = manifestLength;
        upload[0] = 1;
    }

    void clearUpload() {
        upload[0] = 0;
        uploadLength[0] = 0;
    }
}
