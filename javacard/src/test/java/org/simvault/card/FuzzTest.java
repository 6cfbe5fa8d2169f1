package org.simvault.card;

import com.licel.jcardsim.smartcardio.CardSimulator;
import org.junit.jupiter.api.Test;

import java.security.KeyPair;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.simvault.card.TestCard.concat;
import static org.simvault.card.TestCard.sha256;
import static org.simvault.card.TestCard.sw;
import static org.simvault.card.TestCard.u32;
import static org.simvault.card.TestCard.u64;

/**
 * Thousands of random and malformed APDUs against the applet in jCardSim: wrong
 * CLA/INS/P1-P2, Lc and data of every length, garbage and mutated TLVs (signed
 * manifests with flipped bytes), upload steps out of order, broken chains, power
 * cuts, wrapped admin commands with garbage inside. Every answer must be an ISO
 * status word (SW1 61-6F, or 9000) with data only on 9000/61xx, and none may be
 * 6F00 (jCardSim's answer to an exception the applet did not catch). The card must
 * still do a whole backup afterwards. Fixed seeds: a failure is reproducible.
 */
class FuzzTest {
    static final int GENERAL_ROUNDS = 8000;
    static final int ADMIN_ROUNDS = 1500;
    static final int[] INS = {0xA4, 0xC0, 0x70, 0x20, 0x24, 0x2C, 0x10, 0x22, 0x26, 0x28, 0x2A, 0x30, 0x32, 0x34,
        0x36, 0x40, 0x50, 0x82, 0xE2, 0xE4, 0xEE, 0x00, 0xFF, 0xB0, 0xCA};
    static final int[] CLA = {0x00, 0x80, 0x84, 0x10, 0x90, 0x94, 0x01, 0x81, 0x0C, 0x04, 0x40, 0x60, 0xA0, 0xFF, 0xE0};
    static final int[] LENGTHS = {0, 1, 3, 4, 7, 8, 15, 16, 17, 20, 27, 28, 29, 31, 32, 33, 35, 36, 37, 63, 64, 65, 72,
        73, 74, 81, 88, 96, 128, 200, 254, 255};

    final Random rnd = new Random(20261206);
    final TreeMap<String, Integer> sws = new TreeMap<>();
    final List<String> escaped = new ArrayList<>();
    int answers;

    byte[] random(int n) {
        byte[] b = new byte[n];
        rnd.nextBytes(b);
        return b;
    }

    int pick(int[] values) {
        return values[rnd.nextInt(values.length)];
    }

    /** Send, check the answer's form, count it. */
    byte[] send(TestCard c, byte[] cmd) {
        byte[] r = c.transmit(cmd);
        answers++;
        assertTrue(r.length >= 2, "an answer without status word");
        int sw = sw(r);
        int sw1 = sw >> 8;
        boolean iso = sw == 0x9000 || (sw1 >= 0x61 && sw1 <= 0x6F);
        assertTrue(iso, String.format("SW %04X is not an ISO 7816 status word (command %s)", sw, TestCard.HEX.formatHex(cmd)));
        if (r.length > 2) {
            assertTrue(sw == 0x9000 || sw1 == 0x61, String.format("data with SW %04X", sw));
        }
        if (sw == 0x6F00) {
            escaped.add(TestCard.HEX.formatHex(Arrays.copyOf(cmd, Math.min(cmd.length, 48))));
        }
        sws.merge(String.format("%04X", sw1 == 0x61 ? 0x6100 : sw), 1, Integer::sum);
        return r;
    }

    /** A command of random shape: class, instruction, P1-P2, data length, Le. */
    byte[] shaped() {
        int cla = rnd.nextInt(4) == 0 ? rnd.nextInt(256) : pick(CLA);
        int ins = rnd.nextInt(6) == 0 ? rnd.nextInt(256) : pick(INS);
        int p1 = rnd.nextInt(3) == 0 ? rnd.nextInt(256) : pick(new int[] {0, 0, 1, 4});
        int p2 = rnd.nextInt(3) == 0 ? rnd.nextInt(256) : pick(new int[] {0, 0, 0x81, 0x0C});
        int n = rnd.nextInt(10) == 0 ? 256 + rnd.nextInt(3000) : pick(LENGTHS);
        Integer le = rnd.nextBoolean() ? null : pick(new int[] {0, 1, 8, 44, 255, 256, 300, 65536});
        return TestCard.apdu(cla, ins, p1, p2, random(n), le);
    }

    /** Raw bytes: truncated headers, Lc that does not match the body, extended framing errors. */
    byte[] framing() {
        byte[] b = random(rnd.nextInt(12));
        if (b.length > 4 && rnd.nextBoolean()) {
            b[4] = 0;
        }
        if (b.length > 0) {
            b[0] = (byte) pick(CLA);
        }
        return b;
    }

