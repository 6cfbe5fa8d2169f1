package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.MessageDigest;

/**
 * The EEPROM block pool that holds chunk bytes and committed manifests.
 *
 * <p>The pool is allocated once at install: 256-byte blocks in 8 KiB byte arrays
 * (Java Card arrays are short-indexed), plus an allocation bitmap (1 = used). An
 * object (a chunk or a manifest) is a list of at most {@link #MAX_RUNS} runs of
 * consecutive blocks, kept in its owner's record as (first block, count) pairs of
 * shorts; a count of 0 ends the list. Runs instead of a per-block chain keep every
 * allocation change a few bytes of bitmap, so one object is freed or taken in one
 * small transaction.
 *
 * <p>Bulk bytes are written non-atomically into blocks that are still free in the
 * bitmap: they become used only when the owner's transaction marks them, so a
 * power cut before that leaves nothing behind (the emulator's card/alloc.py
 * protocol). Objects are at most 32767 bytes (128 blocks).
 */
final class Pool {
    static final short BLOCK = 256;
    static final short PAGE_BLOCKS = 32;
    static final byte MAX_RUNS = 8;
    static final short RUNS_BYTES = (short) (MAX_RUNS * 4);
    /** Commit-buffer cost of marking one run: up to 17 bitmap bytes in one copy. */
    static final short RUN_MARK_COST = (short) (17 + Txn.ENTRY_OVERHEAD);

    final short blocks;
    private final Object[] pages;
    private final byte[] bitmap;
    private final byte[] scratch;       // bitmap bytes being changed (transient)

    Pool(short blocks) {
        this.blocks = blocks;
        // ceilings without blocks + n - 1: blocks may be 32767, the sum would overflow a short
        short npages = (short) (blocks / PAGE_BLOCKS + ((blocks % PAGE_BLOCKS) != 0 ? 1 : 0));
        pages = new Object[npages];
        for (short i = 0; i < npages; i++) {
            short inPage = (short) (blocks - (short) (i * PAGE_BLOCKS));
            if (inPage > PAGE_BLOCKS) {
                inPage = PAGE_BLOCKS;
            }
            pages[i] = new byte[(short) (inPage * BLOCK)];
        }
        bitmap = new byte[(short) (blocks / 8 + ((blocks & 7) != 0 ? 1 : 0))];
        scratch = JCSystem.makeTransientByteArray((short) 24, JCSystem.CLEAR_ON_DESELECT);
    }

    /** Blocks for bytes (0..32767) without overflowing a short. */
    static short blocksFor(short bytes) {
        return (short) ((short) (bytes >> 8) + ((bytes & 0xFF) != 0 ? 1 : 0));
    }

    boolean isFree(short b) {
        return (bitmap[(short) (b >> 3)] & (byte) (0x80 >> (b & 7))) == 0;
    }

    /** Blocks minus the used bits (padding bits past the last block stay 0): no short overflows. */
    short freeBlocks() {
        short used = 0;
        for (short i = 0; i < (short) bitmap.length; i++) {
            byte v = bitmap[i];
            if (v == 0) {
                continue;
            }
            for (short bit = 0; bit < 8; bit++) {
                if ((v & (byte) (0x80 >> bit)) != 0) {
                    used++;
                }
            }
        }
        return (short) (blocks - used);
    }

    /** Clear the whole bitmap (ERASE BACKUPS; idempotent, non-atomic). */
    void clearAll() {
        Util.arrayFillNonAtomic(bitmap, (short) 0, (short) bitmap.length, (byte) 0);
    }

    // ---- reservation (RAM only) -----------------------------------------------------

    /** Length of the free run starting at b (0 if b is used), at most max. */
    private short runAt(short b, short max) {
        short n = 0;
        while (b < blocks && n < max && isFree(b)) {
            b++;
            n++;
        }
        return n;
    }

    /**
     * Choose free blocks for an object of want blocks, as runs written to runs[off..]
     * (unused pairs zeroed); returns the blocks obtained (less than want when the pool,
     * or MAX_RUNS runs of it, cannot hold that much). Best fit first (the smallest
     * free run that holds everything), else the largest runs: fragmentation costs few runs.
     */
    short reserve(short want, byte[] runs, short off) {
        Util.arrayFillNonAtomic(runs, off, RUNS_BYTES, (byte) 0);
        if (want <= 0) {
            return 0;
        }
        short best = -1;
        short bestLen = 0;
        for (short b = 0; b < blocks; ) {
            short len = runAt(b, Sw.MAX_SHORT);
            if (len == 0) {
                b++;
                continue;
            }
            if (len >= want && (best < 0 || len < bestLen)) {
                best = b;
                bestLen = len;
            }
            b += len;
        }
        if (best >= 0) {
            Util.setShort(runs, off, best);
            Util.setShort(runs, (short) (off + 2), want);
            return want;
        }
        short got = 0;
        for (byte r = 0; r < MAX_RUNS && got < want; r++) {
            short bigStart = -1;
            short bigLen = 0;
            for (short b = 0; b < blocks; ) {
                short len = runAt(b, Sw.MAX_SHORT);
                if (len == 0) {
                    b++;
                    continue;
                }
                if (len > bigLen && !taken(runs, off, r, b)) {
                    bigStart = b;
                    bigLen = len;
                }
                b += len;
            }
            if (bigStart < 0) {
                break;
            }
            short take = (short) (want - got) < bigLen ? (short) (want - got) : bigLen;
            Util.setShort(runs, (short) (off + 4 * r), bigStart);
            Util.setShort(runs, (short) (off + 4 * r + 2), take);
            got += take;
        }
        return got;
    }

