package org.simvault.card;

import javacard.framework.JCSystem;
import javacard.framework.Util;

/**
 * The chunk table of the {@link Store}: content-addressed (a chunk is found by its
 * 32-byte id, stored once however many backups use it) and refcounted (a chunk is
 * freed when the last backup referencing it is deleted). Per slot: meta (state, -,
 * refcount, length: 8 bytes), id (32), SHA-256 of the stored bytes (32), the runs of
 * its pool blocks (32). Allocated once at install, in pages of {@link #PAGE} slots (a page
 * of ids is 8 KiB): one array per table would overflow its short index at 1024 slots.
 *
 * <p>Methods that change a slot other than {@link #addPending} run inside the
 * Store's transactions (its work register).
 */
final class Chunks {
    static final short PAGE = 256;
    static final short PAGES_MAX = 32;
    private static final short M_STATE = 0;
    private static final short M_RC = 2;
    private static final short M_LEN = 4;
    private static final short META = 8;
    private static final short ID = Store.ID_LENGTH;

    final short max;
    private final Pool pool;
    private final Object[] meta;
    private final Object[] ids;
    private final Object[] shas;
    private final Object[] runs;

    Chunks(Pool pool, short max) {
        this.pool = pool;
        this.max = max;
        short npages = (short) (max / PAGE + ((max % PAGE) != 0 ? 1 : 0));
        meta = new Object[npages];
        ids = new Object[npages];
        shas = new Object[npages];
        runs = new Object[npages];
        for (short p = 0; p < npages; p++) {
            short n = (short) (max - (short) (p * PAGE));
            if (n > PAGE) {
                n = PAGE;
            }
            meta[p] = new byte[(short) (n * META)];
            ids[p] = new byte[(short) (n * ID)];
            shas[p] = new byte[(short) (n * ID)];
            runs[p] = new byte[(short) (n * Pool.RUNS_BYTES)];
        }
    }

    private static byte[] page(Object[] pages, short slot) {
        return (byte[]) pages[(short) (slot >> 8)];
    }

    /** Offset of slot's record of size bytes inside its page. */
    private static short at(short slot, short size) {
        return (short) ((short) (slot & 0xFF) * size);
    }

    private byte[] metaOf(short slot) {
        return page(meta, slot);
    }

    /** Slot of a stored (pending or committed) chunk, or -1. */
    short find(byte[] id, short off) {
        for (short s = 0; s < max; s++) {
            byte[] page = page(ids, s);
            short a = at(s, ID);
            if (page[a] == id[off] && metaOf(s)[at(s, META)] != Store.FREE
                    && Util.arrayCompare(page, a, id, off, ID) == 0) {
                return s;
            }
        }
        return -1;
    }

    short freeSlot() {
        for (short s = 0; s < max; s++) {
            if (metaOf(s)[at(s, META)] == Store.FREE) {
                return s;
            }
        }
        return -1;
    }

    byte state(short slot) {
        return metaOf(slot)[(short) (at(slot, META) + M_STATE)];
    }

    short length(short slot) {
        return Util.getShort(metaOf(slot), (short) (at(slot, META) + M_LEN));
    }

    short refcount(short slot) {
        return Util.getShort(metaOf(slot), (short) (at(slot, META) + M_RC));
    }

    /** Compare the stored SHA-256 of a chunk with h[off..off+32). */
    boolean hashIs(short slot, byte[] h, short off) {
        return Util.arrayCompare(page(shas, slot), at(slot, ID), h, off, ID) == 0;
    }

    /** The array holding slot's runs, at {@link #runsOffset}. */
    byte[] runsPage(short slot) {
        return page(runs, slot);
    }

    static short runsOffset(short slot) {
        return at(slot, Pool.RUNS_BYTES);
    }

    /** The slots in state (FREE: every used slot). */
    short count(byte state) {
        short n = 0;
        for (short s = 0; s < max; s++) {
            byte st = metaOf(s)[at(s, META)];
            if (state == Store.FREE ? st != Store.FREE : st == state) {
                n++;
            }
        }
        return n;
    }

    /** Record a received chunk as PENDING: its runs become used in the same transaction. */
    void addPending(short slot, byte[] id, short idOff, byte[] sha, short shaOff, short length,
                    byte[] newRuns, short runsOff) {
        JCSystem.beginTransaction();
        pool.mark(newRuns, runsOff, true);
        Util.arrayCopy(id, idOff, page(ids, slot), at(slot, ID), ID);
        Util.arrayCopy(sha, shaOff, page(shas, slot), at(slot, ID), ID);
        Util.arrayCopy(newRuns, runsOff, runsPage(slot), runsOffset(slot), Pool.RUNS_BYTES);
        byte[] mp = metaOf(slot);
        short m = at(slot, META);
        Util.setShort(mp, (short) (m + M_RC), (short) 0);
        Util.setShort(mp, (short) (m + M_LEN), length);
        mp[(short) (m + M_STATE)] = Store.PENDING;
        JCSystem.commitTransaction();
    }

    /** Commit-buffer cost of {@link #free}. */
    short freeCost(short slot) {
        return (short) (Pool.runCount(runsPage(slot), runsOffset(slot)) * Pool.RUN_MARK_COST + Store.COST_BYTE);
    }

    /** Inside a transaction: give a chunk's blocks and slot back. */
    void free(short slot) {
        pool.mark(runsPage(slot), runsOffset(slot), false);
        metaOf(slot)[(short) (at(slot, META) + M_STATE)] = Store.FREE;
    }

    /** Inside a transaction: one more committed backup uses the chunk. */
    void reference(short slot) {
        byte[] mp = metaOf(slot);
        short m = at(slot, META);
        Util.setShort(mp, (short) (m + M_RC), (short) (Util.getShort(mp, (short) (m + M_RC)) + 1));
        mp[(short) (m + M_STATE)] = Store.COMMITTED;
    }

    /** Inside a transaction: one backup fewer (the caller frees the chunk at the last one). */
    void release(short slot) {
        byte[] mp = metaOf(slot);
        short m = (short) (at(slot, META) + M_RC);
        Util.setShort(mp, m, (short) (Util.getShort(mp, m) - 1));
    }

    /** ERASE: every slot free (idempotent; the Store clears the pool bitmap). */
    void clearAll() {
        for (short s = 0; s < max; s++) {
            metaOf(s)[at(s, META)] = Store.FREE;
        }
    }
}
