package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.Applet;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.AESKey;
import javacard.security.KeyBuilder;
import javacardx.crypto.Cipher;

/**
 * A bare applet around {@link Scp03} for Scp03Test: the secure channel with no
 * backup logic, installed under any AID (the published vectors come from a card
 * whose AID is not simvault's). Install parameters: key version (1) | K-ENC | K-MAC | K-DEK.
 *
 * <pre>
 * 80 50 kv 00  INITIALIZE UPDATE          84 82 SL 00  EXTERNAL AUTHENTICATE
 * 84 xx ..     any other INS: unwrap, remember the plain data, answer the "next response" wrapped
 * 80 01 00 00  set the next response (plain)       80 02 00 00  the last unwrapped plain data
 * 80 03 00 00  open, level, tries left             80 04 00 00  AES-CMAC: key (16) | message
 * </pre>
 */
public final class Scp03TestApplet extends Applet {
    private final Scp03 scp;
    private final byte[] next;
    private final byte[] last;
    private final short[] lengths;      // next, last
    private final AESKey cmacKey;
    private final Scp03Cmac cmac;

    private Scp03TestApplet(byte[] params, short off) {
        scp = new Scp03(params, (short) (off + 1), params[off]);
        next = JCSystem.makeTransientByteArray((short) 256, JCSystem.CLEAR_ON_RESET);
        last = JCSystem.makeTransientByteArray((short) 256, JCSystem.CLEAR_ON_RESET);
        lengths = JCSystem.makeTransientShortArray((short) 2, JCSystem.CLEAR_ON_RESET);
        cmacKey = (AESKey) KeyBuilder.buildKey(KeyBuilder.TYPE_AES_TRANSIENT_RESET, KeyBuilder.LENGTH_AES_128, false);
        cmac = new Scp03Cmac(Cipher.getInstance(Cipher.ALG_AES_BLOCK_128_CBC_NOPAD, false));
    }

    public static void install(byte[] bArray, short bOffset, byte bLength) {
        short aidOff = (short) (bOffset + 1);
        byte aidLen = bArray[bOffset];
        short o = (short) (aidOff + aidLen);
        o = (short) (o + 1 + bArray[o]);         // control info
        short paramsOff = (short) (o + 1);
        new Scp03TestApplet(bArray, paramsOff).register(bArray, aidOff, aidLen);
    }

    public void process(APDU apdu) {
        if (selectingApplet()) {
            return;
        }
        byte[] buf = apdu.getBuffer();
        byte cla = buf[ISO7816.OFFSET_CLA];
        byte ins = buf[ISO7816.OFFSET_INS];
        short lc = apdu.setIncomingAndReceive();
        short cdata = apdu.getOffsetCdata();
        if (cla == (byte) 0x80) {
            switch (ins) {
                case 0x50:
                    apdu.setOutgoingAndSend((short) 0, scp.initializeUpdate(buf, cdata, lc, buf[ISO7816.OFFSET_P1]));
                    return;
                case 0x01:
                    Util.arrayCopyNonAtomic(buf, cdata, next, (short) 0, lc);
                    lengths[0] = lc;
                    return;
                case 0x02:
                    Util.arrayCopyNonAtomic(last, (short) 0, buf, (short) 0, lengths[1]);
                    apdu.setOutgoingAndSend((short) 0, lengths[1]);
                    return;
                case 0x03:
                    buf[0] = (byte) (scp.isOpen() ? 1 : 0);
                    buf[1] = scp.securityLevel();
                    buf[2] = scp.triesLeft();
                    apdu.setOutgoingAndSend((short) 0, (short) 3);
                    return;
                case 0x04:
                    cmacKey.setKey(buf, cdata);
                    cmac.init(cmacKey);
                    cmac.update(buf, (short) (cdata + 16), (short) (lc - 16));
                    cmac.doFinal(buf, (short) 0);
                    apdu.setOutgoingAndSend((short) 0, (short) 16);
                    return;
                default:
                    ISOException.throwIt(ISO7816.SW_INS_NOT_SUPPORTED);
            }
        }
        if (cla != (byte) 0x84) {
            ISOException.throwIt(ISO7816.SW_CLA_NOT_SUPPORTED);
        }
        if (ins == (byte) 0x82) {
            scp.externalAuthenticate(buf, cdata, lc);
            return;
        }
        short plain = scp.unwrap(buf, cdata, lc);
        Util.arrayCopyNonAtomic(buf, cdata, last, (short) 0, plain);
        lengths[1] = plain;
        Util.arrayCopyNonAtomic(next, (short) 0, buf, (short) 0, lengths[0]);
        short out = scp.wrap(buf, (short) 0, lengths[0]);
        lengths[0] = 0;
        apdu.setOutgoingAndSend((short) 0, out);
    }
}
