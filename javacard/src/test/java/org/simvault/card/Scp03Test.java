package org.simvault.card;

import com.licel.jcardsim.bouncycastle.crypto.engines.AESEngine;
import com.licel.jcardsim.bouncycastle.crypto.macs.CMac;
import com.licel.jcardsim.bouncycastle.crypto.params.KeyParameter;
import com.licel.jcardsim.smartcardio.CardSimulator;
import javacard.framework.AID;
import org.junit.jupiter.api.Test;

import javax.crypto.Cipher;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Scp03 (the card side) against the published vectors of apdu_specs/vectors/scp03.json
 * (the same file tests/test_scp03.py checks apdu_specs/scp.py with), then every security
 * level end to end against an independent host written here on the JDK's AES and
 * jCardSim's bundled Bouncy Castle CMAC, and the failure rules: a wrong MAC closes,
 * a replayed EXTERNAL AUTHENTICATE is refused, wrong keys count and lock.
 */
class Scp03Test {
    static final HexFormat HEX = HexFormat.of();
    static final byte[] SIMVAULT_AID = HEX.parseHex("F053494D5641554C5401");
    static final byte[] ENC = HEX.parseHex("404142434445464748494A4B4C4D4E4F");
    static final byte[] MAC = HEX.parseHex("505152535455565758595A5B5C5D5E5F");
    static final byte[] DEK = HEX.parseHex("606162636465666768696A6B6C6D6E6F");
    static final byte KV = 0x01;

    // ---- the vectors file ----------------------------------------------------------------

