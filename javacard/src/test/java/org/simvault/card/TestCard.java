package org.simvault.card;

import org.simvault.sim.SimulatedCard;

import java.io.ByteArrayOutputStream;
import java.math.BigInteger;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.Signature;
import java.security.interfaces.ECPublicKey;
import java.security.spec.ECGenParameterSpec;
import java.util.Arrays;
import java.util.HexFormat;

/**
 * The backup applet in jCardSim, answering as org.simvault.sim.SimulatedCard (the vpcd
 * bridge's card) does: the card OS's answers that jCardSim gives differently are corrected
 * there (SimulatedCard.exchange), and 6F00s (exceptions the applet did not catch) are counted.
 * Also the host-side helpers the tests share: APDUs, PIN blocks, signed manifests.
 */
final class TestCard {
    static final HexFormat HEX = HexFormat.of().withUpperCase();
    static final byte[] AID = HEX.parseHex("F053494D5641554C5401");
    static final String PIN = "1234";
    static final String PUK = "12345678";
    static final byte[] ENC = HEX.parseHex("404142434445464748494A4B4C4D4E4F");
    static final byte[] MAC = HEX.parseHex("505152535455565758595A5B5C5D5E5F");
    static final byte[] DEK = HEX.parseHex("606162636465666768696A6B6C6D6E6F");

    final SimulatedCard card;
    final KeyPair signer;
    /** Answers that were 6F00: an exception the applet did not catch. */
    int internalErrors;

    /** A bare jCardSim simulator instead (tests that also talk to it directly), or null. */
    final com.licel.jcardsim.smartcardio.CardSimulator sim;

    TestCard(byte[] installParams, KeyPair signer) {
        this.signer = signer;
        card = new SimulatedCard(BackupApplet.class, AID, installParams, HEX.parseHex(SimulatedCard.DEFAULT_ATR));
        sim = null;
    }

    TestCard(com.licel.jcardsim.smartcardio.CardSimulator sim, KeyPair signer) {
        this.signer = signer;
        this.sim = sim;
        card = null;
    }

    /** A card with PIN 1234, PUK 12345678, ENC/MAC/DEK above, a fresh P-256 anchor, store size bytes. */
    static TestCard personalised(int storeSize, String... extraTlvs) throws GeneralSecurityException {
        KeyPairGenerator g = KeyPairGenerator.getInstance("EC");
        g.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair kp = g.generateKeyPair();
        StringBuilder p = new StringBuilder();
        p.append("0108").append(HEX.formatHex(pinBlock(PIN)));
        p.append("0208").append(HEX.formatHex(pinBlock(PUK)));
        p.append("0330").append(HEX.formatHex(concat(ENC, MAC, DEK)));
        p.append("0541").append(HEX.formatHex(point(kp)));
        p.append("0604").append(String.format("%08X", storeSize));
        for (String t : extraTlvs) {
            p.append(t);
        }
        return new TestCard(HEX.parseHex(p.toString()), kp);
    }

    byte[] transmit(byte[] command) {
        byte[] r = sim != null ? SimulatedCard.exchange(sim, command) : card.transmit(command);
        if (SimulatedCard.isInternalError(r)) {
            internalErrors++;
        }
        return r;
    }

    void reset() {
        if (sim != null) {
            sim.reset();
        } else {
            card.reset();
        }
    }

    // ---- APDUs ---------------------------------------------------------------------

