package org.simvault.card;

import javacard.framework.ISO7816;
import javacard.framework.ISOException;

/** GlobalPlatform SCP03 admin channel (skeleton; being filled in). */
public final class Scp03 {
    public Scp03(byte[] keySet, short off, byte keyVersion) {
    }

    public short initializeUpdate(byte[] buf, short cdataOff, short lc, byte p1) {
        ISOException.throwIt(ISO7816.SW_INS_NOT_SUPPORTED);
        return 0;
    }

    public void externalAuthenticate(byte[] buf, short cdataOff, short lc) {
        ISOException.throwIt(ISO7816.SW_INS_NOT_SUPPORTED);
    }

    public short unwrap(byte[] buf, short cdataOff, short lc) {
        ISOException.throwIt(ISO7816.SW_INS_NOT_SUPPORTED);
        return 0;
    }

    public short wrap(byte[] buf, short off, short len) {
        ISOException.throwIt(ISO7816.SW_INS_NOT_SUPPORTED);
        return 0;
    }

    public boolean isOpen() {
        return false;
    }

    public void close() {
    }

    public byte securityLevel() {
        return 0;
    }
}
