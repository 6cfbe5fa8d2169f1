package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.MessageDigest;

/**
 * QUERY CHUNKS, PUT CHUNK and PUT MANIFEST: the commands whose data can be larger
 * than any RAM buffer of a card. Their data is consumed as a stream, block by block
 * (receiveBytes) and part by part (command chaining), never assembled: a chunk goes
 * straight into free pool blocks reserved in RAM while its SHA-256 is computed, and
 * becomes a PENDING chunk in one transaction after its last byte (a chain broken by
 * another command, a reset or a power cut leaves nothing behind).
 *
 * <p>Status words and their order are the emulator's (card/applet.py): P1-P2, the
 * data's form, the PIN and the upload session, size (6A80), an id already on the
 * card (6A89), memory (6A84).
 */
final class Upload {
    static final byte INS_QUERY_CHUNKS = 0x22;
    static final byte INS_PUT_CHUNK = 0x24;
    static final byte INS_PUT_MANIFEST = 0x26;
    static final short BITMAP_MAX = 128;              // 1024 ids per QUERY CHUNKS
    private static final short ID = Store.ID_LENGTH;

    // u[] (transient shorts)
    private static final short U_KIND = 0;          // the INS being streamed, 0: none
    private static final short U_HDR = 1;           // header bytes collected in hdr
    private static final short U_BODY = 2;          // body bytes consumed
    private static final short U_SLOT = 3;          // chunk slot
    private static final short U_CAP = 4;           // blocks reserved for the chunk
    private static final short U_OFFSET = 5;        // manifest offset
    private static final short U_COUNT = 6;         // ids queried
    private static final short U_TOTAL = 7;         // data length of an unchained command, -1 chained
    private static final short U_ERROR = 8;         // the SW a chain part met, answered at the last part
    private static final short U_SEEN = 9;          // chain bytes so far
    private static final short U_SIZE = 10;

    private final BackupApplet applet;
    private final Store store;
    private final Session session;
    private final MessageDigest sha;
    private final short[] u;
    private final byte[] hdr;                       // a chunk id / manifest offset being collected
    private final byte[] runs;                      // the chunk's reservation
    private final byte[] bitmap;

    Upload(BackupApplet applet) {
        this.applet = applet;
        store = applet.store;
        session = applet.session;
        sha = applet.sha;
        u = JCSystem.makeTransientShortArray(U_SIZE, JCSystem.CLEAR_ON_DESELECT);
        hdr = JCSystem.makeTransientByteArray(ID, JCSystem.CLEAR_ON_DESELECT);
        runs = JCSystem.makeTransientByteArray(Pool.RUNS_BYTES, JCSystem.CLEAR_ON_DESELECT);
        bitmap = JCSystem.makeTransientByteArray(BITMAP_MAX, JCSystem.CLEAR_ON_DESELECT);
    }

    static boolean streams(byte ins) {
        return ins == INS_QUERY_CHUNKS || ins == INS_PUT_CHUNK || ins == INS_PUT_MANIFEST;
    }

    void reset() {
        u[U_KIND] = 0;
    }

