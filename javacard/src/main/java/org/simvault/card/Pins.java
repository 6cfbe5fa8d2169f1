package org.simvault.card;

import javacard.framework.ISO7816;
import javacard.framework.ISOException;

/**
 * VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER (00 20/24/2C 00 81), in the
 * emulator's order (card/applet.py): P1-P2, the data's form (6A80, costs no try),
 * a blocked counter (6983), then the compare, which {@link Credentials}' OwnerPINs do
 * tear-safe (the try is counted before the compare).
 */
final class Pins {
    static final byte INS_VERIFY = 0x20;
    static final byte INS_CHANGE_REFERENCE_DATA = 0x24;
    static final byte INS_RESET_RETRY_COUNTER = 0x2C;
    private static final byte PIN_REFERENCE = (byte) 0x81;
    private static final short BLOCK = Credentials.BLOCK_LENGTH;

    private final Credentials credentials;
    private final Session session;

    Pins(BackupApplet applet) {
        credentials = applet.credentials;
        session = applet.session;
    }

    private static void pinReference(byte[] buf) {
        if (buf[ISO7816.OFFSET_P1] != 0 || buf[ISO7816.OFFSET_P2] != PIN_REFERENCE) {
            ISOException.throwIt(Sw.INCORRECT_P1P2);
        }
    }

    private static void pinBlock(byte[] buf, short off) {
        if (!Credentials.validPinBlock(buf, off, (short) 4)) {
            ISOException.throwIt(Sw.WRONG_DATA);
        }
    }

    private static void length(short lc, short want) {
        if (lc != want) {
            ISOException.throwIt(Sw.WRONG_DATA);
        }
    }

    private static void wrong(byte left) {
        ISOException.throwIt((short) (Sw.WRONG_PIN | (left & 0x0F)));
    }

    /** The answer of a PIN compare: verified, or 63Cx. */
    private void result(boolean ok) {
        session.setPinVerified(ok);
        if (!ok) {
            wrong(credentials.pinTries());
        }
    }

    void verify(byte[] buf, short cdata, short lc) {
        pinReference(buf);
        byte tries = credentials.pinTries();
        if (lc == 0) {
            if (session.pinVerified()) {
                return;
            }
            if (tries == 0) {
                ISOException.throwIt(Sw.AUTH_METHOD_BLOCKED);
            }
            wrong(tries);
        }
        length(lc, BLOCK);
        pinBlock(buf, cdata);
        if (tries == 0) {
            session.setPinVerified(false);
            ISOException.throwIt(Sw.AUTH_METHOD_BLOCKED);
        }
        result(credentials.checkPin(buf, cdata));
    }

    void change(byte[] buf, short cdata, short lc) {
        pinReference(buf);
        length(lc, (short) (2 * BLOCK));
        pinBlock(buf, cdata);
        pinBlock(buf, (short) (cdata + BLOCK));
        if (credentials.pinTries() == 0) {
            session.setPinVerified(false);
            ISOException.throwIt(Sw.AUTH_METHOD_BLOCKED);
        }
        boolean ok = credentials.checkPin(buf, cdata);
        if (ok) {
            credentials.setPin(buf, (short) (cdata + BLOCK));
        }
        result(ok);
    }

    void reset(byte[] buf, short cdata, short lc) {
        pinReference(buf);
        length(lc, (short) (2 * BLOCK));
        pinBlock(buf, cdata);
        pinBlock(buf, (short) (cdata + BLOCK));
        if (!Credentials.eightDigits(buf, cdata)) {
            ISOException.throwIt(Sw.WRONG_DATA);           // the PUK is 8 digits
        }
        if (credentials.pukTries() == 0) {
            ISOException.throwIt(Sw.AUTH_METHOD_BLOCKED);
        }
        boolean ok = credentials.checkPuk(buf, cdata);
        if (ok) {
            credentials.setPin(buf, (short) (cdata + BLOCK));
        }
        session.setPinVerified(false);
        if (!ok) {
            wrong(credentials.pukTries());
        }
    }
}
