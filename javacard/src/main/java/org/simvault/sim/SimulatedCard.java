package org.simvault.sim;

import com.licel.jcardsim.smartcardio.CardSimulator;
import javacard.framework.AID;
import javacard.framework.Applet;

import java.util.concurrent.atomic.AtomicLong;

/**
 * One simulated Java Card: jCardSim's {@link CardSimulator} with one applet
 * installed the way a GlobalPlatform card manager would (install data =
 * LV instance AID, LV control info, LV application-specific parameters).
 *
 * <p>jCardSim keeps every persistent object in the JVM's heap: the card's
 * "EEPROM" is gone when the process stops. Power off and reset clear the
 * transient state and the selection, as on a card.
 */
public final class SimulatedCard {

    /** The ATR of the Python emulator (card/runtime.py build_atr): T=0 and T=1 offered,
     *  card capabilities with command chaining and extended Lc/Le, label "simvault". */
    public static final String DEFAULT_ATR = "3B8E800180738021C05873696D7661756C74C8";

    private final CardSimulator simulator;
    private final byte[] atr;
    private final AtomicLong apdus = new AtomicLong();
    private final AtomicLong bytesIn = new AtomicLong();
    private final AtomicLong bytesOut = new AtomicLong();
    private final AtomicLong internalErrors = new AtomicLong();

    public SimulatedCard(Class<? extends Applet> appletClass, byte[] aid, byte[] params, byte[] atr) {
        this.atr = atr.clone();
        System.setProperty("com.licel.jcardsim.card.ATR", Hex.encode(atr));
        simulator = new CardSimulator();
        byte[] install = installData(aid, params);
        AID instance = new AID(aid, (short) 0, (byte) aid.length);
        simulator.installApplet(instance, appletClass, install, (short) 0, (byte) install.length);
        simulator.changeProtocol("T=1");
        simulator.reset();
    }

    /** GlobalPlatform install data as a card manager hands it to Applet.install:
     *  [len AID][AID][len control info][privileges: 00][len params][params]. */
    static byte[] installData(byte[] aid, byte[] params) {
        if (aid.length < 5 || aid.length > 16) {
            throw new IllegalArgumentException("an AID is 5..16 bytes, got " + aid.length);
        }
        int total = 1 + aid.length + 2 + 1 + params.length;
        if (params.length > 255 || total > 255) {
            throw new IllegalArgumentException("install parameters of " + params.length
                    + " bytes do not fit the 255-byte install data of Applet.install");
        }
        byte[] out = new byte[total];
        int o = 0;
        out[o++] = (byte) aid.length;
        System.arraycopy(aid, 0, out, o, aid.length);
        o += aid.length;
        out[o++] = 1;                       // control info: one privilege byte, none granted
        out[o++] = 0;
        out[o++] = (byte) params.length;
        System.arraycopy(params, 0, out, o, params.length);
        return out;
    }

    public byte[] atr() {
        return atr.clone();
    }

    /** Power on, reset and power off: the card forgets its transient state and selection. */
    public synchronized void reset() {
        simulator.reset();
    }

    /** One C-APDU to one R-APDU; never throws: an escaping exception answers 6F00.
     *
     *  <p>Three answers are the card OS's, not the applet's, and jCardSim's differ from a GP
     *  card's (and the Python emulator's, card/runtime.py): a TPDU whose lengths do not add up
     *  (jCardSim throws before any applet runs) is 6700 here; a short case 4 APDU of 255 data
     *  bytes and Le (261 bytes, over jCardSim's 260-byte buffer) goes to the applet in its
     *  extended form, same meaning; a SELECT of an AID that is not installed is 6A82 (jCardSim:
     *  6999). Only a 6F00 the applet answers is counted as an uncaught exception. */
    public synchronized byte[] transmit(byte[] command) {
        apdus.incrementAndGet();
        bytesIn.addAndGet(command.length);
        byte[] response = exchange(simulator, command);
        if (isInternalError(response)) {
            internalErrors.incrementAndGet();
        }
        bytesOut.addAndGet(response.length);
        return response;
    }

    /** What {@link #transmit} answers, for any jCardSim simulator (the JUnit tests also drive
     *  bare ones): the card OS's three answers corrected, an escaping exception as 6F00. */
    public static byte[] exchange(CardSimulator simulator, byte[] command) {
        if (!wellFramed(command)) {
            return new byte[] {0x67, 0x00};
        }
        byte[] response;
        try {
            response = simulator.transmitCommand(asJcardsimTakesIt(command));
        } catch (RuntimeException e) {
            return new byte[] {0x6F, 0x00};
        }
        if (response == null || response.length < 2) {
            return new byte[] {0x6F, 0x00};
        }
        if (response.length == 2 && response[0] == 0x69 && response[1] == (byte) 0x99
                && command[1] == (byte) 0xA4 && (command[0] & 0xFC) == 0) {
            return new byte[] {0x6A, (byte) 0x82};   // SELECT: file or application not found
        }
        return response;
    }

    /** 6F00: jCardSim's answer to an exception the applet did not catch. */
    public static boolean isInternalError(byte[] response) {
        int n = response.length;
        return response[n - 2] == 0x6F && response[n - 1] == 0x00;
    }

    /** ISO 7816-3 12.1.3 / 7816-4 5.1 cases 1-4, short and extended (card/runtime.py parse_command). */
    static boolean wellFramed(byte[] c) {
        int n = c.length - 4;
        if (n < 0) {
            return false;
        }
        if (n <= 1) {
            return true;
        }
        int b0 = c[4] & 0xFF;
        if (b0 != 0) {
            return n == 1 + b0 || n == 2 + b0;
        }
        if (n < 3) {
            return false;
        }
        if (n == 3) {
            return true;
        }
        int lc = ((c[5] & 0xFF) << 8) | (c[6] & 0xFF);
        return lc != 0 && (n == 3 + lc || n == 5 + lc);
    }

    /** A short case 4 APDU with Lc 255 in its extended form (jCardSim's short buffer is 260 bytes). */
    static byte[] asJcardsimTakesIt(byte[] c) {
        if (c.length != 4 + 1 + 255 + 1 || (c[4] & 0xFF) != 255) {
            return c;
        }
        int le = c[c.length - 1] & 0xFF;
        if (le == 0) {
            le = 256;
        }
        byte[] out = new byte[4 + 3 + 255 + 2];
        System.arraycopy(c, 0, out, 0, 4);
        out[4] = 0;
        out[5] = 0;
        out[6] = (byte) 0xFF;
        System.arraycopy(c, 5, out, 7, 255);
        out[out.length - 2] = (byte) (le >> 8);
        out[out.length - 1] = (byte) le;
        return out;
    }

    /** "apdus N bytes_in N bytes_out N sw6f00 N": what the bridge has carried. */
    public String counters() {
        return "apdus " + apdus.get() + " bytes_in " + bytesIn.get() + " bytes_out " + bytesOut.get()
                + " sw6f00 " + internalErrors.get();
    }
}
