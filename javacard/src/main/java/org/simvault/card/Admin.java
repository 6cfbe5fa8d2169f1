package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.Util;

/**
 * The admin commands under GlobalPlatform SCP03 ({@link Scp03}; card/applet_admin.py):
 * INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, then PUT TRUST ANCHOR, DELETE TRUST ANCHOR
 * and ERASE BACKUPS, each unwrapped (C-MAC, C-DECRYPTION) before anything else is
 * looked at, and answered with R-MAC / R-ENC at the levels that ask for it (error
 * status words go without). Scp03 counts failed authentications in EEPROM, so none of
 * this runs inside a transaction.
 */
final class Admin {
    static final byte INS_INITIALIZE_UPDATE = 0x50;
    static final byte INS_EXTERNAL_AUTHENTICATE = (byte) 0x82;
    static final byte INS_PUT_TRUST_ANCHOR = (byte) 0xE2;
    static final byte INS_DELETE_TRUST_ANCHOR = (byte) 0xE4;
    static final byte INS_ERASE_BACKUPS = (byte) 0xEE;
    private static final short KEY_ID = Credentials.KEY_ID_LENGTH;

    private final BackupApplet applet;
    private final Scp03 scp;

    Admin(BackupApplet applet) {
        this.applet = applet;
        scp = applet.scp;
    }

    void initializeUpdate(APDU apdu, byte[] buf, short cdata, short lc) {
        short n = scp.initializeUpdate(buf, cdata, lc, buf[ISO7816.OFFSET_P1]);
        applet.io.send(apdu, buf, (short) 0, n);
    }

    void externalAuthenticate(byte[] buf, short cdata, short lc) {
        scp.externalAuthenticate(buf, cdata, lc);
    }

    /** An SCP03-wrapped admin command; the plain data replaces the wrapped one at cdata. */
    void command(APDU apdu, byte[] buf, byte ins, short cdata, short lc) {
        short plain = scp.unwrap(buf, cdata, lc);
        BackupApplet.requireP1P2Zero(buf);
        Credentials credentials = applet.credentials;
        if (ins == INS_PUT_TRUST_ANCHOR) {
            // PUT_TRUST_ANCHOR_DATA: key id (8), uncompressed P-256 point (65)
            if (plain != (short) (KEY_ID + Ecdsa.POINT_LENGTH)) {
                ISOException.throwIt(Sw.WRONG_DATA);
            }
            short point = (short) (cdata + KEY_ID);
            if (!applet.ecdsa.isValidPoint(buf, point)) {
                ISOException.throwIt(Sw.WRONG_DATA);           // not a P-256 point
            }
            short scratch = (short) (point + Ecdsa.POINT_LENGTH);
            credentials.keyId(buf, point, buf, scratch);
            if (Util.arrayCompare(buf, scratch, buf, cdata, KEY_ID) != 0) {
                ISOException.throwIt(Sw.WRONG_DATA);           // the key id is not the point's
            }
            credentials.add(buf, cdata, buf, point);
        } else if (ins == INS_DELETE_TRUST_ANCHOR) {
            if (plain != KEY_ID) {
                ISOException.throwIt(Sw.WRONG_DATA);
            }
            credentials.remove(buf, cdata);
        } else {
            if (plain != 0) {
                ISOException.throwIt(Sw.WRONG_LENGTH);         // ERASE BACKUPS carries only the C-MAC
            }
            applet.store.erase();
            applet.session.clearUpload();
        }
        applet.io.send(apdu, buf, (short) 0, scp.wrap(buf, (short) 0, (short) 0));
    }
}
