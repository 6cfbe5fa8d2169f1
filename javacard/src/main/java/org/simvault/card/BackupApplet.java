package org.simvault.card;

import javacard.framework.APDU;
import javacard.framework.Applet;
import javacard.framework.CardRuntimeException;
import javacard.framework.ISO7816;
import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;
import javacard.security.MessageDigest;
import javacardx.apdu.ExtendedLength;

/**
 * The simvault backup applet: every command of apdu_specs/README.md, with the
 * emulator's status words and check order (card/runtime.py, card/applet.py,
 * card/applet_admin.py). This class is the card OS part: class byte, command
 * chaining, GET RESPONSE, SELECT and the FCI, then one handler per instruction in
 * {@link Pins}, {@link Upload}, {@link Backups} and {@link Admin}.
 *
 * <p>Everything is allocated in install(); process() allocates nothing. Any exception
 * a handler does not turn into a status word aborts the open transaction and answers
 * 6F00 (NO_PRECISE_DIAGNOSIS): the fuzz test counts those and wants none.
 */
public final class BackupApplet extends Applet implements ExtendedLength {
    static final byte APPLET_VERSION = 1;
    static final byte FEATURES = 0x03;                 // extended length, command chaining

    static final byte CLA_ISO = 0x00;
    static final byte CLA_PROPRIETARY = (byte) 0x80;
    static final byte CLA_SECURE = (byte) 0x84;
    static final byte CLA_CHAINING = 0x10;

    static final byte INS_SELECT = (byte) 0xA4;
    static final byte INS_GET_RESPONSE = (byte) 0xC0;
    static final byte INS_MANAGE_CHANNEL = 0x70;

    final Store store;
    final Credentials credentials;
    final Ecdsa ecdsa;
    final Scp03 scp;
    final MessageDigest sha;
    final Session session;
    final Io io;
    final short maxChunk;
    final short maxCommand;
    private final Pins pins;
    private final Upload upload;
    private final Backups backups;
    private final Admin admin;
    private final Info info;

    private BackupApplet(Perso p) {
        sha = MessageDigest.getInstance(MessageDigest.ALG_SHA_256, false);
        ecdsa = new Ecdsa();
        credentials = new Credentials(p, sha, ecdsa);
        scp = new Scp03(p.data, p.keys, p.keyVersion);
        store = new Store(p.blocks, p.chunkEntries, p.maxManifest, p.txnBudget);
        maxChunk = p.maxChunk;
        short cmd = (short) (p.maxChunk + 64);             // a chunk, its id and a MAC, as the emulator's
        maxCommand = cmd < 0 || cmd > Io.EXT_MAX ? Io.EXT_MAX : cmd;
        session = new Session();
        io = new Io(store.pool, p.maxChunk);
        pins = new Pins(this);
        upload = new Upload(this);
        backups = new Backups(this);
        admin = new Admin(this);
        info = new Info(this);
    }

    /** GlobalPlatform install data: LV instance AID, LV control info, LV parameters (README "Install parameters"). */
    public static void install(byte[] bArray, short bOffset, byte bLength) {
        short aidOff = (short) (bOffset + 1);
        byte aidLen = bArray[bOffset];
        short ctrl = (short) (aidOff + aidLen);
        short params = (short) (ctrl + 1 + (bArray[ctrl] & 0xFF));
        short paramsLen = (short) (bArray[params] & 0xFF);
        if ((short) (params + 1 + paramsLen) > (short) (bOffset + (bLength & 0xFF))) {
            ISOException.throwIt(Sw.WRONG_DATA);
        }
        Perso p = new Perso(bArray, (short) (params + 1), paramsLen);
        if (p.empty) {
            ISOException.throwIt(Sw.WRONG_DATA);           // PIN, PUK and the SCP03 key set are required
        }
        new BackupApplet(p).register(bArray, aidOff, aidLen);
    }

    public boolean select() {
        session.forget();
        scp.close();
        io.drop();
        return true;
    }