    static Path vectorsFile() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path candidate = p.resolve("apdu_specs").resolve("vectors").resolve("scp03.json");
            if (Files.isRegularFile(candidate)) {
                return candidate;
            }
        }
        throw new IllegalStateException("apdu_specs/vectors/scp03.json not found above " + Path.of("").toAbsolutePath());
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> vectors() throws Exception {
        return (Map<String, Object>) new MiniJson(Files.readString(vectorsFile(), StandardCharsets.UTF_8)).parse();
    }

    static byte[] hex(Object s) {
        return HEX.parseHex((String) s);
    }

    // ---- the simulated card ----------------------------------------------------------------

    static CardSimulator card(byte[] aid, byte kv, byte[] enc, byte[] mac, byte[] dek) {
        byte[] params = new byte[49];
        params[0] = kv;
        System.arraycopy(enc, 0, params, 1, 16);
        System.arraycopy(mac, 0, params, 17, 16);
        System.arraycopy(dek, 0, params, 33, 16);
        byte[] install = new byte[1 + aid.length + 2 + 1 + params.length];
        int o = 0;
        install[o++] = (byte) aid.length;
        System.arraycopy(aid, 0, install, o, aid.length);
        o += aid.length;
        install[o++] = 1;
        install[o++] = 0;
        install[o++] = (byte) params.length;
        System.arraycopy(params, 0, install, o, params.length);
        CardSimulator sim = new CardSimulator();
        AID instance = new AID(aid, (short) 0, (byte) aid.length);
        sim.installApplet(instance, Scp03TestApplet.class, install, (short) 0, (byte) install.length);
        sim.selectApplet(instance);
        return sim;
    }

    static CardSimulator simvaultCard() {
        return card(SIMVAULT_AID, KV, ENC, MAC, DEK);
    }

    static int sw(byte[] r) {
        return ((r[r.length - 2] & 0xFF) << 8) | (r[r.length - 1] & 0xFF);
    }

    static byte[] data(byte[] r) {
        return Arrays.copyOf(r, r.length - 2);
    }

    static byte[] apdu(int cla, int ins, int p1, int p2, byte[] data, boolean le) {
        byte[] out = new byte[5 + data.length + (le ? 1 : 0)];
        out[0] = (byte) cla;
        out[1] = (byte) ins;
        out[2] = (byte) p1;
        out[3] = (byte) p2;
        out[4] = (byte) data.length;
        System.arraycopy(data, 0, out, 5, data.length);
        return out;
    }

    static byte[] send(CardSimulator sim, byte[] apdu) {
        return sim.transmitCommand(apdu);
    }

    static byte[] status(CardSimulator sim) {
        byte[] r = send(sim, HEX.parseHex("8003000000"));
        assertEquals(0x9000, sw(r));
        return data(r);
    }

    // ---- vectors -------------------------------------------------------------------------------

    @Test
    @SuppressWarnings("unchecked")
    void cmacMatchesRfc4493() throws Exception {
        CardSimulator sim = simvaultCard();
        List<Object> cases = (List<Object>) vectors().get("cmac");
        assertEquals(4, cases.size());
        for (Object c : cases) {
            Map<String, Object> v = (Map<String, Object>) c;
            byte[] body = concat(hex(v.get("key")), hex(v.get("message")));
            byte[] r = send(sim, apdu(0x80, 0x04, 0, 0, body, true));
            assertEquals(0x9000, sw(r));
            assertArrayEquals(hex(v.get("mac")), data(r), "CMAC of " + v.get("message"));
        }
    }

    /** The card's side of the published trace: INITIALIZE UPDATE answers the same
     *  challenge (pseudo-random from the sequence counter and AID) and cryptogram, EXTERNAL
     *  AUTHENTICATE passes, every wrapped command unwraps to the plain one, and the response
     *  is wrapped (R-MAC, R-ENC) to the published bytes. */
    @Test
    @SuppressWarnings("unchecked")
    void publishedSessionsReplay() throws Exception {
        Map<String, Object> doc = vectors();
        Map<String, Object> keys = (Map<String, Object>) doc.get("keys");
        CardSimulator sim = card(hex(doc.get("aid")), hex(keys.get("version"))[0], hex(keys.get("enc")),
                hex(keys.get("mac")), hex(keys.get("dek")));
        int sequence = 0;
        List<Object> sessions = (List<Object>) doc.get("sessions");
        assertEquals(3, sessions.size());
        for (Object s : sessions) {
            Map<String, Object> session = (Map<String, Object>) s;
            int wanted = ((Number) session.get("sequence_counter")).intValue();
            while (sequence + 1 < wanted) {              // advance the card's counter to the trace's
                assertEquals(0x9000, sw(send(sim, HEX.parseHex("8050300008" + "0000000000000000" + "00"))));
                sequence++;
            }
            Map<String, Object> iu = (Map<String, Object>) session.get("initialize_update");
            byte[] r = send(sim, hex(iu.get("command")));
            sequence++;
            assertEquals(0x9000, sw(r), session.get("name") + ": INITIALIZE UPDATE");
            assertArrayEquals(hex(iu.get("response")), data(r), session.get("name") + ": INITIALIZE UPDATE response");
            assertEquals(0x9000, sw(send(sim, hex(session.get("external_authenticate")))),
                    session.get("name") + ": EXTERNAL AUTHENTICATE");
            assertEquals(HEX.parseHex((String) session.get("security_level"))[0], status(sim)[1]);
            for (Object c : (List<Object>) session.get("commands")) {
                Map<String, Object> cmd = (Map<String, Object>) c;
                byte[] plainResponse = cmd.containsKey("response_plain") ? hex(cmd.get("response_plain")) : new byte[0];
                assertEquals(0x9000, sw(send(sim, apdu(0x80, 0x01, 0, 0, plainResponse, false))));
                r = send(sim, hex(cmd.get("wrapped")));
                assertEquals(0x9000, sw(r), session.get("name") + ": " + cmd.get("wrapped"));
                if (cmd.containsKey("response_wrapped")) {
                    assertArrayEquals(hex(cmd.get("response_wrapped")), data(r), session.get("name") + ": response");
                }
                byte[] last = send(sim, HEX.parseHex("8002000000"));
                assertArrayEquals(plainData(hex(cmd.get("plain"))), data(last), session.get("name") + ": unwrapped data");
            }
        }
    }

    static byte[] plainData(byte[] apdu) {
        if (apdu.length <= 5) {
            return new byte[0];
        }
        int lc = apdu[4] & 0xFF;
        return Arrays.copyOfRange(apdu, 5, 5 + lc);
    }

    // ---- end to end with an independent host -------------------------------------------------

    @Test
    void everySecurityLevelEndToEnd() throws Exception {
        for (int level : new int[] {0x01, 0x03, 0x11, 0x13, 0x33}) {
            CardSimulator sim = simvaultCard();
            Host host = Host.open(sim, ENC, MAC, level);
            assertArrayEquals(new byte[] {1, (byte) level, 10}, status(sim));
            for (int n : new int[] {0, 1, 15, 16, 17, 73, 200}) {
                byte[] payload = new byte[n];
                new SecureRandom().nextBytes(payload);
                byte[] answer = new byte[n / 2];
                new SecureRandom().nextBytes(answer);
                assertEquals(0x9000, sw(send(sim, apdu(0x80, 0x01, 0, 0, answer, false))));
                byte[] r = send(sim, host.wrap(0xE2, payload));
                assertEquals(0x9000, sw(r), String.format("level %02X, %d bytes", level, n));
                assertArrayEquals(answer, host.unwrapResponse(data(r), 0x9000), "response at level " + level);
                assertArrayEquals(payload, data(send(sim, HEX.parseHex("8002000000"))));
                if ((level & 0x10) != 0) {
                    assertEquals(answer.length + 8 + ((level & 0x20) != 0 && answer.length > 0
                            ? 16 - answer.length % 16 : 0), data(r).length);
                } else {
                    assertEquals(answer.length, data(r).length);
                }
            }
        }
    }

    @Test
    void wrongMacClosesTheChannel() throws Exception {
        CardSimulator sim = simvaultCard();
        Host host = Host.open(sim, ENC, MAC, 0x03);
        byte[] cmd = host.wrap(0xE2, new byte[] {1, 2, 3});
        cmd[cmd.length - 2] ^= 1;                                   // the last MAC byte (Le follows)
        assertEquals(0x6988, sw(send(sim, cmd)));
        assertEquals(0, status(sim)[0]);
        assertEquals(0x6982, sw(send(sim, host.wrap(0xE2, new byte[] {1, 2, 3}))));   // closed: no channel
        // a MAC-less command and a bad C-DEC padding also close it
        host = Host.open(sim, ENC, MAC, 0x03);
        assertEquals(0x6988, sw(send(sim, apdu(0x84, 0xE2, 0, 0, new byte[4], false))));
        assertEquals(0, status(sim)[0]);
        host = Host.open(sim, ENC, MAC, 0x03);
        assertEquals(0x6988, sw(send(sim, host.wrapRaw(0xE2, new byte[16]))));      // decrypts to no 80 padding
        assertEquals(0, status(sim)[0]);
        // the channel closes on reset
        Host.open(sim, ENC, MAC, 0x01);
        sim.reset();
        sim.selectApplet(new AID(SIMVAULT_AID, (short) 0, (byte) SIMVAULT_AID.length));
        assertEquals(0, status(sim)[0]);
    }

    @Test
    void replayedExternalAuthenticateIsRefused() throws Exception {
        CardSimulator sim = simvaultCard();
        Host host = Host.begin(sim, ENC, MAC, new byte[8]);
        byte[] init = host.initializeUpdate;
        byte[] ext = host.externalAuthenticate(0x01);
        assertEquals(0x9000, sw(send(sim, ext)));
        assertEquals(0x6985, sw(send(sim, ext)));                   // the same APDU again: no handshake pending
        assertEquals(0, status(sim)[0]);                            // and the failure closed the channel
        byte[] again = send(sim, init);                             // the same INITIALIZE UPDATE: a new challenge
        assertEquals(0x9000, sw(again));
        assertNotEquals(HEX.formatHex(Arrays.copyOfRange(again, 13, 21)),
                HEX.formatHex(Arrays.copyOfRange(host.initializeUpdateResponse, 13, 21)));
        assertEquals(0x6300, sw(send(sim, ext)));                   // the old cryptogram does not match
        assertEquals(9, status(sim)[2]);
        byte[] seq1 = Arrays.copyOfRange(host.initializeUpdateResponse, 29, 32);
        byte[] seq2 = Arrays.copyOfRange(again, 29, 32);
        assertEquals((seq1[2] & 0xFF) + 1, seq2[2] & 0xFF);
    }

    @Test
    void wrongKeysCountAndLock() throws Exception {
        CardSimulator sim = simvaultCard();
        byte[] wrong = new byte[16];
        for (int i = 0; i < 9; i++) {
            Host host = Host.begin(sim, wrong, wrong, new byte[8]);
            assertEquals(0x6300, sw(send(sim, host.externalAuthenticate(0x01))));
        }
        assertEquals(1, status(sim)[2]);
        Host good = Host.open(sim, ENC, MAC, 0x33);                 // a match clears the count
        assertEquals(10, status(sim)[2]);
        assertTrue(good.level == 0x33);
        Host badMac = Host.begin(sim, ENC, wrong, new byte[8]);   // the cryptograms come from S-MAC (K-MAC)
        assertEquals(0x6300, sw(send(sim, badMac.externalAuthenticate(0x01))));
        Host badEnc = Host.begin(sim, wrong, MAC, new byte[8]);   // a wrong K-ENC passes the handshake...
        assertEquals(0x9000, sw(send(sim, badEnc.externalAuthenticate(0x03))));
        assertEquals(0x6988, sw(send(sim, badEnc.wrap(0xE2, new byte[20]))));  // ...but not C-DEC
        assertEquals(0, status(sim)[0]);
        // right cryptogram, wrong C-MAC: 6988, counted
        Host h = Host.begin(sim, ENC, MAC, new byte[8]);
        byte[] ext = h.externalAuthenticate(0x01);
        ext[ext.length - 1] ^= 1;
        assertEquals(0x6988, sw(send(sim, ext)));
        assertEquals(9, status(sim)[2]);                           // (the K-ENC handshake cleared the count)
        for (int i = 0; i < 9; i++) {
            Host host = Host.begin(sim, wrong, wrong, new byte[8]);
            assertEquals(0x6300, sw(send(sim, host.externalAuthenticate(0x01))));
        }
        assertEquals(0, status(sim)[2]);
        assertEquals(0x6983, sw(send(sim, HEX.parseHex("80500000080000000000000000"))));
        sim.reset();                                                 // the lock is persistent
        sim.selectApplet(new AID(SIMVAULT_AID, (short) 0, (byte) SIMVAULT_AID.length));
        assertEquals(0x6983, sw(send(sim, HEX.parseHex("80500000080000000000000000"))));
    }

    @Test
    void badParametersAreRefused() throws Exception {
        CardSimulator sim = simvaultCard();
        assertEquals(0x6A88, sw(send(sim, HEX.parseHex("80500200080000000000000000"))));   // no key version 02
        assertEquals(0x6700, sw(send(sim, HEX.parseHex("805000000400000000"))));
        assertEquals(0x6A86, sw(send(sim, HEX.parseHex("80500001080000000000000000"))));
        assertEquals(0x6985, sw(send(sim, HEX.parseHex("84820100100000000000000000000000000000000000"))));
        for (int level : new int[] {0x00, 0x02, 0x10, 0x23, 0x31, 0xFF}) {
            Host host = Host.begin(sim, ENC, MAC, new byte[8]);
            byte[] ext = host.externalAuthenticate(0x01);
            ext[2] = (byte) level;
            assertEquals(0x6A86, sw(send(sim, ext)), String.format("level %02X", level));
        }
        Host host = Host.begin(sim, ENC, MAC, new byte[8]);
        byte[] ext = host.externalAuthenticate(0x01);
        byte[] shorter = Arrays.copyOf(ext, ext.length - 1);
        shorter[4] = 15;
        assertEquals(0x6700, sw(send(sim, shorter)));
        assertEquals(10, status(sim)[2]);                          // none of these counted
        Host.open(sim, ENC, MAC, 0x01);
        assertEquals(0x6988, sw(send(sim, HEX.parseHex("84E20000"))));     // no room for a MAC
        assertEquals(0, status(sim)[0]);
    }

    /** Malformed and random secure-channel APDUs: always an ISO status word, never 6F00
     *  (an exception the class did not catch). */
    @Test
    void fuzzedApdusNeverEscape() throws Exception {
        CardSimulator sim = simvaultCard();
        java.util.Random random = new java.util.Random(0x5C03);
        int[] insList = {0x50, 0x82, 0xE2, 0xE4, 0xEE};
        int escaped = 0;
        for (int n = 0; n < 3000; n++) {
            if (n % 50 == 0) {
                Host.open(sim, ENC, MAC, new int[] {0x01, 0x03, 0x11, 0x13, 0x33}[random.nextInt(5)]);
            }
            byte[] body = new byte[random.nextInt(n % 7 == 0 ? 255 : 40)];
            random.nextBytes(body);
            int cla = random.nextBoolean() ? 0x84 : 0x80;
            byte[] cmd = apdu(cla, insList[random.nextInt(insList.length)], random.nextInt(256), random.nextInt(3),
                    body, random.nextBoolean());
            if (body.length == 0) {
                cmd = Arrays.copyOf(cmd, 4);
            }
            if (sw(send(sim, cmd)) == 0x6F00) {
                escaped++;
            }
        }
        assertEquals(0, escaped, "6F00 answers");
        assertTrue(status(sim)[2] >= 1, "the good authentication every 50 APDUs clears the random failures");
    }

    // ---- an independent host (JDK AES, Bouncy Castle CMAC) ------------------------------------

    static final class Host {
        final CardSimulator sim;
        final byte[] enc;
        final byte[] mac;
        byte[] sEnc;
        byte[] sMac;
        byte[] sRmac;
        byte[] context;
        byte[] initializeUpdate;
        byte[] initializeUpdateResponse;
        byte[] chain = new byte[16];
        long counter;
        int level;

        Host(CardSimulator sim, byte[] enc, byte[] mac) {
            this.sim = sim;
            this.enc = enc;
            this.mac = mac;
        }

        static Host begin(CardSimulator sim, byte[] enc, byte[] mac, byte[] hostChallenge) throws Exception {
            Host h = new Host(sim, enc, mac);
            h.initializeUpdate = concat(HEX.parseHex("8050000008"), hostChallenge, new byte[] {0});
            byte[] r = send(sim, h.initializeUpdate);
            assertEquals(0x9000, sw(r));
            byte[] d = data(r);
            assertEquals(32, d.length);
            assertEquals(0x70, d[12]);
            h.initializeUpdateResponse = d;
            byte[] cardChallenge = Arrays.copyOfRange(d, 13, 21);
            if (Arrays.equals(enc, ENC)) {
                assertArrayEquals(kdf(enc, 0x02, 64, concat(Arrays.copyOfRange(d, 29, 32), SIMVAULT_AID)),
                        cardChallenge, "pseudo-random card challenge");
            }
            h.context = concat(hostChallenge, cardChallenge);
            h.sEnc = kdf(enc, 0x04, 128, h.context);
            h.sMac = kdf(mac, 0x06, 128, h.context);
            h.sRmac = kdf(mac, 0x07, 128, h.context);
            if (Arrays.equals(enc, ENC) && Arrays.equals(mac, MAC)) {
                assertArrayEquals(kdf(h.sMac, 0x00, 64, h.context), Arrays.copyOfRange(d, 21, 29), "card cryptogram");
            }
            return h;
        }

        static Host open(CardSimulator sim, byte[] enc, byte[] mac, int level) throws Exception {
            byte[] challenge = new byte[8];
            new SecureRandom().nextBytes(challenge);
            Host h = begin(sim, enc, mac, challenge);
            assertEquals(0x9000, sw(send(sim, h.externalAuthenticate(level))));
            return h;
        }

        byte[] externalAuthenticate(int lvl) {
            byte[] cryptogram = kdf(sMac, 0x01, 64, context);
            byte[] header = new byte[] {(byte) 0x84, (byte) 0x82, (byte) lvl, 0, 0x10};
            chain = cmac(sMac, concat(new byte[16], header, cryptogram));
            level = lvl;
            counter = 0;
            return concat(header, cryptogram, Arrays.copyOf(chain, 8));
        }

        byte[] wrap(int ins, byte[] data) throws GeneralSecurityException {
            counter++;
            byte[] payload = data;
            if ((level & 0x02) != 0 && data.length > 0) {
                payload = aes(Cipher.ENCRYPT_MODE, sEnc, icv(false), pad(data));
            }
            return macAndFrame(ins, payload);
        }

        /** wrap without padding or encryption (to send a bad C-DEC block). */
        byte[] wrapRaw(int ins, byte[] payload) {
            counter++;
            return macAndFrame(ins, payload);
        }

        private byte[] macAndFrame(int ins, byte[] payload) {
            byte[] header = new byte[] {(byte) 0x84, (byte) ins, 0, 0, (byte) (payload.length + 8)};
            chain = cmac(sMac, concat(chain, header, payload));
            return concat(header, payload, Arrays.copyOf(chain, 8), new byte[] {0});
        }

        byte[] unwrapResponse(byte[] data, int sw) throws GeneralSecurityException {
            if ((level & 0x10) == 0) {
                return data;
            }
            byte[] body = Arrays.copyOf(data, data.length - 8);
            byte[] rmac = cmac(sRmac, concat(chain, body, new byte[] {(byte) (sw >> 8), (byte) sw}));
            assertArrayEquals(Arrays.copyOf(rmac, 8), Arrays.copyOfRange(data, data.length - 8, data.length), "R-MAC");
            if ((level & 0x20) != 0 && body.length > 0) {
                byte[] plain = aes(Cipher.DECRYPT_MODE, sEnc, icv(true), body);
                int end = plain.length - 1;
                while (plain[end] == 0) {
                    end--;
                }
                assertEquals((byte) 0x80, plain[end]);
                return Arrays.copyOf(plain, end);
            }
            return body;
        }

        private byte[] icv(boolean response) throws GeneralSecurityException {
            byte[] block = new byte[16];
            for (int i = 0; i < 8; i++) {
                block[15 - i] = (byte) (counter >>> (8 * i));
            }
            if (response) {
                block[0] = (byte) 0x80;
            }
            return aes(Cipher.ENCRYPT_MODE, sEnc, new byte[16], block);
        }
    }

    static byte[] pad(byte[] data) {
        byte[] out = new byte[(data.length / 16 + 1) * 16];
        System.arraycopy(data, 0, out, 0, data.length);
        out[data.length] = (byte) 0x80;
        return out;
    }

    static byte[] aes(int mode, byte[] key, byte[] iv, byte[] data) throws GeneralSecurityException {
        Cipher c = Cipher.getInstance("AES/CBC/NoPadding");
        c.init(mode, new SecretKeySpec(key, "AES"), new IvParameterSpec(iv));
        return c.doFinal(data);
    }

    static byte[] cmac(byte[] key, byte[] data) {
        CMac m = new CMac(new AESEngine());
        m.init(new KeyParameter(key));
        m.update(data, 0, data.length);
        byte[] out = new byte[16];
        m.doFinal(out, 0);
        return out;
    }

    static byte[] kdf(byte[] key, int constant, int bits, byte[] context) {
        byte[] prefix = new byte[16];
        prefix[11] = (byte) constant;
        prefix[13] = (byte) (bits >> 8);
        prefix[14] = (byte) bits;
        prefix[15] = 1;
        return Arrays.copyOf(cmac(key, concat(prefix, context)), bits / 8);
    }

    static byte[] concat(byte[]... parts) {
        int n = 0;
        for (byte[] p : parts) {
            n += p.length;
        }
        byte[] out = new byte[n];
        int o = 0;
        for (byte[] p : parts) {
            System.arraycopy(p, 0, out, o, p.length);
            o += p.length;
        }
        return out;
    }

    // ---- a minimal JSON reader (objects, arrays, strings, integers, booleans) -----------------

    static final class MiniJson {
        private final String s;
        private int i;

        MiniJson(String s) {
            this.s = s;
        }

        Object parse() {
            Object v = value();
            ws();
            if (i != s.length()) {
                throw new IllegalArgumentException("trailing data at " + i);
            }
            return v;
        }

        private void ws() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private Object value() {
            ws();
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> m = new LinkedHashMap<>();
                i++;
                ws();
                if (s.charAt(i) == '}') {
                    i++;
                    return m;
                }
                while (true) {
                    ws();
                    String k = string();
                    ws();
                    expect(':');
                    m.put(k, value());
                    ws();
                    if (s.charAt(i) == ',') {
                        i++;
                        continue;
                    }
                    expect('}');
                    return m;
                }
            }
            if (c == '[') {
                List<Object> l = new ArrayList<>();
                i++;
                ws();
                if (s.charAt(i) == ']') {
                    i++;
                    return l;
                }
                while (true) {
                    l.add(value());
                    ws();
                    if (s.charAt(i) == ',') {
                        i++;
                        continue;
                    }
                    expect(']');
                    return l;
                }
            }
            if (c == '"') {
                return string();
            }
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            return Long.parseLong(s.substring(start, i));
        }

        private String string() {
            expect('"');
            StringBuilder b = new StringBuilder();
            while (s.charAt(i) != '"') {
                char c = s.charAt(i++);
                if (c == '\\') {
                    char e = s.charAt(i++);
                    switch (e) {
                        case 'n': b.append('\n'); break;
                        case 't': b.append('\t'); break;
                        case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                        default: b.append(e);
                    }
                } else {
                    b.append(c);
                }
            }
            i++;
            return b.toString();
        }

        private void expect(char c) {
            if (s.charAt(i) != c) {
                throw new IllegalArgumentException("expected " + c + " at " + i);
            }
            i++;
        }
    }
}
