package org.simvault.card;

import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.ECPrivateKey;
import javacard.security.ECPublicKey;
import javacard.security.KeyAgreement;
import javacard.security.KeyBuilder;
import javacard.security.KeyPair;
import javacard.security.Signature;

/**
 * ECDSA P-256 / SHA-256 checks of the trust anchors' signatures.
 *
 * <p>The curve parameters are set explicitly on every key: many cards build EC keys
 * without a default curve. The host sends signatures as raw r||s (64 bytes);
 * Signature.ALG_ECDSA_SHA_256 wants ASN.1 DER, so {@link #toDer} converts on the card.
 * A point is checked to lie on the curve by an ECDH with a private key made at
 * install: the platform refuses points off the curve (the emulator's
 * from_encoded_point check).
 */
final class Ecdsa {
    static final short POINT_LENGTH = 65;
    static final short RAW_SIGNATURE_LENGTH = 64;
    static final short MAX_DER_LENGTH = 72;

    private static final byte[] P = {
        (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF,
        (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF};
    private static final byte[] A = {
        (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF,
        (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFC};
    private static final byte[] B = {
        0x5A, (byte) 0xC6, 0x35, (byte) 0xD8, (byte) 0xAA, 0x3A, (byte) 0x93, (byte) 0xE7,
        (byte) 0xB3, (byte) 0xEB, (byte) 0xBD, 0x55, 0x76, (byte) 0x98, (byte) 0x86, (byte) 0xBC,
        0x65, 0x1D, 0x06, (byte) 0xB0, (byte) 0xCC, 0x53, (byte) 0xB0, (byte) 0xF6,
        0x3B, (byte) 0xCE, 0x3C, 0x3E, 0x27, (byte) 0xD2, 0x60, 0x4B};
    private static final byte[] G = {
        0x04,
        0x6B, 0x17, (byte) 0xD1, (byte) 0xF2, (byte) 0xE1, 0x2C, 0x42, 0x47,
        (byte) 0xF8, (byte) 0xBC, (byte) 0xE6, (byte) 0xE5, 0x63, (byte) 0xA4, 0x40, (byte) 0xF2,
        0x77, 0x03, 0x7D, (byte) 0x81, 0x2D, (byte) 0xEB, 0x33, (byte) 0xA0,
        (byte) 0xF4, (byte) 0xA1, 0x39, 0x45, (byte) 0xD8, (byte) 0x98, (byte) 0xC2, (byte) 0x96,
        0x4F, (byte) 0xE3, 0x42, (byte) 0xE2, (byte) 0xFE, 0x1A, 0x7F, (byte) 0x9B,
        (byte) 0x8E, (byte) 0xE7, (byte) 0xEB, 0x4A, 0x7C, 0x0F, (byte) 0x9E, 0x16,
        0x2B, (byte) 0xCE, 0x33, 0x57, 0x6B, 0x31, 0x5E, (byte) 0xCE,
        (byte) 0xCB, (byte) 0xB6, 0x40, 0x68, 0x37, (byte) 0xBF, 0x51, (byte) 0xF5};
    private static final byte[] N = {
        (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, 0x00, 0x00, 0x00, 0x00,
        (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF,
        (byte) 0xBC, (byte) 0xE6, (byte) 0xFA, (byte) 0xAD, (byte) 0xA7, 0x17, (byte) 0x9E, (byte) 0x84,
        (byte) 0xF3, (byte) 0xB9, (byte) 0xCA, (byte) 0xC2, (byte) 0xFC, 0x63, 0x25, 0x51};

    private final ECPublicKey publicKey;
    private final Signature verifier;
    private final KeyAgreement pointCheck;
    private final byte[] scratch;      // DER signature, ECDH output (transient)

    Ecdsa() {
        publicKey = (ECPublicKey) KeyBuilder.buildKey(KeyBuilder.TYPE_EC_FP_PUBLIC, KeyBuilder.LENGTH_EC_FP_256, false);
        setCurve(publicKey);
        verifier = Signature.getInstance(Signature.ALG_ECDSA_SHA_256, false);
        KeyPair pair = new KeyPair(KeyPair.ALG_EC_FP, KeyBuilder.LENGTH_EC_FP_256);
        setCurve((ECPublicKey) pair.getPublic());
        setCurve((ECPrivateKey) pair.getPrivate());
        pair.genKeyPair();
        pointCheck = KeyAgreement.getInstance(KeyAgreement.ALG_EC_SVDP_DH_PLAIN, false);
        pointCheck.init(pair.getPrivate());
        scratch = JCSystem.makeTransientByteArray(MAX_DER_LENGTH, JCSystem.CLEAR_ON_DESELECT);
    }

    private static void setCurve(ECPublicKey key) {
        key.setFieldFP(P, (short) 0, (short) P.length);
        key.setA(A, (short) 0, (short) A.length);
        key.setB(B, (short) 0, (short) B.length);
        key.setG(G, (short) 0, (short) G.length);
        key.setR(N, (short) 0, (short) N.length);
        key.setK((short) 1);
    }

    private static void setCurve(ECPrivateKey key) {
        key.setFieldFP(P, (short) 0, (short) P.length);
        key.setA(A, (short) 0, (short) A.length);
        key.setB(B, (short) 0, (short) B.length);
        key.setG(G, (short) 0, (short) G.length);
        key.setR(N, (short) 0, (short) N.length);
        key.setK((short) 1);
    }

    /** True for an uncompressed point 04||X||Y on P-256 (coordinates below p). */
    boolean isValidPoint(byte[] buf, short off) {
        if (buf[off] != 0x04) {
            return false;
        }
        if (!belowP(buf, (short) (off + 1)) || !belowP(buf, (short) (off + 33))) {
            return false;
        }
        try {
            pointCheck.generateSecret(buf, off, POINT_LENGTH, scratch, (short) 0);
            return true;
        } catch (RuntimeException e) {      // CryptoException on a card; the simulator's own on a bad point
            return false;
        }
    }

    private static boolean belowP(byte[] buf, short off) {
        for (short i = 0; i < 32; i++) {
            short a = (short) (buf[(short) (off + i)] & 0xFF);
            short b = (short) (P[i] & 0xFF);
            if (a != b) {
                return a < b;
            }
        }
        return false;
    }

    /** Verify raw r||s over msg under the point; false for any malformed input. */
    boolean verify(byte[] point, short pointOff, byte[] msg, short msgOff, short msgLen,
                   byte[] raw, short rawOff) {
        try {
            publicKey.setW(point, pointOff, POINT_LENGTH);
            short derLen = toDer(raw, rawOff, scratch, (short) 0);
            verifier.init(publicKey, Signature.MODE_VERIFY);
            return verifier.verify(msg, msgOff, msgLen, scratch, (short) 0, derLen);
        } catch (RuntimeException e) {
            return false;
        }
    }

    /** SEQUENCE { INTEGER r, INTEGER s } from raw r||s; the DER length. */
    static short toDer(byte[] raw, short rawOff, byte[] out, short outOff) {
        short pos = (short) (outOff + 2);
        pos = derInteger(raw, rawOff, out, pos);
        pos = derInteger(raw, (short) (rawOff + 32), out, pos);
        out[outOff] = 0x30;
        out[(short) (outOff + 1)] = (byte) (pos - outOff - 2);
        return (short) (pos - outOff);
    }

    /** Minimal two's-complement INTEGER of a 32-byte unsigned value. */
    private static short derInteger(byte[] src, short off, byte[] out, short pos) {
        short start = off;
        short end = (short) (off + 32);
        while (start < (short) (end - 1) && src[start] == 0) {
            start++;
        }
        short len = (short) (end - start);
        boolean pad = (src[start] & 0x80) != 0;
        out[pos++] = 0x02;
        out[pos++] = (byte) (pad ? len + 1 : len);
        if (pad) {
            out[pos++] = 0;
        }
        return Util.arrayCopyNonAtomic(src, start, out, pos, len);
    }
}