    /** A valid command with one to three bytes changed, or cut, or extended. */
    byte[] mutated(byte[] valid) {
        byte[] b = valid.clone();
        switch (rnd.nextInt(4)) {
            case 0:
                for (int k = 0; k <= rnd.nextInt(3); k++) {
                    int i = 5 + rnd.nextInt(Math.max(1, b.length - 5));
                    if (i < b.length) {
                        b[i] ^= (byte) (1 << rnd.nextInt(8));
                    }
                }
                return b;
            case 1:
                if (b.length > 6) {
                    int keep = 5 + rnd.nextInt(b.length - 5);
                    b = Arrays.copyOf(b, keep);
                    b[4] = (byte) (keep - 5);
                }
                return b;
            case 2:
                return TestCard.apdu(b[0] & 0xFF, b[1] & 0xFF, b[2] & 0xFF, b[3] & 0xFF,
                        concat(Arrays.copyOfRange(b, 5, b.length), random(1 + rnd.nextInt(40))), null);
            default:
                b[rnd.nextInt(4)] ^= (byte) (1 << rnd.nextInt(8));
                return b;
        }
    }

    /** Valid commands of the upload and read paths, to be sent as they are or mutated. */
    byte[] template(TestCard c, byte[] chunk, byte[] manifest, byte[] signature) throws Exception {
        byte[] id = AppletTest.ID_A;
        byte[] cid = sha256(chunk);
        switch (rnd.nextInt(14)) {
            case 0: return TestCard.apdu(0x00, 0xA4, 4, 0, TestCard.AID, 0);
            case 1: return TestCard.apdu(0x00, 0x20, 0, 0x81, TestCard.pinBlock(TestCard.PIN), null);
            case 2: return TestCard.apdu(0x80, 0x20, 0, 0, concat(id, u64(1 + rnd.nextInt(3)), u32(manifest.length)), 0);
            case 3: return TestCard.apdu(0x80, 0x22, 0, 0, concat(cid, random(32)), 0);
            case 4: return TestCard.apdu(0x80, 0x24, 0, 0, concat(cid, chunk), null);
            case 5: {
                int at = rnd.nextInt(manifest.length);
                int n = 1 + rnd.nextInt(Math.min(200, manifest.length - at));
                return TestCard.apdu(0x80, 0x26, 0, 0, concat(u32(at), Arrays.copyOfRange(manifest, at, at + n)), null);
            }
            case 6: return TestCard.apdu(0x80, 0x26, 0, 0, concat(u32(0), manifest), null);
            case 7: return TestCard.apdu(0x80, 0x28, 0, 0, signature, 0);
            case 8: return TestCard.apdu(0x80, 0x30, rnd.nextInt(20), 0, new byte[0], pick(new int[] {0, 10, 45}));
            case 9: return TestCard.apdu(0x80, 0x32, rnd.nextInt(2), 0, concat(id, u32(rnd.nextInt(400))), 0);
            case 10: return TestCard.apdu(0x80, 0x34, 0, 0, concat(cid, u32(rnd.nextInt(1200))), pick(new int[] {0, 7}));
            case 11: return TestCard.apdu(0x80, 0x36, 0, 0, id, null);
            case 12: return TestCard.apdu(0x00, 0xC0, 0, 0, new byte[0], pick(new int[] {0, 5}));
            default: return TestCard.apdu(0x80, 0x50, 0, 0, random(8), 0);
        }
    }

    /** A chained command of random parts, sometimes broken by another command. */
    void chain(TestCard c, byte[] chunk) throws Exception {
        byte[] body = concat(sha256(chunk), chunk);
        int ins = pick(new int[] {0x24, 0x24, 0x22, 0x26, 0x20, 0x28, 0x10});
        int at = 0;
        while (at < body.length) {
            int n = 1 + rnd.nextInt(255);
            boolean last = at + n >= body.length || rnd.nextInt(8) == 0;
            byte[] part = Arrays.copyOfRange(body, at, Math.min(body.length, at + n));
            byte[] r = send(c, TestCard.apdu(last ? 0x80 : 0x90, ins, 0, 0, part, null));
            if (last || sw(r) != 0x9000 || rnd.nextInt(20) == 0) {
                return;                                  // ended, refused, or left open for the next command
            }
            at += n;
        }
    }

    @Test
    void underT1() throws Exception {
        fuzz("T=1");
    }

    @Test
    void underT0() throws Exception {
        fuzz("T=0");
    }

