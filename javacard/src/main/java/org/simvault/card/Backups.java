package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.Util;

/**
 * BEGIN, COMMIT and ABORT BACKUP, LIST BACKUPS, READ MANIFEST, READ CHUNK and
 * DELETE BACKUP, with the emulator's check order (card/applet.py). COMMIT checks,
 * in the order of apdu_specs/README.md "A backup upload": session and complete
 * manifest (6985), manifest syntax and backup id (6A80), signer is a trust anchor
 * (6984), signature (6688), sequence above every committed one (668A), every chunk
 * present (6A88) with its SHA-256 and size (6689), a free slot and memory (6A84).
 */
final class Backups {
    static final byte INS_BEGIN_BACKUP = 0x20;
    static final byte INS_COMMIT_BACKUP = 0x28;
    static final byte INS_ABORT_BACKUP = 0x2A;
    static final byte INS_LIST_BACKUPS = 0x30;
    static final byte INS_READ_MANIFEST = 0x32;
    static final byte INS_READ_CHUNK = 0x34;
    static final byte INS_DELETE_BACKUP = 0x36;
    private static final short BID = Store.BACKUP_ID_LENGTH;
    private static final short ENTRY = Store.ENTRY_SIZE;

    private final BackupApplet applet;
    private final Store store;
    private final Session session;
    private final Manifest manifest;

    Backups(BackupApplet applet) {
        this.applet = applet;
        store = applet.store;
        session = applet.session;
        manifest = new Manifest();
    }

    private static void length(short lc, short want) {
        if (lc != want) {
            ISOException.throwIt(Sw.WRONG_DATA);
        }
    }

    /** A u32 at buf[off] as a short, or -1 above 32767 (past every object here). */
    private static short u32(byte[] buf, short off) {
        if (buf[off] != 0 || buf[(short) (off + 1)] != 0 || buf[(short) (off + 2)] < 0) {
            return -1;
        }
        return Util.getShort(buf, (short) (off + 2));
    }

    // ---- upload ------------------------------------------------------------------------

