package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;

/**
 * Response delivery as the emulator's runtime does it (card/runtime.py _deliver):
 * up to Le bytes now, the rest behind 61xx for GET RESPONSE; an answer to a
 * command without Le waits behind 61xx whole. Java Card leaves this to the applet
 * under T=1, so it lives here.
 *
 * <p>A pending answer is either a copy in RAM (at most {@link #PEND_MAX} bytes: every
 * answer built in the APDU buffer) or a window on a pool object (a chunk or a committed
 * manifest), streamed from EEPROM by GET RESPONSE: no RAM copy of a 16 KiB read.
 * Any command but GET RESPONSE drops it, as do SELECT, reset and power loss.
 */
final class Io {
    static final short PEND_MAX = 256;
    static final short SHORT_MAX = 256;
    static final short EXT_MAX = 32767;

    private static final byte NONE = 0;
    private static final byte RAM = 1;
    private static final byte POOL = 2;

    // st[] (transient shorts)
    private static final short S_KIND = 0;
    private static final short S_OFF = 1;       // RAM: offset in pend; POOL: object offset
    private static final short S_LEN = 2;       // pending bytes
    private static final short S_RUNS = 3;      // POOL: offset of the runs in runsRef[0]
    private static final short S_NE = 4;        // Le of this command (0: no Le), valid when S_NE_SET
    private static final short S_NE_SET = 5;
    private static final short S_EXT = 6;       // this command is extended
    private static final short S_SIZE = 7;

    private final byte[] pend;
    private final short[] st;
    private final Object[] runsRef;
    private final Pool pool;
    private final short maxResponse;

    Io(Pool pool, short maxResponse) {
        this.pool = pool;
        this.maxResponse = maxResponse;
        pend = JCSystem.makeTransientByteArray(PEND_MAX, JCSystem.CLEAR_ON_DESELECT);
        st = JCSystem.makeTransientShortArray(S_SIZE, JCSystem.CLEAR_ON_DESELECT);
        runsRef = JCSystem.makeTransientObjectArray((short) 1, JCSystem.CLEAR_ON_DESELECT);
    }

    /** A new APDU: forget its predecessor's Le (the pending answer stays until {@link #drop}). */
    void newCommand(boolean extended) {
        st[S_NE_SET] = 0;
        st[S_NE] = 0;
        st[S_EXT] = extended ? (short) 1 : (short) 0;
    }

    void drop() {
        st[S_KIND] = NONE;
        st[S_LEN] = 0;
        runsRef[0] = null;
    }

    boolean hasPending() {
        return st[S_KIND] != NONE;
    }

    /** Le of this command, 0 when it has none (short Le 00 = 256; extended 0000 = the most). */
    short ne(APDU apdu) {
        if (st[S_NE_SET] == 0) {
            short le = apdu.setOutgoing();
            if (st[S_EXT] != 0) {
                le = le <= 0 ? EXT_MAX : le;            // 0000 (jCardSim 0, a card 32767); above 7FFF
            } else if (le < 0 || le > SHORT_MAX) {
                le = SHORT_MAX;
            }
            st[S_NE] = le;
            st[S_NE_SET] = 1;
        }
        return st[S_NE];
    }

    /** What an answer may hold: Le, or the card's maximum without Le (runtime.py _room). */
    short room(APDU apdu) {
        short ne = ne(apdu);
        return ne == 0 || ne > maxResponse ? maxResponse : ne;
    }

    /** Answer src[off..off+len) (the APDU buffer or any array); len <= PEND_MAX unless Le covers it. */
    void send(APDU apdu, byte[] src, short off, short len) {
        if (len <= 0) {
            noData(apdu);
            return;
        }
        short now = now(apdu, len);
        short rest = (short) (len - now);
        if (rest > 0) {
            if (rest > PEND_MAX) {
                ISOException.throwIt(ISO7816.SW_UNKNOWN);   // a bug: every RAM answer is smaller
            }
            Util.arrayCopyNonAtomic(src, (short) (off + now), pend, (short) 0, rest);
            st[S_KIND] = RAM;
            st[S_OFF] = 0;
            st[S_LEN] = rest;
        }
        if (now > 0) {
            apdu.setOutgoingLength(now);
            if (src == apdu.getBuffer()) {
                apdu.sendBytes(off, now);
            } else {
                apdu.sendBytesLong(src, off, now);
            }
        }
        more(rest);
    }

    /** Answer len bytes of a pool object (runs at runs[runsOff]) from objOff. */
    void sendPool(APDU apdu, byte[] runs, short runsOff, short objOff, short len) {
        if (len <= 0) {
            noData(apdu);
            return;
        }
        short now = now(apdu, len);
        short rest = (short) (len - now);
        if (rest > 0) {
            st[S_KIND] = POOL;
            st[S_OFF] = (short) (objOff + now);
            st[S_LEN] = rest;
            st[S_RUNS] = runsOff;
            runsRef[0] = runs;
        }
        if (now > 0) {
            apdu.setOutgoingLength(now);
            pool.send(apdu, runs, runsOff, objOff, now);
        }
        more(rest);
    }

    /** An empty answer after Le was asked for (READ at the end of an object): say so to the platform. */
    private void noData(APDU apdu) {
        if (st[S_NE_SET] != 0) {
            apdu.setOutgoingLength((short) 0);
        }
    }

    private short now(APDU apdu, short len) {
        short ne = ne(apdu);
        if (ne == 0) {
            return 0;                                // no Le: everything waits behind 61xx
        }
        return len < ne ? len : ne;
    }

    private static void more(short rest) {
        if (rest > 0) {
            ISOException.throwIt((short) (Sw.BYTES_AVAILABLE | (rest > 0xFF ? 0 : rest)));
        }
    }

    /** GET RESPONSE (00 C0 00 00, Le): the next piece of the pending answer. */
    void getResponse(APDU apdu, byte[] buf, short lc) {
        if (!hasPending()) {
            ISOException.throwIt(Sw.CONDITIONS_NOT_SATISFIED);
        }
        if (buf[ISO7816.OFFSET_P1] != 0 || buf[ISO7816.OFFSET_P2] != 0) {
            ISOException.throwIt(Sw.INCORRECT_P1P2);
        }
        if (lc != 0) {
            ISOException.throwIt(Sw.WRONG_LENGTH);
        }
        short ne = ne(apdu);
        if (ne == 0) {
            ISOException.throwIt(Sw.WRONG_LENGTH);      // GET RESPONSE without Le
        }
        if (ne > maxResponse) {
            ne = maxResponse;
        }
        short len = st[S_LEN];
        short n = len < ne ? len : ne;
        short off = st[S_OFF];
        short rest = (short) (len - n);
        apdu.setOutgoingLength(n);
        if (st[S_KIND] == RAM) {
            apdu.sendBytesLong(pend, off, n);
        } else {
            pool.send(apdu, (byte[]) runsRef[0], st[S_RUNS], off, n);
        }
        st[S_OFF] = (short) (off + n);
        st[S_LEN] = rest;
        if (rest == 0) {
            drop();
        }
        more(rest);
    }
}
