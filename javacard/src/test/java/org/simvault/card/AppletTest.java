package org.simvault.card;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.simvault.card.TestCard.concat;
import static org.simvault.card.TestCard.data;
import static org.simvault.card.TestCard.sha256;
import static org.simvault.card.TestCard.sw;
import static org.simvault.card.TestCard.u32;
import static org.simvault.card.TestCard.u64;

/**
 * The backup applet's store behaviour beyond the shared vectors: deduplicated,
 * refcounted chunks across backups, big chunks by chaining and extended length,
 * reads through GET RESPONSE, the resumable upload after a power cut, a broken
 * chain that leaves nothing behind, a full card, commits split over many small
 * transactions.
 */
class AppletTest {
    static final byte[] ID_A = TestCard.HEX.parseHex("0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A");
    static final byte[] ID_B = TestCard.HEX.parseHex("0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B");

    static byte[] bytes(int n, int seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    static byte[] status(TestCard c) {
        return c.expect(0x9000, 0x80, 0x10, 0, 0, new byte[0], 0);
    }

    static int chunks(TestCard c) {
        byte[] s = status(c);
        return ((s[17] & 0xFF) << 24) | ((s[18] & 0xFF) << 16) | ((s[19] & 0xFF) << 8) | (s[20] & 0xFF);
    }

    static int free(TestCard c) {
        byte[] s = status(c);
        return ((s[11] & 0xFF) << 24) | ((s[12] & 0xFF) << 16) | ((s[13] & 0xFF) << 8) | (s[14] & 0xFF);
    }

    /** READ CHUNK without Le: everything behind 61xx, fetched by GET RESPONSE (short Le 00). */
    static byte[] readAllByGetResponse(TestCard c, byte[] id, int size) {
        byte[] r = c.send(0x80, 0x34, 0, 0, concat(id, u32(0)), null);
        byte[] out = new byte[0];
        while ((sw(r) & 0xFF00) == 0x6100) {
            out = concat(out, data(r));
            r = c.send(0x00, 0xC0, 0, 0, new byte[0], 0);
        }
        assertEquals(0x9000, sw(r));
        out = concat(out, data(r));
        assertEquals(size, out.length);
        return out;
    }

    @Test
    void chunksAreSharedAndRefcounted() throws Exception {
        TestCard c = TestCard.personalised(256 * 1024);
        c.selectAndVerify();
        int empty = free(c);
        byte[] c1 = bytes(700, 1);
        byte[] c2 = bytes(3000, 2);
        byte[] c3 = bytes(10, 3);
        assertEquals(0x9000, c.backup(ID_A, 1, new byte[][] {c1, c2}, 255));
        assertEquals(0x9000, c.backup(ID_B, 2, new byte[][] {c2, c3}, 0));
        assertEquals(3, chunks(c));
        c.expect(0x9000, 0x80, 0x36, 0, 0, ID_A, null);
        assertEquals(2, chunks(c));
        c.expect(0x6A88, 0x80, 0x34, 0, 0, concat(sha256(c1), u32(0)), 0);
        assertArrayEquals(c2, readAllByGetResponse(c, sha256(c2), c2.length));
        c.expect(0x9000, 0x80, 0x36, 0, 0, ID_B, null);
        assertEquals(0, chunks(c));
        assertEquals(empty, free(c), "every block is free again");
        // the sequence stays: a new backup must be above 2
        c.expect(0x668A, 0x80, 0x20, 0, 0, concat(ID_A, u64(2), u32(100)), 0);
    }

    @Test
    void bigChunksByChainingAndExtendedLength() throws Exception {
        TestCard c = TestCard.personalised(256 * 1024);
        c.selectAndVerify();
        byte[] big = bytes(16384, 4);
        byte[] other = bytes(16000, 5);
        byte[] m = c.manifest(ID_A, 7, new byte[][] {big, other});
        c.expect(0x9000, 0x80, 0x20, 0, 0, concat(ID_A, u64(7), u32(m.length)), 0);
        c.putChunk(sha256(big), big, 255);
        c.putChunk(sha256(other), other, 0);
        c.expect(0x9000, 0x80, 0x26, 0, 0, concat(u32(0), m), null);       // one extended APDU
        assertEquals(0x9000, sw(c.send(0x80, 0x28, 0, 0, c.sign(m), 0)));
        byte[] head = c.expect(0x9000, 0x80, 0x34, 0, 0, concat(sha256(big), u32(100)), 0);
        assertArrayEquals(Arrays.copyOfRange(big, 100, 356), head, "short Le 00: 256 bytes");
        byte[] ext = c.expect(0x9000, 0x80, 0x34, 0, 0, concat(sha256(other), u32(0)), 65536);
        assertArrayEquals(other, ext, "extended Le 0000: the whole chunk");
        assertArrayEquals(big, readAllByGetResponse(c, sha256(big), big.length));
        byte[] mf = c.expect(0x9000, 0x80, 0x32, 0, 0, concat(ID_A, u32(0)), 65536);
        assertArrayEquals(m, mf);
    }

    @Test
    void anInterruptedUploadResumes() throws Exception {
        TestCard c = TestCard.personalised(256 * 1024);
        c.selectAndVerify();
        byte[] c1 = bytes(2000, 6);
        byte[] c2 = bytes(2000, 7);
        byte[] m = c.manifest(ID_A, 3, new byte[][] {c1, c2});
        c.expect(0x9000, 0x80, 0x20, 0, 0, concat(ID_A, u64(3), u32(m.length)), 0);
        c.putChunk(sha256(c1), c1, 0);
        c.expect(0x9000, 0x80, 0x26, 0, 0, concat(u32(0), Arrays.copyOf(m, 100)), null);
        c.reset();                                                         // power lost
        c.selectAndVerify();
        c.expect(0x6985, 0x80, 0x24, 0, 0, concat(sha256(c2), c2), null);  // BEGIN first
        byte[] begin = c.expect(0x9000, 0x80, 0x20, 0, 0, concat(ID_A, u64(3), u32(m.length)), 0);
        assertArrayEquals(TestCard.HEX.parseHex("010000000100000064"), begin);
        c.putChunk(sha256(c2), c2, 0);
        c.expect(0x9000, 0x80, 0x26, 0, 0, concat(u32(100), Arrays.copyOfRange(m, 100, m.length)), null);
        assertEquals(0x9000, sw(c.send(0x80, 0x28, 0, 0, c.sign(m), 0)));
        assertEquals(2, chunks(c));
    }

    @Test
    void aBrokenChainLeavesNothing() throws Exception {
        TestCard c = TestCard.personalised(256 * 1024);
        c.selectAndVerify();
        c.expect(0x9000, 0x80, 0x20, 0, 0, concat(ID_A, u64(1), u32(300)), 0);
        int before = free(c);
        byte[] chunk = bytes(1000, 8);
        byte[] body = concat(sha256(chunk), chunk);
        c.expect(0x9000, 0x90, 0x24, 0, 0, Arrays.copyOf(body, 255), null);
        c.expect(0x9000, 0x90, 0x24, 0, 0, Arrays.copyOfRange(body, 255, 510), null);
        c.expect(0x6883, 0x80, 0x10, 0, 0, new byte[0], 0);              // another command
        assertEquals(before, free(c));
        assertEquals(0, chunks(c));
        c.putChunk(sha256(chunk), chunk, 255);                             // a new chain works
        assertEquals(1, chunks(c));
        c.expect(0x6A89, 0x80, 0x24, 0, 0, concat(sha256(chunk), chunk), null);
        c.expect(0x6A80, 0x80, 0x24, 0, 0, new byte[20], null);            // shorter than an id
    }

    @Test
    void aFullCardAnswers6A84AndKeepsItsBackups() throws Exception {
        TestCard c = TestCard.personalised(16384);                         // 64 blocks, the smallest store
        c.selectAndVerify();
        byte[] small = bytes(5000, 9);
        assertEquals(0x9000, c.backup(ID_A, 1, new byte[][] {small}, 0));
        byte[] huge = bytes(12000, 10);
        c.expect(0x9000, 0x80, 0x20, 0, 0, concat(ID_B, u64(2), u32(300)), 0);
        c.expect(0x6A84, 0x80, 0x24, 0, 0, concat(sha256(huge), huge), null);
        byte[] body = concat(sha256(huge), huge);
        for (int at = 0; at < body.length; at += 255) {                 // by chaining: the emulator's runtime
            boolean end = at + 255 >= body.length;                       // answers at the last part
            byte[] part = Arrays.copyOfRange(body, at, Math.min(body.length, at + 255));
            assertEquals(end ? 0x6A84 : 0x9000, sw(c.send(end ? 0x80 : 0x90, 0x24, 0, 0, part, null)));
        }
        assertEquals(1, chunks(c));
        assertArrayEquals(small, readAllByGetResponse(c, sha256(small), small.length));
    }

    static int u32At(byte[] s, int at) {
        return ((s[at] & 0xFF) << 24) | ((s[at + 1] & 0xFF) << 16) | ((s[at + 2] & 0xFF) << 8) | (s[at + 3] & 0xFF);
    }

    /** The largest store (32767 blocks) with a chunk table past the 1023 one array held: both
     *  used to overflow a short at install (jCardSim 6444); entries run out as 668B, not 6A84. */
    @Test
    void aLargeStoreAndChunkTableInstallAndTheTableRunsOutAs668B() throws Exception {
        int entries = 1100;
        TestCard c = TestCard.personalised(0x7FFF00, String.format("0702%04X", entries));
        c.selectAndVerify();
        byte[] s = status(c);
        assertEquals(41, s.length);
        assertEquals(0x7FFF00, u32At(s, 7));
        assertEquals(0x7FFF00, u32At(s, 11), "every block free");
        assertEquals(entries, u32At(s, 31));
        assertEquals(256, ((s[35] & 0xFF) << 8) | (s[36] & 0xFF));
        assertEquals(32767, u32At(s, 37), "manifest buffer: store / 128, at most 32767");
        c.expect(0x9000, 0x80, 0x20, 0, 0, concat(ID_A, u64(1), u32(300)), 0);
        for (int i = 0; i < entries; i++) {
            byte[] chunk = bytes(10, 1000 + i);
            c.expect(0x9000, 0x80, 0x24, 0, 0, concat(sha256(chunk), chunk), null);
        }
        byte[] one = bytes(10, 99);
        c.expect(0x668B, 0x80, 0x24, 0, 0, concat(sha256(one), one), null);
        s = status(c);
        assertEquals(entries, u32At(s, 17));
        assertEquals(0x7FFF00 - entries * 256, u32At(s, 11), "one block per chunk, the last slot's too");
        byte[] last = bytes(10, 1000 + entries - 1);                      // the last page's last slot
        assertEquals((byte) 0x80, c.expect(0x9000, 0x80, 0x22, 0, 0, sha256(last), 0)[0]);
        c.expect(0x9000, 0x80, 0x2A, 0, 0, new byte[0], null);            // ABORT frees every entry
        assertEquals(0, chunks(c));
        assertEquals(0x7FFF00, free(c));
    }

    @Test
    void aCommitSplitOverSmallTransactions() throws Exception {
        TestCard c = TestCard.personalised(512 * 1024, "0A020200");        // 512-byte commit budget
        c.selectAndVerify();
        byte[][] many = new byte[60][];
        for (int i = 0; i < many.length; i++) {
            many[i] = bytes(100 + i, 100 + i);
        }
        assertEquals(0x9000, c.backup(ID_A, 1, many, 0));
        assertEquals(60, chunks(c));
        byte[][] half = Arrays.copyOf(many, 30);
        assertEquals(0x9000, c.backup(ID_B, 2, half, 0));
        c.expect(0x9000, 0x80, 0x36, 0, 0, ID_A, null);
        assertEquals(30, chunks(c));
        assertArrayEquals(many[29], readAllByGetResponse(c, sha256(many[29]), many[29].length));
    }
}