    /** BEGIN_BACKUP_DATA: backup id (16), sequence (8), manifest length (4). */
    void begin(APDU apdu, byte[] buf, short cdata, short lc) {
        BackupApplet.requireP1P2Zero(buf);
        applet.requirePin();
        length(lc, (short) 28);
        short lenAt = (short) (cdata + 24);
        short length = u32(buf, lenAt);
        if (length == 0) {
            ISOException.throwIt(Sw.WRONG_DATA);
        }
        if (length < 0 || length > store.maxManifest) {
            ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);        // larger than the card's manifest buffer
        }
        if (!store.aboveHighWater(buf, (short) (cdata + BID))) {
            ISOException.throwIt(Sw.SEQUENCE_ROLLBACK);
        }
        if (store.findBackup(buf, cdata) >= 0) {
            ISOException.throwIt(Sw.DATA_ALREADY_EXISTS);      // committed already: delete it or use a new id
        }
        boolean resumed = store.isSession(buf, cdata) && store.sessionLength() <= length;
        if (!resumed) {
            store.beginSession(buf, cdata);                    // drops the pending chunks of any other upload
        }
        session.setUpload(buf, cdata, length);
        short o = 0;
        buf[o++] = resumed ? (byte) 1 : (byte) 0;
        o = Util.setShort(buf, o, (short) 0);
        o = Util.setShort(buf, o, store.chunks.count(Store.PENDING));
        o = Util.setShort(buf, o, (short) 0);
        o = Util.setShort(buf, o, store.sessionLength());
        applet.io.send(apdu, buf, (short) 0, o);
    }

    void commit(APDU apdu, byte[] buf, short cdata, short lc) {
        BackupApplet.requireP1P2Zero(buf);
        length(lc, Ecdsa.RAW_SIGNATURE_LENGTH);
        applet.upload().requireUpload();
        short len = store.sessionLength();
        if (len != session.uploadLength()) {
            ISOException.throwIt(Sw.CONDITIONS_NOT_SATISFIED);  // manifest incomplete
        }
        byte[] m = store.manifest;
        Manifest mf = manifest;
        mf.parse(m, len);
        if (!store.isSession(m, mf.backupId)) {
            ISOException.throwIt(Sw.WRONG_DATA);               // the manifest of another backup
        }
        short anchor = applet.credentials.find(m, mf.keyId);
        if (anchor < 0) {
            ISOException.throwIt(Sw.REFERENCE_DATA_NOT_USABLE);
        }
        if (!applet.ecdsa.verify(applet.credentials.points(), Credentials.pointOffset(anchor), m, (short) 0, len,
                                 buf, cdata)) {
            ISOException.throwIt(Sw.SIGNATURE_INVALID);
        }
        if (!store.aboveHighWater(m, mf.sequence)) {
            ISOException.throwIt(Sw.SEQUENCE_ROLLBACK);
        }
        for (short i = 0; i < mf.count; i++) {
            short r = mf.record(i);
            short slot = store.chunks.find(m, r);
            if (slot < 0) {
                ISOException.throwIt(Sw.REFERENCED_DATA_NOT_FOUND);    // a chunk was not uploaded
            }
            short sizeAt = (short) (r + 64);
            if (Util.getShort(m, sizeAt) != 0 || Util.getShort(m, (short) (sizeAt + 2)) != store.chunks.length(slot)
                    || !store.chunks.hashIs(slot, m, (short) (r + 32))) {
                ISOException.throwIt(Sw.CHUNK_HASH_MISMATCH);
            }
        }
        short slot = store.commit(mf, len, buf, cdata);
        session.clearUpload();
        Util.arrayCopyNonAtomic(store.directory(), Store.dirOffset(slot), buf, (short) 0, ENTRY);
        applet.io.send(apdu, buf, (short) 0, ENTRY);
    }

    void abort(byte[] buf) {
        BackupApplet.requireP1P2Zero(buf);
        applet.requirePin();
        store.abortSession();
        session.clearUpload();
    }

    // ---- reading -----------------------------------------------------------------------

    /** LIST_BACKUPS_RESPONSE: total, then the entries from index P1 (oldest sequence first) that fit. */
    void list(APDU apdu, byte[] buf) {
        if (buf[ISO7816.OFFSET_P2] != 0) {
            ISOException.throwIt(Sw.INCORRECT_P1P2);
        }
        applet.requirePin();
        short first = (short) (buf[ISO7816.OFFSET_P1] & 0xFF);
        short room = applet.io.room(apdu);
        if (room > Io.PEND_MAX) {
            room = Io.PEND_MAX;                                // what one answer holds in RAM
        }
        short fit = (short) ((short) (room - 1) / ENTRY);
        if (fit < 1) {
            fit = 1;
        }
        buf[0] = (byte) store.backupCount();
        short o = 1;
        for (short k = 0; k < fit; k++) {
            short slot = store.backupByRank((short) (first + k));
            if (slot < 0) {
                break;
            }
            o = Util.arrayCopyNonAtomic(store.directory(), Store.dirOffset(slot), buf, o, ENTRY);
        }
        applet.io.send(apdu, buf, (short) 0, o);
    }

    /** READ_MANIFEST_DATA: backup id, offset; P1 00 the manifest, 01 the signature. */
    void readManifest(APDU apdu, byte[] buf, short cdata, short lc) {
        byte p1 = buf[ISO7816.OFFSET_P1];
        if ((p1 != 0 && p1 != 1) || buf[ISO7816.OFFSET_P2] != 0) {
            ISOException.throwIt(Sw.INCORRECT_P1P2);
        }
        applet.requirePin();
        length(lc, (short) (BID + 4));
        short slot = store.findBackup(buf, cdata);
        if (slot < 0) {
            ISOException.throwIt(Sw.REFERENCED_DATA_NOT_FOUND);
        }
        short offset = u32(buf, (short) (cdata + BID));
        short size = p1 == 1 ? Ecdsa.RAW_SIGNATURE_LENGTH : store.manifestLength(slot);
        if (offset < 0 || offset > size) {
            ISOException.throwIt(Sw.WRONG_DATA);               // offset past the end
        }
        short n = (short) (size - offset);
        short room = applet.io.room(apdu);
        if (n > room) {
            n = room;
        }
        short d = Store.dirOffset(slot);
        if (p1 == 1) {
            Util.arrayCopyNonAtomic(store.directory(), (short) (d + Store.D_SIG + offset), buf, (short) 0, n);
            applet.io.send(apdu, buf, (short) 0, n);
        } else {
            applet.io.sendPool(apdu, store.directory(), (short) (d + Store.D_RUNS), offset, n);
        }
    }

    /** READ_CHUNK_DATA: chunk id, offset; the bytes of a committed chunk. */
    void readChunk(APDU apdu, byte[] buf, short cdata, short lc) {
        BackupApplet.requireP1P2Zero(buf);
        applet.requirePin();
        length(lc, (short) (Store.ID_LENGTH + 4));
        short slot = store.chunks.find(buf, cdata);
        if (slot < 0 || store.chunks.state(slot) != Store.COMMITTED) {
            ISOException.throwIt(Sw.REFERENCED_DATA_NOT_FOUND);
        }
        short offset = u32(buf, (short) (cdata + Store.ID_LENGTH));
        short size = store.chunks.length(slot);
        if (offset < 0 || offset > size) {
            ISOException.throwIt(Sw.WRONG_DATA);
        }
        short n = (short) (size - offset);
        short room = applet.io.room(apdu);
        if (n > room) {
            n = room;
        }
        applet.io.sendPool(apdu, store.chunks.runsPage(slot), Chunks.runsOffset(slot), offset, n);
    }

    void delete(byte[] buf, short cdata, short lc) {
        BackupApplet.requireP1P2Zero(buf);
        applet.requirePin();
        length(lc, BID);
        short slot = store.findBackup(buf, cdata);
        if (slot < 0) {
            ISOException.throwIt(Sw.REFERENCED_DATA_NOT_FOUND);
        }
        store.delete(slot);
    }
}
