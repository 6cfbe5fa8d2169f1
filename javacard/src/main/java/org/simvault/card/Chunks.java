package org.simvault.card;

import javacard.framework.JCSystem;
import javacard.framework.Util;

/**
 * The chunk table of the {@link Store}: content-addressed (a chunk is found by its
 * 32-byte id, stored once however many backups use it) and refcounted (a chunk is
 * freed when the last backup referencing it is deleted). Per slot: meta (state, -,
 * refcount, length: 8 bytes), id (32), SHA-256 of the stored bytes (32), the runs of
 * its pool blocks (32). Allocated once at install.
 *
 * <p>Methods that change a slot other than {@link #addPending} run inside the
 * Store's transactions (its work register).
 */
final class Chunks {
    private static final short M_STATE = 0;
    private static final short M_RC = 2;
    private static final short M_LEN = 4;
    private static final short META = 8;
    private static final short ID = Store.ID_LENGTH;

    final short max;
    private final Pool pool;
    private final byte[] meta;
    private final byte[] ids;
    private final byte[] shas;
    private final byte[] runs;

    Chunks(Pool pool, short max) {
        this.pool = pool;
        this.max = max;
        meta = new byte[(short) (max * META)];
        ids = new byte[(short) (max * ID)];
        shas = new byte[(short) (max * ID)];
        runs = new byte[(short) (max * Pool.RUNS_BYTES)];
    }

    /** Slot of a stored (pending or committed) chunk, or -1. */
    short find(byte[] id, short off) {
        for (short s = 0; s < max; s++) {
            short at = (short) (s * ID);
            if (meta[(short) (s * META)] != Store.FREE && ids[at] == id[off]
                    && Util.arrayCompare(ids, at, id, off, ID) == 0) {
                return s;
            }
        }
        return -1;
    }

    short freeSlot() {
        for (short s = 0; s < max; s++) {
            if (meta[(short) (s * META)] == Store.FREE) {
                return s;
            }
        }
        return -1;
    }

    byte state(short slot) {
        return meta[(short) (slot * META + M_STATE)];
    }

    short length(short slot) {
        return Util.getShort(meta, (short) (slot * META + M_LEN));
    }

    short refcount(short slot) {
        return Util.getShort(meta, (short) (slot * META + M_RC));
    }

    /** Compare the stored SHA-256 of a chunk with h[off..off+32). */
    boolean hashIs(short slot, byte[] h, short off) {
        return Util.arrayCompare(shas, (short) (slot * ID), h, off, ID) == 0;
    }

    byte[] runs() {
        return runs;
    }

    static short runsOffset(short slot) {
        return (short) (slot * Pool.RUNS_BYTES);
    }

    /** The slots in state (FREE: every used slot). */
    short count(byte state) {
        short n = 0;
        for (short s = 0; s < max; s++) {
            byte st = meta[(short) (s * META)];
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
        Util.arrayCopy(id, idOff, ids, (short) (slot * ID), ID);
        Util.arrayCopy(sha, shaOff, shas, (short) (slot * ID), ID);
        Util.arrayCopy(newRuns, runsOff, runs, runsOffset(slot), Pool.RUNS_BYTES);
        short m = (short) (slot * META);
        Util.setShort(meta, (short) (m + M_RC), (short) 0);
        Util.setShort(meta, (short) (m + M_LEN), length);
        meta[(short) (m + M_STATE)] = Store.PENDING;
        JCSystem.commitTransaction();
    }

    /** Commit-buffer cost of {@link #free}. */
    short freeCost(short slot) {
        return (short) (Pool.runCount(runs, runsOffset(slot)) * Pool.RUN_MARK_COST + Store.COST_BYTE);
    }

    /** Inside a transaction: give a chunk's blocks and slot back. */
    void free(short slot) {
        pool.mark(runs, runsOffset(slot), false);
        meta[(short) (slot * META + M_STATE)] = Store.FREE;
    }

    /** Inside a transaction: one more committed backup uses the chunk. */
    void reference(short slot) {
        short m = (short) (slot * META);
        Util.setShort(meta, (short) (m + M_RC), (short) (Util.getShort(meta, (short) (m + M_RC)) + 1));
        meta[(short) (m + M_STATE)] = Store.COMMITTED;
    }

    /** Inside a transaction: one backup fewer (the caller frees the chunk at the last one). */
    void release(short slot) {
        short m = (short) (slot * META + M_RC);
        Util.setShort(meta, m, (short) (Util.getShort(meta, m) - 1));
    }

    /** ERASE: every slot free (idempotent; the Store clears the pool bitmap). */
    void clearAll() {
        for (short s = 0; s < max; s++) {
            meta[(short) (s * META)] = Store.FREE;
        }
    }
}
