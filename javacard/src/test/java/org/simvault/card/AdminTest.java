package org.simvault.card;

import com.licel.jcardsim.smartcardio.CardSimulator;
import javacard.framework.AID;
import org.junit.jupiter.api.Test;

import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.spec.ECGenParameterSpec;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.simvault.card.Scp03Test.Host;
import static org.simvault.card.TestCard.concat;
import static org.simvault.card.TestCard.data;
import static org.simvault.card.TestCard.sw;

/**
 * The admin commands of the backup applet through real SCP03 at every security
 * level, against Scp03Test's independent host (JDK AES, Bouncy Castle CMAC): PUT and
 * DELETE TRUST ANCHOR with R-MAC (and R-ENC) checked, the refusals (bad point, key id
 * of another point, wrong C-MAC closes the channel), and ERASE BACKUPS keeping the
 * sequence high-water mark.
 */
class AdminTest {
    static final byte[] AID_BYTES = TestCard.AID;

    /** The applet in a bare CardSimulator (Scp03Test.Host talks to one), selected. */
    static CardSimulator card(byte[] anchorPoint) {
        byte[] params = TestCard.HEX.parseHex("0108" + TestCard.HEX.formatHex(TestCard.pinBlock(TestCard.PIN))
                + "0208" + TestCard.HEX.formatHex(TestCard.pinBlock(TestCard.PUK))
                + "0330" + TestCard.HEX.formatHex(concat(TestCard.ENC, TestCard.MAC, TestCard.DEK))
                + "040101" + "0541" + TestCard.HEX.formatHex(anchorPoint) + "060400040000");
        byte[] install = concat(new byte[] {(byte) AID_BYTES.length}, AID_BYTES, new byte[] {1, 0, (byte) params.length},
                params);
        CardSimulator sim = new CardSimulator();
        AID instance = new AID(AID_BYTES, (short) 0, (byte) AID_BYTES.length);
        sim.installApplet(instance, BackupApplet.class, install, (short) 0, (byte) install.length);
        sim.selectApplet(instance);
        return sim;
    }

    /** apdu_specs/vectors/scp03.json, where it applies to this applet: installed under the trace's
     *  AID with its keys, the card answers INITIALIZE UPDATE with the real card's bytes (i = 70: the
     *  challenge comes from the sequence counter and the AID), takes its EXTERNAL AUTHENTICATE at
     *  levels 03, 11 and 33, and unwraps its first command (84 E2 91 00: a valid C-MAC and C-DEC,
     *  then 6A86 for P1 91, not 6988); the trace's other commands are GlobalPlatform's, not ours. */
    @Test
    @SuppressWarnings("unchecked")
    void thePublishedTraceOpensTheChannel() throws Exception {
        java.util.Map<String, Object> doc = Scp03Test.vectors();
        java.util.Map<String, Object> keys = (java.util.Map<String, Object>) doc.get("keys");
        byte[] aid = Scp03Test.hex(doc.get("aid"));
        byte[] params = TestCard.HEX.parseHex("0108" + TestCard.HEX.formatHex(TestCard.pinBlock(TestCard.PIN))
                + "0208" + TestCard.HEX.formatHex(TestCard.pinBlock(TestCard.PUK)) + "0330" + keys.get("enc")
                + keys.get("mac") + keys.get("dek") + "0401" + keys.get("version"));
        byte[] install = concat(new byte[] {(byte) aid.length}, aid, new byte[] {1, 0, (byte) params.length}, params);
        CardSimulator sim = new CardSimulator();
        AID instance = new AID(aid, (short) 0, (byte) aid.length);
        sim.installApplet(instance, BackupApplet.class, install, (short) 0, (byte) install.length);
        sim.selectApplet(instance);
        int sequence = 0;
        for (Object o : (java.util.List<Object>) doc.get("sessions")) {
            java.util.Map<String, Object> session = (java.util.Map<String, Object>) o;
            int wanted = ((Number) session.get("sequence_counter")).intValue();
            for (; sequence + 1 < wanted; sequence++) {
                assertEquals(0x9000, sw(sim.transmitCommand(TestCard.HEX.parseHex("80500000080000000000000000"))));
            }
            java.util.Map<String, Object> iu = (java.util.Map<String, Object>) session.get("initialize_update");
            byte[] r = sim.transmitCommand(Scp03Test.hex(iu.get("command")));
            sequence++;
            assertArrayEquals(Scp03Test.hex(iu.get("response")), data(r), session.get("name") + ": INITIALIZE UPDATE");
            assertEquals(0x9000, sw(sim.transmitCommand(Scp03Test.hex(session.get("external_authenticate")))));
            byte[] status = sim.transmitCommand(TestCard.HEX.parseHex("8010000000"));
            assertEquals(1, status[6], session.get("name") + ": admin authenticated");
            java.util.Map<String, Object> first = (java.util.Map<String, Object>)
                    ((java.util.List<Object>) session.get("commands")).get(0);
            assertEquals(0x6A86, sw(sim.transmitCommand(Scp03Test.hex(first.get("wrapped")))),
                    session.get("name") + ": the trace's C-MAC (and C-DEC) accepted");
            assertEquals(1, sim.transmitCommand(TestCard.HEX.parseHex("8010000000"))[6], "still open");
        }
    }

