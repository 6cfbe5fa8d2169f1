package org.simvault.card;

import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.AESKey;
import javacard.security.KeyBuilder;
import javacardx.crypto.Cipher;

/**
 * GlobalPlatform SCP03 (Card Spec v2.2 Amendment D, AES-128, S8 mode) for the
 * admin commands: the card side of apdu_specs/scp.py, byte for byte.
 *
 * <p>i = 70: pseudo-random card challenge (KDF(K-ENC, 02, 64, sequence counter | AID)
 * with a persistent 24-bit sequence counter, incremented and written before the
 * challenge leaves the card), R-MAC and R-ENC supported. Security levels 01, 03, 11,
 * 13, 33. INITIALIZE UPDATE answers key diversification data (10 x 00), key
 * information (kv, 03, 70), card challenge, card cryptogram, sequence counter.
 *
 * <p>Failed EXTERNAL AUTHENTICATEs are counted in a persistent byte BEFORE the
 * cryptogram is compared (a power cut cannot undo the count), a success clears
 * it, and after 10 failures in a row INITIALIZE UPDATE and EXTERNAL AUTHENTICATE
 * answer 6983 for good. Call it outside transactions (6F00 otherwise).
 *
 * <p>Every secret and the session live in transient memory (CLEAR_ON_DESELECT):
 * SELECT, reset and power loss close the channel. Nothing is allocated after install.
 *
 * <p>Use from the applet's process(): INS 50 (CLA 80) -> initializeUpdate; INS 82
 * (CLA 84) -> externalAuthenticate; an admin command (CLA 84) -> unwrap (the plain
 * data at cdataOff), do the command, then wrap the response data (also an empty one:
 * at R-MAC levels a 9000 answer carries 8 bytes of R-MAC) before sending it; the
 * buffer needs 16 + 8 bytes of room after the data. Error status words are sent
 * without wrap (Amendment D: no R-MAC on errors).
 */
public final class Scp03 {
    public static final byte SCP_I = (byte) 0x70;
    public static final short INITIALIZE_UPDATE_RESPONSE_LENGTH = 32;
    public static final byte MAX_FAILURES = 10;

    private static final byte SCP_ID = 0x03;
    private static final short BLOCK = 16;
    private static final short MAC_LENGTH = 8;
    private static final short CHALLENGE_LENGTH = 8;
    private static final short KEY_LENGTH = 16;

    private static final byte SL_CDEC = 0x02;
    private static final byte SL_RMAC = 0x10;
    private static final byte SL_RENC = 0x20;

    private static final byte DERIVE_CARD_CRYPTOGRAM = 0x00;
    private static final byte DERIVE_HOST_CRYPTOGRAM = 0x01;
    private static final byte DERIVE_CARD_CHALLENGE = 0x02;
    private static final byte DERIVE_S_ENC = 0x04;
    private static final byte DERIVE_S_MAC = 0x06;
    private static final byte DERIVE_S_RMAC = 0x07;

    private static final short SW_INCORRECT_SM_DATA = 0x6988;
    private static final short SW_AUTH_BLOCKED = 0x6983;
    private static final short SW_VERIFICATION_FAILED = 0x6300;
    private static final short SW_REFERENCED_DATA_NOT_FOUND = 0x6A88;

    // session phases (state[PHASE])
    private static final byte CLOSED = 0;
    private static final byte INITIALIZED = 1;     // after INITIALIZE UPDATE
    private static final byte OPEN = 2;            // after EXTERNAL AUTHENTICATE
    private static final short PHASE = 0;
    private static final short LEVEL = 1;

    // transient work layout (work[])
    private static final short W_CONTEXT = 0;      // host challenge | card challenge (16)
    private static final short W_HOST_CRYPTOGRAM = 16;  // 8
    private static final short W_MAC = 24;         // 16: a computed MAC
    private static final short W_BLOCK = 40;       // 16: KDF prefix, ICV, header bytes
    private static final short W_AID = 56;         // sequence counter (3) | AID (up to 16)
    private static final short WORK_SIZE = 75;

