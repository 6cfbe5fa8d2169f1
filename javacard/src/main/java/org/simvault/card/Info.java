package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.JCSystem;
import javacard.framework.Util;

/** The FCI of SELECT, GET STATUS and LIST ANCHORS (card/applet.py fci, get_status, list_anchors). */
final class Info {
    private final BackupApplet applet;

    Info(BackupApplet applet) {
        this.applet = applet;
    }

    /** 6F { 84 AID, A5 { 80 version, 81 max command, 82 max response, 83 features, 84 max chunk } } at buf[0]. */
    short fci(byte[] buf) {
        short aidLen = JCSystem.getAID().getBytes(buf, (short) 4);
        buf[0] = 0x6F;
        buf[1] = (byte) (2 + aidLen + 2 + 18);
        buf[2] = (byte) 0x84;
        buf[3] = (byte) aidLen;
        short o = (short) (4 + aidLen);
        buf[o++] = (byte) 0xA5;
        buf[o++] = 18;
        buf[o++] = (byte) 0x80;
        buf[o++] = 1;
        buf[o++] = BackupApplet.APPLET_VERSION;
        o = tlvShort(buf, o, (byte) 0x81, applet.maxCommand);
        o = tlvShort(buf, o, (byte) 0x82, applet.maxChunk);
        buf[o++] = (byte) 0x83;
        buf[o++] = 1;
        buf[o++] = BackupApplet.FEATURES;
        return tlvShort(buf, o, (byte) 0x84, applet.maxChunk);
    }

    private static short tlvShort(byte[] buf, short o, byte tag, short value) {
        buf[o++] = tag;
        buf[o++] = 2;
        return Util.setShort(buf, o, value);
    }

    /** GET_STATUS_RESPONSE (41 bytes: the 31 of earlier versions, chunk entries u32, block size u16,
     *  max manifest u32). */
    void getStatus(APDU apdu, byte[] buf) {
        BackupApplet.requireP1P2Zero(buf);
        byte tries = applet.credentials.pinTries();
        short o = 0;
        buf[o++] = BackupApplet.APPLET_VERSION;
        buf[o++] = tries == 0 ? (byte) 0x0F : (byte) 0x07;
        buf[o++] = applet.session.pinVerified() ? (byte) 1 : (byte) 0;
        buf[o++] = tries;
        buf[o++] = Credentials.PIN_TRIES;
        buf[o++] = applet.credentials.pukTries();
        buf[o++] = applet.scp.isOpen() ? (byte) 1 : (byte) 0;
        o = blocksAsBytes(buf, o, applet.store.pool.blocks);
        o = blocksAsBytes(buf, o, applet.store.pool.freeBlocks());
        buf[o++] = (byte) applet.store.backupCount();
        buf[o++] = (byte) Store.MAX_BACKUPS;
        o = Util.setShort(buf, o, (short) 0);
        o = Util.setShort(buf, o, applet.store.chunks.count(Store.FREE));
        buf[o++] = (byte) applet.credentials.anchorCount();
        o = Util.arrayCopyNonAtomic(applet.store.highWater(), (short) 0, buf, o, (short) 8);
        buf[o++] = applet.store.sessionActive() ? (byte) 1 : (byte) 0;
        o = Util.setShort(buf, o, (short) 0);
        o = Util.setShort(buf, o, applet.store.chunks.max);
        o = Util.setShort(buf, o, Pool.BLOCK);
        o = Util.setShort(buf, o, (short) 0);
        o = Util.setShort(buf, o, applet.store.maxManifest);
        applet.io.send(apdu, buf, (short) 0, o);
    }

    /** u32 of blocks * 256 (no int arithmetic). */
    private static short blocksAsBytes(byte[] buf, short o, short blocks) {
        buf[o++] = 0;
        o = Util.setShort(buf, o, blocks);
        buf[o++] = 0;
        return o;
    }

    void listAnchors(APDU apdu, byte[] buf) {
        BackupApplet.requireP1P2Zero(buf);
        applet.io.send(apdu, buf, (short) 0, applet.credentials.listIds(buf, (short) 0));
    }
}