    private static boolean taken(byte[] runs, short off, byte n, short start) {
        for (byte i = 0; i < n; i++) {
            if (Util.getShort(runs, (short) (off + 4 * i)) == start) {
                return true;
            }
        }
        return false;
    }

    /** Shorten a reservation to the first keep blocks (the rest stays free). */
    static void trim(byte[] runs, short off, short keep) {
        for (byte r = 0; r < MAX_RUNS; r++) {
            short at = (short) (off + 4 * r + 2);
            short count = Util.getShort(runs, at);
            if (count > keep) {
                count = keep;
                Util.setShort(runs, at, count);
                if (count == 0) {
                    Util.setShort(runs, (short) (at - 2), (short) 0);
                }
            }
            keep -= count;
        }
    }

    static short runCount(byte[] runs, short off) {
        byte n = 0;
        while (n < MAX_RUNS && Util.getShort(runs, (short) (off + 4 * n + 2)) != 0) {
            n++;
        }
        return n;
    }

    static short capacity(byte[] runs, short off) {
        short n = 0;
        for (byte r = 0; r < MAX_RUNS; r++) {
            n += Util.getShort(runs, (short) (off + 4 * r + 2));
        }
        return n;
    }

    // ---- allocation changes (inside the caller's transaction) -------------------------

    /** Mark the object's runs used or free; its cost is runCount * RUN_MARK_COST. */
    void mark(byte[] runs, short off, boolean used) {
        for (byte r = 0; r < MAX_RUNS; r++) {
            short start = Util.getShort(runs, (short) (off + 4 * r));
            short count = Util.getShort(runs, (short) (off + 4 * r + 2));
            if (count == 0) {
                return;
            }
            short first = (short) (start >> 3);
            short last = (short) ((short) (start + count - 1) >> 3);
            short n = (short) (last - first + 1);
            Util.arrayCopyNonAtomic(bitmap, first, scratch, (short) 0, n);
            for (short b = start; b < (short) (start + count); b++) {
                short i = (short) ((b >> 3) - first);
                byte bit = (byte) (0x80 >> (b & 7));
                scratch[i] = used ? (byte) (scratch[i] | bit) : (byte) (scratch[i] & ~bit);
            }
            Util.arrayCopy(scratch, (short) 0, bitmap, first, n);      // one entry in the commit buffer
        }
    }

    // ---- object bytes ------------------------------------------------------------------

    /** The absolute block holding byte objOff of the object, or -1 past its runs. */
    private static short blockOf(byte[] runs, short off, short objOff) {
        short blk = (short) (objOff >> 8);
        for (byte r = 0; r < MAX_RUNS; r++) {
            short count = Util.getShort(runs, (short) (off + 4 * r + 2));
            if (count == 0) {
                return -1;
            }
            if (blk < count) {
                return (short) (Util.getShort(runs, (short) (off + 4 * r)) + blk);
            }
            blk -= count;
        }
        return -1;
    }

    private byte[] page(short block) {
        return (byte[]) pages[(short) (block / PAGE_BLOCKS)];
    }

    private static short inPage(short block, short objOff) {
        return (short) ((short) ((short) (block % PAGE_BLOCKS) * BLOCK) + (short) (objOff & 0xFF));
    }

    /** Segment length at objOff: up to the end of its block and of len. */
    private static short segment(short objOff, short len) {
        short room = (short) (BLOCK - (short) (objOff & 0xFF));
        return len < room ? len : room;
    }

    /** Non-atomic write of src into the object's (reserved) blocks. */
    void write(byte[] runs, short runsOff, short objOff, byte[] src, short srcOff, short len) {
        while (len > 0) {
            short block = blockOf(runs, runsOff, objOff);
            short n = segment(objOff, len);
            Util.arrayCopyNonAtomic(src, srcOff, page(block), inPage(block, objOff), n);
            objOff += n;
            srcOff += n;
            len -= n;
        }
    }

    void read(byte[] runs, short runsOff, short objOff, byte[] dst, short dstOff, short len) {
        while (len > 0) {
            short block = blockOf(runs, runsOff, objOff);
            short n = segment(objOff, len);
            Util.arrayCopyNonAtomic(page(block), inPage(block, objOff), dst, dstOff, n);
            objOff += n;
            dstOff += n;
            len -= n;
        }
    }

    /** sendBytesLong the object's bytes (setOutgoingLength already done). */
    void send(APDU apdu, byte[] runs, short runsOff, short objOff, short len) {
        while (len > 0) {
            short block = blockOf(runs, runsOff, objOff);
            short n = segment(objOff, len);
            apdu.sendBytesLong(page(block), inPage(block, objOff), n);
            objOff += n;
            len -= n;
        }
    }

    /** Feed len bytes of the object to a digest (no final). */
    void digest(MessageDigest md, byte[] runs, short runsOff, short objOff, short len) {
        while (len > 0) {
            short block = blockOf(runs, runsOff, objOff);
            short n = segment(objOff, len);
            md.update(page(block), inPage(block, objOff), n);
            objOff += n;
            len -= n;
        }
    }
}