    /**
     * One APDU of a streamed command (the first, a middle or the last part of a chain).
     * As in the emulator, whose runtime assembles a chain before the applet sees it, an
     * error met in a middle part is answered at the last one (the parts between answer
     * 9000), and a chain longer than a chunk, its id and a MAC is refused at once (6A84).
     */
    void stream(APDU apdu, byte[] buf, short got, short cdata, short lc, boolean chained) {
        boolean first = !session.chainOpen() || u[U_KIND] == 0;
        if (first) {
            u[U_KIND] = buf[ISO7816.OFFSET_INS];
            u[U_ERROR] = 0;
            u[U_SEEN] = 0;
            if (chained || session.chainOpen()) {
                session.openChain(buf);
            }
        }
        if (session.chainOpen()) {
            short limit = applet.maxChunk > (short) (Sw.MAX_SHORT - 96) ? Sw.MAX_SHORT : (short) (applet.maxChunk + 96);
            if (lc > (short) (limit - u[U_SEEN])) {
                ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);      // longer than the card's chain buffer
            }
            u[U_SEEN] = (short) (u[U_SEEN] + lc);
        }
        if (u[U_ERROR] == 0) {
            try {
                if (first) {
                    start(buf, chained ? (short) -1 : lc);
                }
                short left = lc;
                while (got > 0) {
                    feed(buf, cdata, got);
                    left -= got;
                    got = left > 0 ? apdu.receiveBytes(cdata) : 0;
                }
            } catch (ISOException e) {
                if (!chained) {
                    throw e;
                }
                u[U_ERROR] = e.getReason();     // nothing was stored: the reservation is RAM only
            }
        }
        if (chained) {
            return;
        }
        session.endChain();
        short error = u[U_ERROR];
        if (error != 0) {
            reset();
            ISOException.throwIt(error);
        }
        end(apdu, buf);
        reset();
    }

    private void start(byte[] buf, short total) {
        BackupApplet.requireP1P2Zero(buf);
        byte ins = buf[ISO7816.OFFSET_INS];
        if (ins == INS_QUERY_CHUNKS) {
            applet.requirePin();
            if (total >= 0 && (total == 0 || (short) (total % ID) != 0)) {
                fail();
            }
            Util.arrayFillNonAtomic(bitmap, (short) 0, BITMAP_MAX, (byte) 0);
        } else if (total >= 0 && total < (ins == INS_PUT_CHUNK ? ID : (short) 4)) {
            fail();
        }
        u[U_HDR] = 0;
        u[U_BODY] = 0;
        u[U_COUNT] = 0;
        u[U_TOTAL] = total;
    }

    private short headerLength() {
        return u[U_KIND] == INS_PUT_MANIFEST ? (short) 4 : ID;
    }

    private void feed(byte[] buf, short off, short n) {
        while (n > 0) {
            short have = u[U_HDR];
            short want = headerLength();
            if (u[U_KIND] == INS_QUERY_CHUNKS || have < want) {
                short take = (short) (want - have) < n ? (short) (want - have) : n;
                Util.arrayCopyNonAtomic(buf, off, hdr, have, take);
                off += take;
                n -= take;
                u[U_HDR] = (short) (have + take);
                if (u[U_HDR] == want) {
                    headerDone();
                }
            } else {
                body(buf, off, n);
                n = 0;
            }
        }
    }

    private void headerDone() {
        byte kind = (byte) u[U_KIND];
        if (kind == INS_QUERY_CHUNKS) {
            short i = u[U_COUNT];
            if (i >= (short) (BITMAP_MAX * 8)) {
                ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
            }
            if (store.chunks.find(hdr, (short) 0) >= 0) {
                bitmap[(short) (i >> 3)] |= (byte) (0x80 >> (i & 7));
            }
            u[U_COUNT] = (short) (i + 1);
            u[U_HDR] = 0;
            return;
        }
        requireUpload();
        short total = u[U_TOTAL];
        if (kind == INS_PUT_CHUNK) {
            if (total >= 0 && (short) (total - ID) > applet.maxChunk) {
                fail();                                   // above the card's max chunk size
            }
            if (store.chunks.find(hdr, (short) 0) >= 0) {
                ISOException.throwIt(Sw.DATA_ALREADY_EXISTS);
            }
            short slot = store.chunks.freeSlot();
            if (slot < 0) {
                ISOException.throwIt(Sw.CHUNK_TABLE_FULL);
            }
            short want = total >= 0 ? Pool.blocksFor((short) (total - ID)) : Pool.blocksFor(applet.maxChunk);
            short cap = store.pool.reserve(want, runs, (short) 0);
            if (total >= 0 && cap < want) {
                ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
            }
            u[U_SLOT] = slot;
            u[U_CAP] = cap;
            sha.reset();
            return;
        }
        // PUT MANIFEST: offset (u32), no holes, inside the announced length
        if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] < 0) {
            fail();
        }
        short offset = Util.getShort(hdr, (short) 2);
        short limit = session.uploadLength();
        if (total >= 0 && (total == 4 || (short) (total - 4) > (short) (limit - offset))) {
            fail();
        }
        if (offset > limit || offset > store.sessionLength()) {
            fail();
        }
        u[U_OFFSET] = offset;
    }

    private void body(byte[] buf, short off, short n) {
        short done = u[U_BODY];
        if (u[U_KIND] == INS_PUT_CHUNK) {
            if (n > (short) (applet.maxChunk - done)) {
                fail();
            }
            short cap = u[U_CAP];
            if (cap < 128 && n > (short) ((short) (cap << 8) - done)) {
                ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
            }
            store.pool.write(runs, (short) 0, done, buf, off, n);
            sha.update(buf, off, n);
        } else {
            short at = (short) (u[U_OFFSET] + done);
            if (n > (short) (session.uploadLength() - at)) {
                fail();                                   // past the announced manifest length
            }
            store.putManifest(at, buf, off, n);
        }
        u[U_BODY] = (short) (done + n);
    }

    private void end(APDU apdu, byte[] buf) {
        byte kind = (byte) u[U_KIND];
        short have = u[U_HDR];
        if (kind == INS_QUERY_CHUNKS) {
            short count = u[U_COUNT];
            if (have != 0 || count == 0) {
                fail();
            }
            short len = (short) ((short) (count + 7) >> 3);
            Util.arrayCopyNonAtomic(bitmap, (short) 0, buf, (short) 0, len);
            applet.io.send(apdu, buf, (short) 0, len);
            return;
        }
        if (have < headerLength()) {
            fail();
        }
        short done = u[U_BODY];
        if (kind == INS_PUT_CHUNK) {
            sha.doFinal(buf, (short) 0, (short) 0, buf, (short) 0);
            Pool.trim(runs, (short) 0, Pool.blocksFor(done));
            store.chunks.addPending(u[U_SLOT], hdr, (short) 0, buf, (short) 0, done, runs, (short) 0);
            return;
        }
        if (done == 0) {
            fail();
        }
        short end = (short) (u[U_OFFSET] + done);
        if (end > store.sessionLength()) {
            store.setSessionLength(end);
        }
    }

    /** PIN, a BEGIN BACKUP in this card session, and the store's session of that id (6982, 6985). */
    void requireUpload() {
        applet.requirePin();
        if (!session.uploadActive() || !store.sessionActive() || !session.uploadIs(store.sessionIdBytes(), (short) 0)) {
            ISOException.throwIt(Sw.CONDITIONS_NOT_SATISFIED);
        }
    }

    private static void fail() {
        ISOException.throwIt(Sw.WRONG_DATA);
    }
}