    // persistent
    private final AESKey kEnc;
    private final AESKey kMac;
    private final AESKey kDek;         // kept for key management (PUT KEY); SCP03 sessions do not use it
    private final byte keyVersion;
    private final byte[] sequence;     // 24-bit big-endian sequence counter
    private byte failures;             // failed EXTERNAL AUTHENTICATEs in a row

    // transient
    private final AESKey sEnc;
    private final AESKey sMac;
    private final AESKey sRmac;
    private final byte[] state;        // phase, level
    private final byte[] chain;        // MAC chaining value (16)
    private final byte[] counter;      // encryption counter (16, big-endian)
    private final byte[] work;
    private final Cipher aes;
    private final Scp03Cmac cmac;

    /** keySet = K-ENC | K-MAC | K-DEK (48 bytes) at off; allocates everything (install time). */
    public Scp03(byte[] keySet, short off, byte keyVersion) {
        kEnc = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES, KeyBuilder.LENGTH_AES_128, false);
        kMac = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES, KeyBuilder.LENGTH_AES_128, false);
        kDek = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES, KeyBuilder.LENGTH_AES_128, false);
        kEnc.setKey(keySet, off);
        kMac.setKey(keySet, (short) (off + KEY_LENGTH));
        kDek.setKey(keySet, (short) (off + 2 * KEY_LENGTH));
        this.keyVersion = keyVersion;
        sequence = new byte[3];
        sEnc = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES_TRANSIENT_DESELECT, KeyBuilder.LENGTH_AES_128, false);
        sMac = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES_TRANSIENT_DESELECT, KeyBuilder.LENGTH_AES_128, false);
        sRmac = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES_TRANSIENT_DESELECT, KeyBuilder.LENGTH_AES_128, false);
        state = JCSystem.makeTransientByteArray((short) 2, JCSystem.CLEAR_ON_DESELECT);
        chain = JCSystem.makeTransientByteArray(BLOCK, JCSystem.CLEAR_ON_DESELECT);
        counter = JCSystem.makeTransientByteArray(BLOCK, JCSystem.CLEAR_ON_DESELECT);
        work = JCSystem.makeTransientByteArray(WORK_SIZE, JCSystem.CLEAR_ON_DESELECT);
        aes = Cipher.getInstance(Cipher.ALG_AES_BLOCK_128_CBC_NOPAD, false);
        cmac = new Scp03Cmac(aes);
    }

    public boolean isOpen() {
        return state[PHASE] == OPEN;
    }

    /** The level of the open channel (0 when closed). */
    public byte securityLevel() {
        return state[PHASE] == OPEN ? state[LEVEL] : 0;
    }

    /** Failed authentications left before the key set locks (0: locked). */
    public byte triesLeft() {
        return failures >= MAX_FAILURES ? 0 : (byte) (MAX_FAILURES - failures);
    }

    public void close() {
        state[PHASE] = CLOSED;
        state[LEVEL] = 0;
        Util.arrayFillNonAtomic(chain, (short) 0, BLOCK, (byte) 0);
        Util.arrayFillNonAtomic(counter, (short) 0, BLOCK, (byte) 0);
        Util.arrayFillNonAtomic(work, (short) 0, WORK_SIZE, (byte) 0);
        sEnc.clearKey();
        sMac.clearKey();
        sRmac.clearKey();
    }

    // ---- INITIALIZE UPDATE ---------------------------------------------------------------

    /** Header in buf[0..3], host challenge at cdataOff (lc 8); p1 the key version (00: any).
     *  The response (32 bytes) is written at buf[0]. 6A86 P2 not 00, 6983 locked, 6A88 no
     *  such key version, 6700, 6985 sequence counter exhausted. */
    public short initializeUpdate(byte[] buf, short cdataOff, short lc, byte p1) {
        if (buf[ISO7816.OFFSET_P2] != 0) {
            ISOException.throwIt(ISO7816.SW_INCORRECT_P1P2);
        }
        close();
        if (failures >= MAX_FAILURES) {
            ISOException.throwIt(SW_AUTH_BLOCKED);
        }
        if (p1 != 0 && p1 != keyVersion) {
            ISOException.throwIt(SW_REFERENCED_DATA_NOT_FOUND);
        }
        if (lc != CHALLENGE_LENGTH) {
            ISOException.throwIt(ISO7816.SW_WRONG_LENGTH);
        }
        Util.arrayCopyNonAtomic(buf, cdataOff, work, W_CONTEXT, CHALLENGE_LENGTH);
        nextSequence();
        // card challenge = KDF(K-ENC, 02, 64, sequence | AID)
        Util.arrayCopyNonAtomic(sequence, (short) 0, work, W_AID, (short) 3);
        short aidLength = JCSystem.getAID().getBytes(work, (short) (W_AID + 3));
        kdf(kEnc, DERIVE_CARD_CHALLENGE, (short) 64, work, W_AID, (short) (3 + aidLength), work, W_MAC);
        Util.arrayCopyNonAtomic(work, W_MAC, work, (short) (W_CONTEXT + CHALLENGE_LENGTH), CHALLENGE_LENGTH);
        // session keys
        kdf(kEnc, DERIVE_S_ENC, (short) 128, work, W_CONTEXT, BLOCK, work, W_MAC);
        sEnc.setKey(work, W_MAC);
        kdf(kMac, DERIVE_S_MAC, (short) 128, work, W_CONTEXT, BLOCK, work, W_MAC);
        sMac.setKey(work, W_MAC);
        kdf(kMac, DERIVE_S_RMAC, (short) 128, work, W_CONTEXT, BLOCK, work, W_MAC);
        sRmac.setKey(work, W_MAC);
        kdf(sMac, DERIVE_HOST_CRYPTOGRAM, (short) 64, work, W_CONTEXT, BLOCK, work, W_MAC);
        Util.arrayCopyNonAtomic(work, W_MAC, work, W_HOST_CRYPTOGRAM, MAC_LENGTH);
        // response: diversification data, key information, challenge, cryptogram, sequence
        Util.arrayFillNonAtomic(buf, (short) 0, (short) 10, (byte) 0);
        buf[10] = keyVersion;
        buf[11] = SCP_ID;
        buf[12] = SCP_I;
        Util.arrayCopyNonAtomic(work, (short) (W_CONTEXT + CHALLENGE_LENGTH), buf, (short) 13, CHALLENGE_LENGTH);
        kdf(sMac, DERIVE_CARD_CRYPTOGRAM, (short) 64, work, W_CONTEXT, BLOCK, buf, (short) 21);
        Util.arrayCopyNonAtomic(sequence, (short) 0, buf, (short) 29, (short) 3);
        Util.arrayFillNonAtomic(work, W_MAC, BLOCK, (byte) 0);
        state[PHASE] = INITIALIZED;
        return INITIALIZE_UPDATE_RESPONSE_LENGTH;
    }

    /** sequence + 1, written atomically before use; 6985 when it has reached FFFFFF. */
    private void nextSequence() {
        if (sequence[0] == (byte) 0xFF && sequence[1] == (byte) 0xFF && sequence[2] == (byte) 0xFF) {
            ISOException.throwIt(ISO7816.SW_CONDITIONS_NOT_SATISFIED);
        }
        Util.arrayCopyNonAtomic(sequence, (short) 0, work, W_BLOCK, (short) 3);
        for (short i = (short) (W_BLOCK + 2); i >= W_BLOCK; i--) {
            work[i]++;
            if (work[i] != 0) {
                break;
            }
        }
        Util.arrayCopy(work, W_BLOCK, sequence, (short) 0, (short) 3);     // atomic
    }

    // ---- EXTERNAL AUTHENTICATE -----------------------------------------------------------

    /** Header in buf[0..3] (P1 = security level), host cryptogram and C-MAC at cdataOff.
     *  6985 without INITIALIZE UPDATE, 6A86 bad level/P2, 6700, 6300 wrong cryptogram,
     *  6988 wrong C-MAC, 6983 locked; every failure closes the channel. */
    public void externalAuthenticate(byte[] buf, short cdataOff, short lc) {
        if (state[PHASE] != INITIALIZED) {
            close();
            ISOException.throwIt(ISO7816.SW_CONDITIONS_NOT_SATISFIED);
        }
        byte level = buf[ISO7816.OFFSET_P1];
        if (!validLevel(level) || buf[ISO7816.OFFSET_P2] != 0) {
            close();
            ISOException.throwIt(ISO7816.SW_INCORRECT_P1P2);
        }
        if (lc != (short) (2 * MAC_LENGTH)) {
            close();
            ISOException.throwIt(ISO7816.SW_WRONG_LENGTH);
        }
        if (failures >= MAX_FAILURES) {
            close();
            ISOException.throwIt(SW_AUTH_BLOCKED);
        }
        if (JCSystem.getTransactionDepth() != 0) {
            close();
            ISOException.throwIt(ISO7816.SW_UNKNOWN);
        }
        failures = (byte) (failures + 1);           // persistent, before any compare
        boolean cryptogramOk = equal(buf, cdataOff, work, W_HOST_CRYPTOGRAM, MAC_LENGTH);
        Util.arrayFillNonAtomic(chain, (short) 0, BLOCK, (byte) 0);
        computeCmac(buf, ISO7816.OFFSET_CLA, cdataOff, MAC_LENGTH);
        boolean macOk = equal(work, W_MAC, buf, (short) (cdataOff + MAC_LENGTH), MAC_LENGTH);
        if (cryptogramOk & macOk) {
            failures = 0;
            Util.arrayCopyNonAtomic(work, W_MAC, chain, (short) 0, BLOCK);
            Util.arrayFillNonAtomic(counter, (short) 0, BLOCK, (byte) 0);
            state[LEVEL] = level;
            state[PHASE] = OPEN;
            return;
        }
        close();
        ISOException.throwIt(cryptogramOk ? SW_INCORRECT_SM_DATA : SW_VERIFICATION_FAILED);
    }

    private static boolean validLevel(byte level) {
        return level == 0x01 || level == 0x03 || level == 0x11 || level == 0x13 || level == 0x33;
    }

    // ---- commands and responses ------------------------------------------------------------

    /** Verify the C-MAC (and decrypt at C-DEC) of the command whose header is buf[0..3] and
     *  whose data (lc bytes, MAC last) is at cdataOff; the plain data replaces it and its
     *  length is returned. 6982 when the channel is not open; 6988 (and the channel
     *  closes) for a missing or wrong MAC, a bad length or padding. */
    public short unwrap(byte[] buf, short cdataOff, short lc) {
        if (state[PHASE] != OPEN) {
            ISOException.throwIt(ISO7816.SW_SECURITY_STATUS_NOT_SATISFIED);
        }
        incrementCounter();
        if (lc < MAC_LENGTH) {
            fail();
        }
        short payload = (short) (lc - MAC_LENGTH);
        computeCmac(buf, ISO7816.OFFSET_CLA, cdataOff, payload);
        if (!equal(work, W_MAC, buf, (short) (cdataOff + payload), MAC_LENGTH)) {
            fail();
        }
        Util.arrayCopyNonAtomic(work, W_MAC, chain, (short) 0, BLOCK);
        if ((state[LEVEL] & SL_CDEC) == 0 || payload == 0) {
            return payload;
        }
        if ((short) (payload % BLOCK) != 0) {
            fail();
        }
        icv(false);
        aes.init(sEnc, Cipher.MODE_DECRYPT, work, W_BLOCK, BLOCK);
        aes.doFinal(buf, cdataOff, payload, buf, cdataOff);
        // ISO 9797-1 method 2: the last non-zero byte (within the last block) is 80
        short end = (short) (cdataOff + payload - 1);
        short stop = (short) (cdataOff + payload - BLOCK);
        while (end > stop && buf[end] == 0) {
            end--;
        }
        if (buf[end] != (byte) 0x80) {
            fail();
        }
        return (short) (end - cdataOff);
    }

    /** R-ENC then R-MAC on response data buf[off..off+len) for a 9000 answer, per the level;
     *  the new length (unchanged below R-MAC or when the channel is not open). */
    public short wrap(byte[] buf, short off, short len) {
        if (state[PHASE] != OPEN || (state[LEVEL] & SL_RMAC) == 0) {
            return len;
        }
        if ((state[LEVEL] & SL_RENC) != 0 && len > 0) {
            short padded = (short) ((short) (len / BLOCK + 1) * BLOCK);
            buf[(short) (off + len)] = (byte) 0x80;
            Util.arrayFillNonAtomic(buf, (short) (off + len + 1), (short) (padded - len - 1), (byte) 0);
            icv(true);
            aes.init(sEnc, Cipher.MODE_ENCRYPT, work, W_BLOCK, BLOCK);
            aes.doFinal(buf, off, padded, buf, off);
            len = padded;
        }
        cmac.init(sRmac);
        cmac.update(chain, (short) 0, BLOCK);
        cmac.update(buf, off, len);
        cmac.updateByte((byte) 0x90);
        cmac.updateByte((byte) 0x00);
        cmac.doFinal(work, W_MAC);
        Util.arrayCopyNonAtomic(work, W_MAC, buf, (short) (off + len), MAC_LENGTH);
        return (short) (len + MAC_LENGTH);
    }

    // ---- helpers ---------------------------------------------------------------------------

    private void fail() {
        close();
        ISOException.throwIt(SW_INCORRECT_SM_DATA);
    }

    /** work[W_MAC..+16) = CMAC(S-MAC, chain | CLA' INS P1 P2 | Lc' | buf[dataOff..+len)), Lc' = len + 8. */
    private void computeCmac(byte[] buf, short headerOff, short dataOff, short len) {
        cmac.init(sMac);
        cmac.update(chain, (short) 0, BLOCK);
        cmac.updateByte((byte) ((buf[headerOff] & 0xEC) | 0x04));   // channel and chaining bits cleared, 04 set
        cmac.update(buf, (short) (headerOff + 1), (short) 3);
        short lc = (short) (len + MAC_LENGTH);
        if (lc < 256) {
            cmac.updateByte((byte) lc);
        } else {
            cmac.updateByte((byte) 0);
            cmac.updateByte((byte) (lc >> 8));
            cmac.updateByte((byte) lc);
        }
        cmac.update(buf, dataOff, len);
        cmac.doFinal(work, W_MAC);
    }

    /** work[W_BLOCK..+16) = AES(S-ENC, counter), the first byte 80 for a response. */
    private void icv(boolean response) {
        Util.arrayCopyNonAtomic(counter, (short) 0, work, W_BLOCK, BLOCK);
        if (response) {
            work[W_BLOCK] = (byte) 0x80;
        }
        aes.init(sEnc, Cipher.MODE_ENCRYPT);
        aes.doFinal(work, W_BLOCK, BLOCK, work, W_BLOCK);
    }

    private void incrementCounter() {
        for (short i = (short) (BLOCK - 1); i >= 0; i--) {
            counter[i]++;
            if (counter[i] != 0) {
                break;
            }
        }
    }

    /** out[outOff..) = KDF(key, constant, bits, context): SP 800-108 counter mode, CMAC PRF,
     *  one block (bits 64 or 128). */
    private void kdf(AESKey key, byte constant, short bits, byte[] ctx, short ctxOff, short ctxLen,
                     byte[] out, short outOff) {
        Util.arrayFillNonAtomic(work, W_BLOCK, BLOCK, (byte) 0);
        work[(short) (W_BLOCK + 11)] = constant;
        work[(short) (W_BLOCK + 13)] = (byte) (bits >> 8);
        work[(short) (W_BLOCK + 14)] = (byte) bits;
        work[(short) (W_BLOCK + 15)] = 1;
        cmac.init(key);
        cmac.update(work, W_BLOCK, BLOCK);
        cmac.update(ctx, ctxOff, ctxLen);
        if (bits == 128) {
            cmac.doFinal(out, outOff);
        } else {
            cmac.doFinal(work, W_BLOCK);
            Util.arrayCopyNonAtomic(work, W_BLOCK, out, outOff, (short) (bits / 8));
        }
    }

    /** Constant-time compare. */
    private static boolean equal(byte[] a, short aOff, byte[] b, short bOff, short len) {
        byte diff = 0;
        for (short i = 0; i < len; i++) {
            diff |= (byte) (a[(short) (aOff + i)] ^ b[(short) (bOff + i)]);
        }
        return diff == 0;
    }
}