    static KeyPair newKey() throws Exception {
        KeyPairGenerator g = KeyPairGenerator.getInstance("EC");
        g.initialize(new ECGenParameterSpec("secp256r1"));
        return g.generateKeyPair();
    }

    static byte[] listAnchors(CardSimulator sim) {
        byte[] r = sim.transmitCommand(TestCard.HEX.parseHex("8040000000"));
        assertEquals(0x9000, sw(r));
        return data(r);
    }

    @Test
    void trustAnchorsAtEveryLevel() throws Exception {
        KeyPair first = newKey();
        CardSimulator sim = card(TestCard.point(first));
        for (int level : new int[] {0x01, 0x03, 0x11, 0x13, 0x33}) {
            Host host = Host.open(sim, TestCard.ENC, TestCard.MAC, level);
            KeyPair kp = newKey();
            byte[] id = TestCard.keyId(kp);
            byte[] r = sim.transmitCommand(host.wrap(0xE2, concat(id, TestCard.point(kp))));
            assertEquals(0x9000, sw(r), "PUT TRUST ANCHOR at level " + level);
            assertEquals((level & 0x10) != 0 ? 8 : 0, data(r).length, "R-MAC only at 1x");
            assertArrayEquals(new byte[0], host.unwrapResponse(data(r), sw(r)));
            assertArrayEquals(concat(TestCard.keyId(first), id), listAnchors(sim));
            r = sim.transmitCommand(host.wrap(0xE4, id));
            assertEquals(0x9000, sw(r));
            host.unwrapResponse(data(r), sw(r));
            r = sim.transmitCommand(host.wrap(0xE4, id));
            assertEquals(0x6A88, sw(r), "gone");
            assertEquals(2, r.length, "an error answer carries no R-MAC");
            assertArrayEquals(TestCard.keyId(first), listAnchors(sim));
        }
    }

    @Test
    void badAnchorsAndMacsAreRefused() throws Exception {
        CardSimulator sim = card(TestCard.point(newKey()));
        Host host = Host.open(sim, TestCard.ENC, TestCard.MAC, 0x33);
        KeyPair kp = newKey();
        byte[] offCurve = TestCard.point(kp);
        offCurve[64] ^= 1;
        assertEquals(0x6A80, sw(sim.transmitCommand(host.wrap(0xE2, concat(TestCard.keyId(kp), offCurve)))));
        byte[] otherId = TestCard.keyId(newKey());
        assertEquals(0x6A80, sw(sim.transmitCommand(host.wrap(0xE2, concat(otherId, TestCard.point(kp))))));
        assertEquals(0x6A80, sw(sim.transmitCommand(host.wrap(0xE2, otherId))), "too short");
        byte[] cmd = host.wrap(0xE2, concat(TestCard.keyId(kp), TestCard.point(kp)));
        cmd[cmd.length - 2] ^= 1;                                          // the C-MAC
        assertEquals(0x6988, sw(sim.transmitCommand(cmd)));
        assertEquals(0x6982, sw(sim.transmitCommand(host.wrap(0xE4, otherId))), "the channel is closed");
        assertEquals(1, listAnchors(sim).length / 8);
    }

    @Test
    void eraseKeepsTheSequence() throws Exception {
        KeyPair signer = newKey();
        CardSimulator sim = card(TestCard.point(signer));
        TestCard viaSim = new TestCard(sim, signer);
        viaSim.selectAndVerify();
        byte[] chunk = AppletTest.bytes(3000, 11);
        assertEquals(0x9000, viaSim.backup(AppletTest.ID_A, 5, new byte[][] {chunk}, 0));
        Host host = Host.open(sim, TestCard.ENC, TestCard.MAC, 0x11);
        byte[] r = sim.transmitCommand(host.wrap(0xEE, new byte[0]));
        assertEquals(0x9000, sw(r));
        host.unwrapResponse(data(r), sw(r));
        viaSim.selectAndVerify();
        byte[] status = AppletTest.status(viaSim);
        assertEquals(0, status[15], "no backup");
        assertEquals(0, AppletTest.chunks(viaSim));
        assertArrayEquals(TestCard.u64(5), Arrays.copyOfRange(status, 22, 30), "the high-water mark survives");
        viaSim.expect(0x668A, 0x80, 0x20, 0, 0, concat(AppletTest.ID_B, TestCard.u64(5), TestCard.u32(200)), 0);
        assertEquals(0x9000, viaSim.backup(AppletTest.ID_B, 6, new byte[][] {chunk}, 0));
        assertEquals(0, viaSim.internalErrors);
    }
}