    void fuzz(String protocol) throws Exception {
        KeyPair signer = AdminTest.newKey();
        CardSimulator sim = AdminTest.card(TestCard.point(signer));
        sim.changeProtocol(protocol);
        sim.selectApplet(new javacard.framework.AID(TestCard.AID, (short) 0, (byte) TestCard.AID.length));
        TestCard c = new TestCard(sim, signer);
        byte[] chunk = AppletTest.bytes(1000, 42);
        byte[] manifest = c.manifest(AppletTest.ID_A, 2, new byte[][] {chunk});
        byte[] signature = c.sign(manifest);

        // admin phase: a real channel at a random level, garbage inside valid MACs
        for (int i = 0; i < ADMIN_ROUNDS; i++) {
            if (i % 50 == 0) {
                c.expect(0x9000, 0x00, 0xA4, 0x04, 0x00, TestCard.AID, 0);      // ends any open chain
                Scp03Test.Host host = Scp03Test.Host.open(sim, TestCard.ENC, TestCard.MAC, pick(new int[] {1, 3, 0x11, 0x13, 0x33}));
                for (int k = 0; k < 49 && i < ADMIN_ROUNDS; k++, i++) {
                    int ins = pick(new int[] {0xE2, 0xE2, 0xE4, 0xEE, 0x10, 0x82, rnd.nextInt(256)});
                    byte[] data = rnd.nextInt(4) == 0 ? concat(TestCard.keyId(signer), TestCard.point(signer))
                            : random(pick(LENGTHS));
                    byte[] cmd = rnd.nextInt(10) == 0 ? host.wrapRaw(ins, random(rnd.nextInt(40))) : host.wrap(ins, data);
                    int sw = sw(send(c, rnd.nextInt(12) == 0 ? mutated(cmd) : cmd));
                    if (sw == 0x6988 || sw == 0x6982 || sw == 0x6985) {
                        break;                                   // the channel closed: open a new one
                    }
                }
            } else {
                send(c, shaped());
            }
        }
        // general phase
        for (int i = 0; i < GENERAL_ROUNDS; i++) {
            if (i % 40 == 0) {                                   // back into the deep states now and then
                send(c, TestCard.apdu(0x00, 0xA4, 4, 0, TestCard.AID, 0));
                send(c, TestCard.apdu(0x00, 0x20, 0, 0x81, TestCard.pinBlock(TestCard.PIN), null));
                send(c, TestCard.apdu(0x80, 0x20, 0, 0, concat(AppletTest.ID_A, u64(1 + rnd.nextInt(3)),
                        u32(manifest.length)), 0));
            }
            int kind = rnd.nextInt(100);
            if (kind < 25) {
                send(c, shaped());
            } else if (kind < 35) {
                send(c, framing());
            } else if (kind < 60) {
                send(c, template(c, chunk, manifest, signature));
            } else if (kind < 85) {
                send(c, mutated(template(c, chunk, manifest, signature)));
            } else if (kind < 95) {
                chain(c, rnd.nextBoolean() ? chunk : random(rnd.nextInt(600)));
            } else if (kind < 97) {
                c.reset();
                send(c, TestCard.apdu(0x00, 0xA4, 4, 0, TestCard.AID, 0));
                send(c, TestCard.apdu(0x00, 0x20, 0, 0x81, TestCard.pinBlock(TestCard.PIN), null));
            } else {
                // keep the PIN usable: unblock it with the PUK
                send(c, TestCard.apdu(0x00, 0x2C, 0, 0x81, concat(TestCard.pinBlock(TestCard.PUK),
                        TestCard.pinBlock(TestCard.PIN)), null));
            }
        }
        System.out.println("fuzz " + protocol + ": " + answers + " APDUs, 6F00: " + escaped.size() + ", status words " + sws);
        assertEquals(0, escaped.size(), escaped.size() + " answers were 6F00, e.g. " + escaped.subList(0, Math.min(5, escaped.size())));

        // the card still works
        c.reset();
        c.expect(0x9000, 0x00, 0xA4, 0x04, 0x00, TestCard.AID, 0);
        send(c, TestCard.apdu(0x00, 0x2C, 0, 0x81, concat(TestCard.pinBlock(TestCard.PUK), TestCard.pinBlock(TestCard.PIN)), null));
        c.expect(0x9000, 0x00, 0x20, 0x00, 0x81, TestCard.pinBlock(TestCard.PIN), null);
        c.expect(0x9000, 0x80, 0x2A, 0, 0, new byte[0], null);
        // no block or chunk slot leaked: delete every backup, and the store is empty again
        byte[] list = c.expect(0x9000, 0x80, 0x30, 0, 0, new byte[0], 0);
        while (list[0] != 0) {
            c.expect(0x9000, 0x80, 0x36, 0, 0, Arrays.copyOfRange(list, 1, 17), null);
            list = c.expect(0x9000, 0x80, 0x30, 0, 0, new byte[0], 0);
        }
        byte[] status = AppletTest.status(c);
        assertEquals(0, AppletTest.chunks(c), "chunk slots leaked");
        assertTrue(Arrays.equals(Arrays.copyOfRange(status, 7, 11), Arrays.copyOfRange(status, 11, 15)),
                "pool blocks leaked: capacity " + TestCard.HEX.formatHex(Arrays.copyOfRange(status, 7, 11))
                        + ", free " + TestCard.HEX.formatHex(Arrays.copyOfRange(status, 11, 15)));
        byte[] fresh = AppletTest.bytes(5000, 43);
        assertEquals(0x9000, c.backup(AppletTest.ID_B, 1000, new byte[][] {fresh, chunk}, 200));
        assertTrue(Arrays.equals(fresh, AppletTest.readAllByGetResponse(c, sha256(fresh), fresh.length)));
        assertEquals(0, c.internalErrors);
    }
}
