package org.simvault.card;

import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;

/**
 * The persistent backup store: the chunk table ({@link Chunks}, content-addressed,
 * refcounted), the directory of committed backups, the upload session, the sequence
 * high-water mark, all over the block {@link Pool}. Allocated once at install.
 *
 * <p>Directory record (144 bytes): the
 * BACKUP_ENTRY of LIST/COMMIT (44), the signature (64), the chunk table offset in
 * the manifest (2), state (1), -, the manifest's runs (32).
 *
 * <p>Updates that can outgrow one transaction (COMMIT references every chunk,
 * DELETE releases them, ABORT frees pending chunks) first make the whole outcome
 * certain in one small transaction (the new directory entry and the high-water
 * mark, or the entry's DELETING state) together with a work register, then do the
 * rest in transactions sized by {@link Txn}, each advancing the register's cursor.
 * {@link #finishWork} runs at the start of every APDU, so after a power cut the
 * card completes the update before it answers anything: no half state is ever seen.
 */
final class Store {
    static final short MAX_BACKUPS = 16;
    static final short ID_LENGTH = 32;
    static final short BACKUP_ID_LENGTH = 16;
    static final short ENTRY_SIZE = 44;

    static final byte FREE = 0;
    static final byte PENDING = 1;
    static final byte COMMITTED = 2;
    static final byte DELETING = 3;

    // directory record
    static final short D_ID = 0;
    static final short D_SEQ = 16;
    static final short D_CREATED = 24;
    static final short D_MLEN = 32;
    static final short D_COUNT = 36;
    static final short D_STORED = 40;
    static final short D_SIG = 44;
    private static final short D_TABLE = 108;
    private static final short D_STATE = 110;
    static final short D_RUNS = 112;
    static final short D_SIZE = 144;

    // work register kinds
    private static final byte OP_NONE = 0;
    private static final byte OP_COMMIT_REFS = 1;
    private static final byte OP_FREE_PENDING = 2;
    private static final byte OP_DELETE = 3;
    private static final byte OP_ERASE = 4;

    static final short COST_BYTE = (short) (1 + Txn.ENTRY_OVERHEAD);
    static final short COST_SHORT = (short) (2 + Txn.ENTRY_OVERHEAD);

    final Pool pool;
    final short maxChunks;
    final short maxManifest;
    private final Txn txn;
    /** The content-addressed, refcounted chunk table. */
    final Chunks chunks;
    private final byte[] dir;
    private final byte[] hwm;
    /** The session's manifest bytes (PUT MANIFEST writes here; COMMIT copies them to the pool). */
    final byte[] manifest;
    private final byte[] sessionId;
    private boolean sessionActive;
    private short sessionLength;
    private byte op;
    private short opArg;
    private short opCursor;
    private final byte[] tmp;          // transient: a chunk id, a directory record