    public void deselect() {
        session.forget();
        scp.close();
        io.drop();
    }

    public void process(APDU apdu) {
        byte[] buf = apdu.getBuffer();
        boolean keepChain = false;
        try {
            store.finishWork();                 // an update a power cut interrupted
            short claError = claError(buf[ISO7816.OFFSET_CLA]);
            if (claError != 0) {
                io.drop();
                keepChain = true;                // the emulator's runtime refuses the class before the chain
                ISOException.throwIt(claError);
            }
            dispatch(apdu, buf);
        } catch (ISOException e) {
            failed(e.getReason(), keepChain);
        } catch (CardRuntimeException e) {
            failed(Sw.NO_PRECISE_DIAGNOSIS, false);     // APDUException, CryptoException, ...: a bug
        } catch (RuntimeException e) {
            failed(Sw.NO_PRECISE_DIAGNOSIS, false);
        }
    }

    private void failed(short sw, boolean keepChain) {
        Txn.abortIfOpen();
        if (!keepChain && (short) (sw & (short) 0xFF00) != Sw.BYTES_AVAILABLE) {
            session.endChain();
            upload.reset();
        }
        ISOException.throwIt(sw);
    }

    // ---- the card OS part (runtime.py _process) ------------------------------------------

    private void dispatch(APDU apdu, byte[] buf) {
        byte cla = buf[ISO7816.OFFSET_CLA];
        byte ins = buf[ISO7816.OFFSET_INS];
        byte base = (byte) (cla & (byte) 0xEF);
        boolean getResponse = base == CLA_ISO && ins == INS_GET_RESPONSE;
        if (!getResponse) {
            io.drop();                           // any other command drops a pending answer
        }
        short got = 0;
        short cdata = ISO7816.OFFSET_CDATA;
        short lc = 0;
        if (!t0NoData(base, ins)) {
            got = apdu.setIncomingAndReceive();
            cdata = apdu.getOffsetCdata();
            lc = apdu.getIncomingLength();
        }
        io.newCommand(cdata == ISO7816.OFFSET_EXT_CDATA);
        if (lc > maxCommand) {
            ISOException.throwIt(Sw.WRONG_LENGTH);
        }
        boolean chained = (cla & CLA_CHAINING) != 0;
        if (session.chainOpen() && !session.chainMatches(buf)) {
            ISOException.throwIt(Sw.LAST_COMMAND_OF_CHAIN_EXPECTED);
        }
        if (base == CLA_ISO && ins == INS_MANAGE_CHANNEL) {
            ISOException.throwIt(Sw.LOGICAL_CHANNEL_NOT_SUPPORTED);
        }
        if (getResponse) {
            if (chained) {
                io.drop();
                ISOException.throwIt(Sw.CHAINING_NOT_SUPPORTED);
            }
            io.getResponse(apdu, buf, lc);
            return;
        }
        if (selectingApplet()) {
            select(apdu, buf, got, cdata, lc, true);
            return;
        }
        if (base == CLA_PROPRIETARY && Upload.streams(ins)) {
            if (!session.selected()) {
                ISOException.throwIt(Sw.COMMAND_NOT_ALLOWED);
            }
            upload.stream(apdu, buf, got, cdata, lc, chained);
            return;
        }
        // a command whose data fits a buffer: chained parts are assembled in RAM
        if (chained || session.chainOpen()) {
            if (!session.chainOpen()) {
                session.openChain(buf);
            }
            appendAll(apdu, buf, got, cdata, lc);
            if (chained) {
                return;                          // 9000: send the next part
            }
            lc = session.chainLength();
            if ((short) (cdata + lc) > (short) buf.length) {
                ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);
            }
            Util.arrayCopyNonAtomic(session.chainData, (short) 0, buf, cdata, lc);
            session.endChain();
        } else if (got < lc) {
            receiveRest(apdu, buf, got, cdata, lc);
        }
        if (base == CLA_ISO && ins == INS_SELECT) {
            select(apdu, buf, lc, cdata, lc, false);
            return;
        }
        if (!session.selected()) {
            ISOException.throwIt(Sw.COMMAND_NOT_ALLOWED);
        }
        command(apdu, buf, base, ins, cdata, lc);
    }

    /** Under T=0 a case 2 command's P3 is Le, not Lc: do not receive data for the commands that
     *  have none (GET STATUS, ABORT, LIST BACKUPS, LIST ANCHORS, GET RESPONSE). Under T=1 every
     *  command is received: its Lc and the extended form are known exactly. */
    private static boolean t0NoData(byte base, byte ins) {
        if ((APDU.getProtocol() & APDU.PROTOCOL_TYPE_MASK) != APDU.PROTOCOL_T0) {
            return false;
        }
        if (base == CLA_ISO) {
            return ins == INS_GET_RESPONSE;
        }
        return base == CLA_PROPRIETARY && (ins == 0x10 || ins == Backups.INS_ABORT_BACKUP
                || ins == Backups.INS_LIST_BACKUPS || ins == 0x40);
    }

    /** 0 for CLA 00, 80, 84 (chaining bit allowed) on the basic channel, else the SW (runtime.py check_cla). */
    private static short claError(byte cla) {
        if (cla == (byte) 0xFF) {
            return Sw.CLA_NOT_SUPPORTED;
        }
        byte top = (byte) (cla & (byte) 0xE0);
        if (top == 0x40 || top == 0x60) {
            return Sw.LOGICAL_CHANNEL_NOT_SUPPORTED;
        }
        byte base = (byte) (cla & (byte) 0xEC);
        if (base == CLA_ISO || base == CLA_PROPRIETARY || base == CLA_SECURE
                || base == 0x04 || base == 0x08 || base == 0x0C) {
            if ((cla & 0x03) != 0) {
                return Sw.LOGICAL_CHANNEL_NOT_SUPPORTED;
            }
            if (base == 0x04 || base == 0x08 || base == 0x0C) {
                return Sw.SECURE_MESSAGING_NOT_SUPPORTED;
            }
            return 0;
        }
        return Sw.CLA_NOT_SUPPORTED;
    }

    private void appendAll(APDU apdu, byte[] buf, short got, short cdata, short lc) {
        short left = lc;
        while (got > 0) {
            if (!session.appendChain(buf, cdata, got)) {
                ISOException.throwIt(Sw.NOT_ENOUGH_MEMORY);   // longer than the card's chain buffer
            }
            left -= got;
            got = left > 0 ? apdu.receiveBytes(cdata) : 0;
        }
    }

    /** The rest of an extended command's data behind the first block (a card with a small buffer). */
    private static void receiveRest(APDU apdu, byte[] buf, short got, short cdata, short lc) {
        short at = (short) (cdata + got);
        while (got < lc) {
            if ((short) (at + APDU.getInBlockSize()) > (short) buf.length && at < (short) (cdata + lc)) {
                ISOException.throwIt(Sw.WRONG_LENGTH);       // does not fit the APDU buffer
            }
            short n = apdu.receiveBytes(at);
            if (n <= 0) {
                break;
            }
            got += n;
            at += n;
        }
    }

    private void command(APDU apdu, byte[] buf, byte base, byte ins, short cdata, short lc) {
        if (base == CLA_ISO) {
            switch (ins) {
                case Pins.INS_VERIFY:
                    pins.verify(buf, cdata, lc);
                    return;
                case Pins.INS_CHANGE_REFERENCE_DATA:
                    pins.change(buf, cdata, lc);
                    return;
                case Pins.INS_RESET_RETRY_COUNTER:
                    pins.reset(buf, cdata, lc);
                    return;
                default:
                    break;
            }
        } else if (base == CLA_PROPRIETARY) {
            switch (ins) {
                case 0x10:
                    info.getStatus(apdu, buf);
                    return;
                case Backups.INS_BEGIN_BACKUP:
                    backups.begin(apdu, buf, cdata, lc);
                    return;
                case Backups.INS_COMMIT_BACKUP:
                    backups.commit(apdu, buf, cdata, lc);
                    return;
                case Backups.INS_ABORT_BACKUP:
                    backups.abort(buf);
                    return;
                case Backups.INS_LIST_BACKUPS:
                    backups.list(apdu, buf);
                    return;
                case Backups.INS_READ_MANIFEST:
                    backups.readManifest(apdu, buf, cdata, lc);
                    return;
                case Backups.INS_READ_CHUNK:
                    backups.readChunk(apdu, buf, cdata, lc);
                    return;
                case Backups.INS_DELETE_BACKUP:
                    backups.delete(buf, cdata, lc);
                    return;
                case 0x40:
                    info.listAnchors(apdu, buf);
                    return;
                case Admin.INS_INITIALIZE_UPDATE:
                    admin.initializeUpdate(apdu, buf, cdata, lc);
                    return;
                default:
                    break;
            }
        } else if (base == CLA_SECURE) {
            switch (ins) {
                case Admin.INS_EXTERNAL_AUTHENTICATE:
                    admin.externalAuthenticate(buf, cdata, lc);
                    return;
                case Admin.INS_PUT_TRUST_ANCHOR:
                case Admin.INS_DELETE_TRUST_ANCHOR:
                case Admin.INS_ERASE_BACKUPS:
                    admin.command(apdu, buf, ins, cdata, lc);
                    return;
                default:
                    break;
            }
        }
        ISOException.throwIt(knownIns(ins) ? Sw.CLA_NOT_SUPPORTED : Sw.INS_NOT_SUPPORTED);
    }

    /** The instructions of the command table (any class): a wrong class for one of them is 6E00. */
    private static boolean knownIns(byte ins) {
        switch (ins) {
            case 0x10: case 0x20: case 0x22: case 0x24: case 0x26: case 0x28: case 0x2A: case 0x2C:
            case 0x30: case 0x32: case 0x34: case 0x36: case 0x40: case 0x50:
            case (byte) 0x82: case (byte) 0xE2: case (byte) 0xE4: case (byte) 0xEE:
                return true;
            default:
                return false;
        }
    }

    // ---- SELECT, FCI, GET STATUS, LIST ANCHORS ----------------------------------------

    /** runtime.py _select. selecting: the platform made this applet the selected one. */
    private void select(APDU apdu, byte[] buf, short got, short cdata, short lc, boolean selecting) {
        if (selecting && got < lc) {
            receiveRest(apdu, buf, got, cdata, lc);
        }
        byte p2 = buf[ISO7816.OFFSET_P2];
        short sw = 0;
        if (buf[ISO7816.OFFSET_P1] != 0x04 || (p2 & 0x03) != 0 || ((p2 & 0xFC) != 0 && (p2 & 0xFC) != 0x0C)) {
            sw = Sw.INCORRECT_P1P2;
        } else if (lc < 5 || lc > 16) {
            sw = lc == 0 ? Sw.FILE_NOT_FOUND : Sw.WRONG_LENGTH;
        } else if (!JCSystem.getAID().equals(buf, cdata, (byte) lc)) {
            sw = Sw.FILE_NOT_FOUND;
        }
        if (sw != 0) {
            ISOException.throwIt(sw);            // the selection stays as it was (never selected: 6986)
        }
        session.select();
        scp.close();
        if ((p2 & 0x0C) == 0) {
            io.send(apdu, buf, (short) 0, info.fci(buf));
        }
    }

    Upload upload() {
        return upload;
    }

    static void requireP1P2Zero(byte[] buf) {
        if (buf[ISO7816.OFFSET_P1] != 0 || buf[ISO7816.OFFSET_P2] != 0) {
            ISOException.throwIt(Sw.INCORRECT_P1P2);
        }
    }

    /** PIN verified in this session (6982). */
    void requirePin() {
        if (!session.pinVerified()) {
            ISOException.throwIt(Sw.SECURITY_STATUS_NOT_SATISFIED);
        }
    }
}
