package org.simvault.card;

import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.OwnerPIN;
import javacard.framework.Util;
import javacard.security.MessageDigest;

/**
 * PIN, PUK and trust anchors.
 *
 * <p>PIN and PUK are OwnerPINs holding the whole 8-byte PIN block (digits padded
 * with FF: one block per PIN, so comparing blocks compares PINs). OwnerPIN is the
 * platform's tear-safe counter: it decrements the try counter before it compares
 * and outside any transaction, and a match restores it (the emulator's order in
 * card/store_credentials.py).
 */
final class Credentials {
    static final byte PIN_TRIES = 3;
    static final byte PUK_TRIES = 10;
    static final byte MAX_ANCHORS = 8;
    static final short KEY_ID_LENGTH = 8;
    static final short BLOCK_LENGTH = 8;

    private final OwnerPIN pin;
    private final OwnerPIN puk;
    private final byte[] anchorUsed;
    private final byte[] anchorIds;
    private final byte[] anchorPoints;
    private final MessageDigest sha;
    private final byte[] hash;           // transient, 32

    Credentials(Perso p, MessageDigest sha, Ecdsa ec) {
        this.sha = sha;
        pin = new OwnerPIN(PIN_TRIES, (byte) BLOCK_LENGTH);
        puk = new OwnerPIN(PUK_TRIES, (byte) BLOCK_LENGTH);
        anchorUsed = new byte[MAX_ANCHORS];
        anchorIds = new byte[(short) (MAX_ANCHORS * KEY_ID_LENGTH)];
        anchorPoints = new byte[(short) (MAX_ANCHORS * Ecdsa.POINT_LENGTH)];
        hash = JCSystem.makeTransientByteArray((short) 32, JCSystem.CLEAR_ON_DESELECT);
        pin.update(p.data, p.pin, (byte) BLOCK_LENGTH);
        puk.update(p.data, p.puk, (byte) BLOCK_LENGTH);
        for (byte i = 0; i < p.anchorCount; i++) {
            if (!ec.isValidPoint(p.data, p.anchors[i])) {
                ISOException.throwIt(Sw.WRONG_DATA);
            }
            keyId(p.data, p.anchors[i], hash, (short) 0);
            add(hash, (short) 0, p.data, p.anchors[i]);
        }
    }

    /** A PIN block: at least minDigits ASCII digits, then only FF padding (8 bytes). */
    static boolean validPinBlock(byte[] b, short off, short minDigits) {
        short digits = 0;
        while (digits < BLOCK_LENGTH && b[(short) (off + digits)] >= '0' && b[(short) (off + digits)] <= '9') {
            digits++;
        }
        for (short i = digits; i < BLOCK_LENGTH; i++) {
            if (b[(short) (off + i)] != (byte) 0xFF) {
                return false;
            }
        }
        return digits >= minDigits;
    }

    /** Whether the block holds exactly 8 digits (a PUK). */
    static boolean eightDigits(byte[] b, short off) {
        return b[(short) (off + 7)] != (byte) 0xFF;
    }

    // ---- PIN / PUK ------------------------------------------------------------------

    byte pinTries() {
        return pin.getTriesRemaining();
    }

    byte pukTries() {
        return puk.getTriesRemaining();
    }

    boolean checkPin(byte[] b, short off) {
        return pin.check(b, off, (byte) BLOCK_LENGTH);
    }

    boolean checkPuk(byte[] b, short off) {
        return puk.check(b, off, (byte) BLOCK_LENGTH);
    }

    /** New PIN value; OwnerPIN.update also gives back every try. */
    void setPin(byte[] b, short off) {
        pin.update(b, off, (byte) BLOCK_LENGTH);
    }

    // ---- trust anchors ----------------------------------------------------------------

    /** hash[0..8) = SHA-256(point)[0..8): the key id of the emulator's manifest.key_id. */
    void keyId(byte[] point, short off, byte[] out, short outOff) {
        sha.reset();
        sha.doFinal(point, off, Ecdsa.POINT_LENGTH, hash, (short) 0);
        Util.arrayCopyNonAtomic(hash, (short) 0, out, outOff, KEY_ID_LENGTH);
    }

    short anchorCount() {
        short n = 0;
        for (byte i = 0; i < MAX_ANCHORS; i++) {
            if (anchorUsed[i] != 0) {
                n++;
            }
        }
        return n;
    }

    /** Slot of a key id, or -1. */
    short find(byte[] id, short off) {
        for (byte i = 0; i < MAX_ANCHORS; i++) {
            if (anchorUsed[i] != 0
                    && Util.arrayCompare(anchorIds, (short) (i * KEY_ID_LENGTH), id, off, KEY_ID_LENGTH) == 0) {
                return i;
            }
        }
        return -1;
    }

    byte[] points() {
        return anchorPoints;
    }

    static short pointOffset(short slot) {
        return (short) (slot * Ecdsa.POINT_LENGTH);
    }

    /** Add (or replace the point of) a key id in one transaction; 6A84 when all 8 are used. */
    void add(byte[] id, short idOff, byte[] point, short pointOff) {
        short slot = find(id, idOff);
        for (byte i = 0; slot < 0 && i < MAX_ANCHORS; i++) {
            if (anchorUsed[i] == 0) {
                slot = i;
            }
        }
        if (slot < 0) {
            ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
        }
        JCSystem.beginTransaction();
        Util.arrayCopy(point, pointOff, anchorPoints, pointOffset(slot), Ecdsa.POINT_LENGTH);
        Util.arrayCopy(id, idOff, anchorIds, (short) (slot * KEY_ID_LENGTH), KEY_ID_LENGTH);
        anchorUsed[slot] = 1;
        JCSystem.commitTransaction();
    }

    /** 6A88 for an unknown key id. */
    void remove(byte[] id, short off) {
        short slot = find(id, off);
        if (slot < 0) {
            ISOException.throwIt(Sw.REFERENCED_DATA_NOT_FOUND);
        }
        anchorUsed[slot] = 0;          // one atomic byte write
    }

    /** The used key ids, in slot order, at out[off..); returns the length. */
    short listIds(byte[] out, short off) {
        short pos = off;
        for (byte i = 0; i < MAX_ANCHORS; i++) {
            if (anchorUsed[i] != 0) {
                pos = Util.arrayCopyNonAtomic(anchorIds, (short) (i * KEY_ID_LENGTH), out, pos, KEY_ID_LENGTH);
            }
        }
        return (short) (pos - off);
    }
}