    Store(short blocks, short maxChunks, short maxManifest, short txnBudget) {
        this.maxChunks = maxChunks;
        this.maxManifest = maxManifest;
        pool = new Pool(blocks);
        txn = new Txn(txnBudget);
        if (txn.budget() < Txn.MIN_BUDGET) {
            ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);       // the card's commit buffer is too small
        }
        chunks = new Chunks(pool, maxChunks);
        dir = new byte[(short) (MAX_BACKUPS * D_SIZE)];
        hwm = new byte[8];
        manifest = new byte[maxManifest];
        sessionId = new byte[BACKUP_ID_LENGTH];
        tmp = JCSystem.makeTransientByteArray(D_SIZE, JCSystem.CLEAR_ON_DESELECT);
    }

    // ---- session ------------------------------------------------------------------------

    boolean sessionActive() {
        return sessionActive;
    }

    boolean isSession(byte[] id, short off) {
        return sessionActive && Util.arrayCompare(sessionId, (short) 0, id, off, BACKUP_ID_LENGTH) == 0;
    }

    short sessionLength() {
        return sessionLength;
    }

    /** The open session's backup id (16 bytes at 0). */
    byte[] sessionIdBytes() {
        return sessionId;
    }

    /** Non-atomic manifest bytes (as the emulator: re-send on failure), then the new length. */
    void putManifest(short off, byte[] src, short srcOff, short len) {
        Util.arrayCopyNonAtomic(src, srcOff, manifest, off, len);
    }

    void setSessionLength(short len) {
        sessionLength = len;                       // one field write: atomic
    }

    /** A new session for id; the open one's pending chunks are dropped with it. */
    void beginSession(byte[] id, short off) {
        txn.begin();
        Util.arrayCopy(id, off, sessionId, (short) 0, BACKUP_ID_LENGTH);
        sessionActive = true;
        sessionLength = 0;
        startOp(OP_FREE_PENDING, (short) 0);
        txn.commit();
        finishWork();
    }

    void abortSession() {
        if (!sessionActive) {
            return;
        }
        txn.begin();
        sessionActive = false;
        sessionLength = 0;
        startOp(OP_FREE_PENDING, (short) 0);
        txn.commit();
        finishWork();
    }

    // ---- directory ----------------------------------------------------------------------

    byte[] directory() {
        return dir;
    }

    static short dirOffset(short slot) {
        return (short) (slot * D_SIZE);
    }

    private byte dirState(short slot) {
        return dir[(short) (dirOffset(slot) + D_STATE)];
    }

    /** Slot of the committed backup id, or -1. */
    short findBackup(byte[] id, short off) {
        for (short s = 0; s < MAX_BACKUPS; s++) {
            if (dirState(s) == COMMITTED
                    && Util.arrayCompare(dir, (short) (dirOffset(s) + D_ID), id, off, BACKUP_ID_LENGTH) == 0) {
                return s;
            }
        }
        return -1;
    }

    short backupCount() {
        short n = 0;
        for (short s = 0; s < MAX_BACKUPS; s++) {
            if (dirState(s) == COMMITTED) {
                n++;
            }
        }
        return n;
    }

    /** The committed backup of rank n in sequence order (oldest first), or -1. */
    short backupByRank(short n) {
        for (short s = 0; s < MAX_BACKUPS; s++) {
            if (dirState(s) != COMMITTED) {
                continue;
            }
            short below = 0;
            for (short t = 0; t < MAX_BACKUPS; t++) {
                if (t != s && dirState(t) == COMMITTED
                        && compareUnsigned(dir, (short) (dirOffset(t) + D_SEQ), dir, (short) (dirOffset(s) + D_SEQ),
                                           (short) 8) < 0) {
                    below++;
                }
            }
            if (below == n) {
                return s;
            }
        }
        return -1;
    }

    short manifestLength(short slot) {
        return Util.getShort(dir, (short) (dirOffset(slot) + D_MLEN + 2));
    }

    /** Whether seq[off..off+8) is above the high-water mark (the anti-rollback rule). */
    boolean aboveHighWater(byte[] seq, short off) {
        return compareUnsigned(seq, off, hwm, (short) 0, (short) 8) > 0;
    }

    byte[] highWater() {
        return hwm;
    }

    /**
     * COMMIT: the checked session manifest (len bytes; its table of count records at
     * table) becomes backup entry; signature sig[sigOff..+64). 6A84 without a free
     * slot or the blocks for the manifest. Returns the directory slot.
     */
    short commit(Manifest mf, short len, byte[] sig, short sigOff) {
        short slot = -1;
        for (short s = 0; s < MAX_BACKUPS && slot < 0; s++) {
            if (dirState(s) == FREE) {
                slot = s;
            }
        }
        if (slot < 0) {
            ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
        }
        byte[] r = tmp;
        Util.arrayFillNonAtomic(r, (short) 0, D_SIZE, (byte) 0);
        short want = Pool.blocksFor(len);
        if (pool.reserve(want, r, D_RUNS) < want) {
            ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
        }
        pool.write(r, D_RUNS, (short) 0, manifest, (short) 0, len);   // into free blocks: nothing visible yet
        Util.arrayCopyNonAtomic(manifest, mf.backupId, r, D_ID, BACKUP_ID_LENGTH);
        Util.arrayCopyNonAtomic(manifest, mf.sequence, r, D_SEQ, (short) 8);
        Util.arrayCopyNonAtomic(manifest, mf.created, r, D_CREATED, (short) 8);
        Util.setShort(r, (short) (D_MLEN + 2), len);
        Util.setShort(r, (short) (D_COUNT + 2), mf.count);
        Util.arrayCopyNonAtomic(manifest, mf.total, r, D_STORED, (short) 4);
        Util.arrayCopyNonAtomic(sig, sigOff, r, D_SIG, (short) 64);
        Util.setShort(r, D_TABLE, mf.table);
        r[D_STATE] = COMMITTED;
        txn.begin();                                                    // the outcome, in one transaction
        Util.arrayCopy(r, (short) 0, dir, dirOffset(slot), D_SIZE);
        pool.mark(r, D_RUNS, true);
        Util.arrayCopy(manifest, mf.sequence, hwm, (short) 0, (short) 8);
        sessionActive = false;
        sessionLength = 0;
        startOp(OP_COMMIT_REFS, slot);
        txn.commit();
        finishWork();
        return slot;
    }

    /** DELETE: invisible at once, its chunks released afterwards. */
    void delete(short slot) {
        txn.begin();
        dir[(short) (dirOffset(slot) + D_STATE)] = DELETING;
        startOp(OP_DELETE, slot);
        txn.commit();
        finishWork();
    }

    /** ERASE BACKUPS: every backup, chunk and the session; PIN, keys, anchors and the high-water mark stay. */
    void erase() {
        op = OP_ERASE;                              // one atomic write; the rest is idempotent
        finishWork();
    }

    // ---- the work register -----------------------------------------------------------------

    private void startOp(byte kind, short arg) {
        op = kind;
        opArg = arg;
        opCursor = 0;
    }

    /** Complete the update the register describes, in as many transactions as it takes. */
    void finishWork() {
        while (op != OP_NONE) {
            if (op == OP_ERASE) {
                erasePass();
                continue;
            }
            txn.begin();
            txn.charge((short) (2 * COST_SHORT + COST_BYTE));   // the register itself
            if (op == OP_COMMIT_REFS) {
                commitRefs();
            } else if (op == OP_FREE_PENDING) {
                freePending();
            } else if (op == OP_DELETE) {
                deleteRefs();
            } else {
                op = OP_NONE;                        // unknown: nothing to finish
            }
            txn.commit();
        }
    }

    /** Read chunk id i of a committed backup's manifest into tmp[0..32). */
    private short chunkOfBackup(short slot, short i) {
        short table = Util.getShort(dir, (short) (dirOffset(slot) + D_TABLE));
        pool.read(dir, (short) (dirOffset(slot) + D_RUNS), (short) (table + (short) (i * Manifest.RECORD)),
                  tmp, (short) 0, ID_LENGTH);
        return chunks.find(tmp, (short) 0);
    }

    private short countOf(short slot) {
        return Util.getShort(dir, (short) (dirOffset(slot) + D_COUNT + 2));
    }

    private void commitRefs() {
        short count = countOf(opArg);
        while (opCursor < count && txn.fits((short) (COST_SHORT + COST_BYTE))) {
            short c = chunkOfBackup(opArg, opCursor);
            if (c >= 0) {
                chunks.reference(c);
                txn.charge((short) (COST_SHORT + COST_BYTE));
            }
            opCursor++;
        }
        if (opCursor >= count) {
            startOp(OP_FREE_PENDING, (short) 0);    // what the manifest did not reference
        }
    }

    private void freePending() {
        while (opCursor < maxChunks) {
            if (chunks.state(opCursor) == PENDING) {
                short cost = chunks.freeCost(opCursor);
                if (!txn.fits(cost)) {
                    return;
                }
                chunks.free(opCursor);
                txn.charge(cost);
            }
            opCursor++;
        }
        op = OP_NONE;
    }

    private void deleteRefs() {
        short count = countOf(opArg);
        while (opCursor < count) {
            short c = chunkOfBackup(opArg, opCursor);
            if (c >= 0) {
                short rc = chunks.refcount(c);
                short cost = rc <= 1 ? chunks.freeCost(c) : COST_SHORT;
                if (!txn.fits(cost)) {
                    return;
                }
                if (rc <= 1) {
                    chunks.free(c);
                } else {
                    chunks.release(c);
                }
                txn.charge(cost);
            }
            opCursor++;
        }
        short d = dirOffset(opArg);
        short cost = (short) (Pool.MAX_RUNS * Pool.RUN_MARK_COST + COST_BYTE);
        if (!txn.fits(cost)) {
            return;
        }
        pool.mark(dir, (short) (d + D_RUNS), false);
        dir[(short) (d + D_STATE)] = FREE;
        op = OP_NONE;
    }

    private void erasePass() {
        for (short s = 0; s < MAX_BACKUPS; s++) {
            dir[(short) (dirOffset(s) + D_STATE)] = FREE;
        }
        chunks.clearAll();
        pool.clearAll();
        sessionActive = false;
        sessionLength = 0;
        op = OP_NONE;
    }

    // ---- helpers ---------------------------------------------------------------------------

    /** Compare two unsigned big-endian numbers of len bytes: -1, 0, 1. */
    static short compareUnsigned(byte[] a, short aOff, byte[] b, short bOff, short len) {
        for (short i = 0; i < len; i++) {
            short x = (short) (a[(short) (aOff + i)] & 0xFF);
            short y = (short) (b[(short) (bOff + i)] & 0xFF);
            if (x != y) {
                return x < y ? (short) -1 : (short) 1;
            }
        }
        return 0;
    }
}
