package org.simvault.sim;

import javacard.framework.APDU;
import javacard.framework.Applet;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacardx.apdu.ExtendedLength;

/**
 * A trivial applet to test the jCardSim vpcd bridge (VpcdLink, SimulatedCard, card/jcardsim.py)
 * on its own, without the backup applet: tests/test_jcardsim.py compiles it with javac against
 * target/simvault-applet.jar and serves it with {@code --applet org.simvault.sim.BridgeTestApplet}.
 *
 * <pre>
 *   CLA 00, INS 01: echo the command data (extended length: up to 4096 bytes)
 *   CLA 00, INS 02: throw a NullPointerException (jCardSim answers 6F00; the bridge counts it)
 *   CLA 00, INS 03: the application-specific install parameters
 *   CLA 00, INS 04: increment and return a transient counter (cleared by a reset) and a
 *                   persistent one (kept): 4 bytes
 * </pre>
 * Install refuses parameters starting with EE (ISO 6A80), to test the launcher's refusal.
 */
public final class BridgeTestApplet extends Applet implements ExtendedLength {
    private final byte[] params;
    private final short[] transientCount;
    private short persistentCount;
    private final byte[] buffer = new byte[4096];

    private BridgeTestApplet(byte[] data, short offset, byte length) {
        short o = offset;
        short aidLength = (short) (data[o] & 0xFF);
        o += (short) (1 + aidLength);
        o += (short) (1 + (data[o] & 0xFF));            // control info
        short paramsLength = (short) (data[o] & 0xFF);
        o++;
        if (paramsLength > 0 && data[o] == (byte) 0xEE) {
            ISOException.throwIt(ISO7816.SW_WRONG_DATA);
        }
        params = new byte[paramsLength];
        Util.arrayCopyNonAtomic(data, o, params, (short) 0, paramsLength);
        transientCount = JCSystem.makeTransientShortArray((short) 1, JCSystem.CLEAR_ON_RESET);
        register(data, (short) (offset + 1), (byte) aidLength);
    }

    public static void install(byte[] data, short offset, byte length) {
        new BridgeTestApplet(data, offset, length);
    }

    @Override
    public void process(APDU apdu) {
        if (selectingApplet()) {
            return;
        }
        byte[] head = apdu.getBuffer();
        if (head[ISO7816.OFFSET_CLA] != 0) {
            ISOException.throwIt(ISO7816.SW_CLA_NOT_SUPPORTED);
        }
        switch (head[ISO7816.OFFSET_INS]) {
            case 0x01: {
                short n = apdu.setIncomingAndReceive();
                short total = apdu.getIncomingLength();
                if (total > (short) buffer.length) {
                    ISOException.throwIt(ISO7816.SW_WRONG_LENGTH);
                }
                short at = 0;
                short off = apdu.getOffsetCdata();
                while (n > 0) {
                    Util.arrayCopyNonAtomic(head, off, buffer, at, n);
                    at += n;
                    n = apdu.receiveBytes(off);
                }
                apdu.setOutgoing();
                apdu.setOutgoingLength(at);
                apdu.sendBytesLong(buffer, (short) 0, at);
                return;
            }
            case 0x02: {
                byte[] nothing = null;
                nothing[0] = 1;                          // the uncaught exception under test
                return;
            }
            case 0x03:
                apdu.setOutgoing();
                apdu.setOutgoingLength((short) params.length);
                apdu.sendBytesLong(params, (short) 0, (short) params.length);
                return;
            case 0x04:
                transientCount[0]++;
                persistentCount++;
                Util.setShort(head, (short) 0, transientCount[0]);
                Util.setShort(head, (short) 2, persistentCount);
                apdu.setOutgoingAndSend((short) 0, (short) 4);
                return;
            default:
                ISOException.throwIt(ISO7816.SW_INS_NOT_SUPPORTED);
        }
    }
}
