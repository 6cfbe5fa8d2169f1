package org.simvault.card;

import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.AESKey;
import javacardx.crypto.Cipher;

/**
 * AES-CMAC (NIST SP 800-38B, RFC 4493) on Cipher.ALG_AES_BLOCK_128_CBC_NOPAD:
 * Java Card 3.0.4 has no Signature.ALG_AES_CMAC_128. Streams its input (init,
 * update..., doFinal) through one 16-byte state, so a MAC over "chaining value |
 * header | data" needs no copy of the data. Each block is one doFinal of the CBC
 * cipher with a zero IV (= one AES block encryption): the cipher object is shared
 * with Scp03, which re-initialises it before each use.
 */
final class Scp03Cmac {
    static final short BLOCK = 16;
    private static final short STATE = 0;
    private static final short PENDING = 16;
    private static final short SUBKEY = 32;
    private static final short WORK_SIZE = 48;

    private final Cipher aes;
    private final byte[] work;          // state | pending block | subkey (transient)
    private final short[] pendingLength; // transient

    Scp03Cmac(Cipher aes) {
        this.aes = aes;
        work = JCSystem.makeTransientByteArray(WORK_SIZE, JCSystem.CLEAR_ON_DESELECT);
        pendingLength = JCSystem.makeTransientShortArray((short) 1, JCSystem.CLEAR_ON_DESELECT);
    }

    void init(AESKey macKey) {
        aes.init(macKey, Cipher.MODE_ENCRYPT);
        Util.arrayFillNonAtomic(work, (short) 0, WORK_SIZE, (byte) 0);
        pendingLength[0] = 0;
    }

    void update(byte[] in, short off, short len) {
        short pending = pendingLength[0];
        while (len > 0) {
            if (pending == BLOCK) {         // a full block with more input after it: not the last one
                absorb();
                pending = 0;
            }
            short n = (short) (BLOCK - pending);
            if (n > len) {
                n = len;
            }
            Util.arrayCopyNonAtomic(in, off, work, (short) (PENDING + pending), n);
            pending += n;
            off += n;
            len -= n;
        }
        pendingLength[0] = pending;
    }

    void updateByte(byte b) {
        short pending = pendingLength[0];
        if (pending == BLOCK) {
            absorb();
            pending = 0;
        }
        work[(short) (PENDING + pending)] = b;
        pendingLength[0] = (short) (pending + 1);
    }

    /** The full 16-byte MAC at out[outOff]; the object then needs init again. */
    void doFinal(byte[] out, short outOff) {
        short pending = pendingLength[0];
        // subkeys: L = AES(K, 0), K1 = dbl(L), K2 = dbl(K1)
        Util.arrayFillNonAtomic(work, SUBKEY, BLOCK, (byte) 0);
        aes.doFinal(work, SUBKEY, BLOCK, work, SUBKEY);
        doubleBlock();
        if (pending == BLOCK) {
            xorInto(PENDING);
        } else {
            doubleBlock();
            work[(short) (PENDING + pending)] = (byte) 0x80;
            Util.arrayFillNonAtomic(work, (short) (PENDING + pending + 1), (short) (BLOCK - pending - 1), (byte) 0);
            xorInto(PENDING);
        }
        absorb();
        Util.arrayCopyNonAtomic(work, STATE, out, outOff, BLOCK);
        Util.arrayFillNonAtomic(work, (short) 0, WORK_SIZE, (byte) 0);
        pendingLength[0] = 0;
    }

    /** pending ^= subkey (for the last block). */
    private void xorInto(short at) {
        for (short i = 0; i < BLOCK; i++) {
            work[(short) (at + i)] ^= work[(short) (SUBKEY + i)];
        }
    }

    /** state = AES(K, state ^ pending). */
    private void absorb() {
        for (short i = 0; i < BLOCK; i++) {
            work[(short) (STATE + i)] ^= work[(short) (PENDING + i)];
        }
        aes.doFinal(work, STATE, BLOCK, work, STATE);
    }

    /** subkey = subkey * x in GF(2^128) (shift left, reduce with 0x87). */
    private void doubleBlock() {
        byte carry = 0;
        for (short i = (short) (SUBKEY + BLOCK - 1); i >= SUBKEY; i--) {
            byte b = work[i];
            work[i] = (byte) ((b << 1) | carry);
            carry = (byte) ((b >> 7) & 1);
        }
        if (carry != 0) {
            work[(short) (SUBKEY + BLOCK - 1)] ^= (byte) 0x87;
        }
    }
}
