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

    /** One C-APDU to one R-APDU; never throws: an escaping exception answers 6F00. */
    public synchronized byte[] transmit(byte[] command) {
        apdus.incrementAndGet();
        bytesIn.addAndGet(command.length);
        byte[] response;
        try {
            response = simulator.transmitCommand(command);
        } catch (RuntimeException e) {
            response = new byte[] {0x6F, 0x00};
        }
        if (response == null || response.length < 2) {
            response = new byte[] {0x6F, 0x00};
        }
        if (response[response.length - 2] == 0x6F && response[response.length - 1] == 0x00) {
            internalErrors.incrementAndGet();     // jCardSim's answer to an uncaught exception in the applet
        }
        bytesOut.addAndGet(response.length);
        return response;
    }

    /** "apdus N bytes_in N bytes_out N sw6f00 N": what the bridge has carried. */
    public String counters() {
        return "apdus " + apdus.get() + " bytes_in " + bytesIn.get() + " bytes_out " + bytesOut.get()
                + " sw6f00 " + internalErrors.get();
    }
}