    static byte[] apdu(int cla, int ins, int p1, int p2, byte[] data, Integer le) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        o.write(cla);
        o.write(ins);
        o.write(p1);
        o.write(p2);
        boolean ext = data.length > 255 || (le != null && le > 256);
        if (data.length > 0) {
            if (ext) {
                o.write(0);
                o.write(data.length >> 8);
                o.write(data.length);
            } else {
                o.write(data.length);
            }
            o.writeBytes(data);
        }
        if (le != null) {
            if (ext) {
                if (data.length == 0) {
                    o.write(0);
                }
                o.write(le >> 8);
                o.write(le);
            } else {
                o.write(le);
            }
        }
        return o.toByteArray();
    }

    byte[] send(int cla, int ins, int p1, int p2, byte[] data, Integer le) {
        return transmit(apdu(cla, ins, p1, p2, data, le));
    }

    /** Send and require the status word; the data. */
    byte[] expect(int sw, int cla, int ins, int p1, int p2, byte[] data, Integer le) {
        byte[] r = send(cla, ins, p1, p2, data, le);
        if (sw(r) != sw) {
            throw new AssertionError(String.format("%02X %02X: SW %04X, expected %04X", cla, ins, sw(r), sw));
        }
        return data(r);
    }

    void selectAndVerify() {
        expect(0x9000, 0x00, 0xA4, 0x04, 0x00, AID, 0);
        expect(0x9000, 0x00, 0x20, 0x00, 0x81, pinBlock(PIN), null);
    }

    static int sw(byte[] r) {
        return ((r[r.length - 2] & 0xFF) << 8) | (r[r.length - 1] & 0xFF);
    }

    static byte[] data(byte[] r) {
        return Arrays.copyOf(r, r.length - 2);
    }

    static byte[] pinBlock(String digits) {
        byte[] b = new byte[8];
        Arrays.fill(b, (byte) 0xFF);
        byte[] d = digits.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        System.arraycopy(d, 0, b, 0, d.length);
        return b;
    }

    static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            o.writeBytes(p);
        }
        return o.toByteArray();
    }

    // ---- manifests ------------------------------------------------------------------

    static byte[] point(KeyPair kp) {
        ECPublicKey pub = (ECPublicKey) kp.getPublic();
        return concat(new byte[] {4}, fixed(pub.getW().getAffineX()), fixed(pub.getW().getAffineY()));
    }

    static byte[] fixed(BigInteger v) {
        byte[] b = v.toByteArray();
        byte[] out = new byte[32];
        int n = Math.min(32, b.length);
        System.arraycopy(b, b.length - n, out, 32 - n, n);
        return out;
    }

    static byte[] sha256(byte[] data) throws GeneralSecurityException {
        return MessageDigest.getInstance("SHA-256").digest(data);
    }

    static byte[] keyId(KeyPair kp) throws GeneralSecurityException {
        return Arrays.copyOf(sha256(point(kp)), 8);
    }

    static byte[] tlv(int tag, byte[] value) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        o.write(tag);
        int n = value.length;
        if (n < 0x80) {
            o.write(n);
        } else if (n < 0x100) {
            o.write(0x81);
            o.write(n);
        } else {
            o.write(0x82);
            o.write(n >> 8);
            o.write(n);
        }
        o.writeBytes(value);
        return o.toByteArray();
    }

    static byte[] u64(long v) {
        byte[] b = new byte[8];
        for (int i = 0; i < 8; i++) {
            b[7 - i] = (byte) (v >>> (8 * i));
        }
        return b;
    }

    static byte[] u32(int v) {
        return new byte[] {(byte) (v >>> 24), (byte) (v >>> 16), (byte) (v >>> 8), (byte) v};
    }

    /** The MANIFEST of apdu_specs/manifest.py: chunk ids are SHA-256(data) here. */
    byte[] manifest(byte[] backupId, long sequence, byte[][] chunks) throws GeneralSecurityException {
        ByteArrayOutputStream table = new ByteArrayOutputStream();
        int total = 0;
        for (byte[] c : chunks) {
            table.writeBytes(sha256(c));
            table.writeBytes(sha256(c));
            table.writeBytes(u32(c.length));
            total += c.length;
        }
        byte[] body = concat(tlv(0x80, new byte[] {1}), tlv(0x81, backupId), tlv(0x82, u64(sequence)),
                tlv(0x83, u64(0x6553F100L)), tlv(0x84, "phone-1".getBytes(java.nio.charset.StandardCharsets.UTF_8)),
                tlv(0x85, keyId(signer)), tlv(0x86, u32(total)), tlv(0x87, table.toByteArray()),
                tlv(0x88, new byte[] {1, 2, 3}));
        return tlv(0xE1, body);
    }

    /** Raw r||s ECDSA P-256 / SHA-256 with the anchor's key. */
    byte[] sign(byte[] message) throws GeneralSecurityException {
        Signature s = Signature.getInstance("SHA256withECDSAinP1363Format");
        s.initSign(signer.getPrivate());
        s.update(message);
        return s.sign();
    }

    /** The whole upload (BEGIN, QUERY, PUT CHUNK for the missing, PUT MANIFEST, COMMIT); the COMMIT SW. */
    int backup(byte[] backupId, long sequence, byte[][] chunks, int piece) throws GeneralSecurityException {
        byte[] m = manifest(backupId, sequence, chunks);
        expect(0x9000, 0x80, 0x20, 0, 0, concat(backupId, u64(sequence), u32(m.length)), 0);
        for (byte[] c : chunks) {
            byte[] bits = expect(0x9000, 0x80, 0x22, 0, 0, sha256(c), 0);
            if ((bits[0] & 0x80) == 0) {
                putChunk(sha256(c), c, piece);
            }
        }
        for (int at = 0; at < m.length; at += 200) {
            byte[] part = Arrays.copyOfRange(m, at, Math.min(m.length, at + 200));
            expect(0x9000, 0x80, 0x26, 0, 0, concat(u32(at), part), null);
        }
        return sw(send(0x80, 0x28, 0, 0, sign(m), 0));
    }

    /** PUT CHUNK, chained in parts of piece bytes (0: one extended APDU). */
    void putChunk(byte[] id, byte[] data, int piece) {
        byte[] body = concat(id, data);
        if (piece == 0 || body.length <= piece) {
            expect(0x9000, 0x80, 0x24, 0, 0, body, null);
            return;
        }
        for (int at = 0; at < body.length; at += piece) {
            boolean last = at + piece >= body.length;
            byte[] part = Arrays.copyOfRange(body, at, Math.min(body.length, at + piece));
            expect(0x9000, last ? 0x80 : 0x90, 0x24, 0, 0, part, null);
        }
    }
}
