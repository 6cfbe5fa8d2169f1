package org.simvault.card;

import javacard.framework.ISOException;
import javacard.framework.JCSystem;
import javacard.framework.Util;

/**
 * The on-card manifest (apdu_specs/manifest.py): E1 { 80 version, 81 backup id,
 * 82 sequence, 83 created, 84 device id, 85 signer key id, 86 total size,
 * 87 chunk table, 88 host section }, each once and in this order. {@link #parse}
 * accepts exactly what the emulator's MANIFEST codec accepts (BER lengths of 1-4
 * bytes, strict UTF-8 device id of at most 64 bytes, no chunk listed twice, a total
 * that matches the table) and answers 6A80 for anything else.
 */
final class Manifest {
    static final short RECORD = 68;            // chunk id 32 | SHA-256 32 | size 4
    static final short DEVICE_ID_MAX = 64;

    // parse results: offsets into the manifest buffer
    short backupId;
    short sequence;
    short created;
    short keyId;
    short total;
    short table;
    short count;

    private final byte[] sum;                  // 5-byte running total (transient)
    private short pos;                         // parser position
    private short vlen;                        // last value length

    Manifest() {
        sum = JCSystem.makeTransientByteArray((short) 5, JCSystem.CLEAR_ON_DESELECT);
    }

    /** Parse m[0..len); 6A80 unless it is a well-formed manifest. */
    void parse(byte[] m, short len) {
        pos = 0;
        header(m, len, (byte) 0xE1);
        if ((short) (pos + vlen) != len) {
            fail();                              // trailing bytes after the E1 template
        }
        short end = len;
        expect(m, end, (byte) 0x80, (short) 1);
        if (m[pos] != 1) {
            fail();                              // format version 1 only
        }
        pos++;
        backupId = fixed(m, end, (byte) 0x81, (short) 16);
        sequence = fixed(m, end, (byte) 0x82, (short) 8);
        created = fixed(m, end, (byte) 0x83, (short) 8);
        header(m, end, (byte) 0x84);
        if (vlen > DEVICE_ID_MAX || !utf8(m, pos, vlen)) {
            fail();
        }
        pos += vlen;
        keyId = fixed(m, end, (byte) 0x85, (short) 8);
        total = fixed(m, end, (byte) 0x86, (short) 4);
        header(m, end, (byte) 0x87);
        table = pos;
        if ((short) (vlen % RECORD) != 0) {
            fail();
        }
        count = (short) (vlen / RECORD);
        pos += vlen;
        header(m, end, (byte) 0x88);
        pos += vlen;
        if (pos != end) {
            fail();                              // a tenth field
        }
        checkTable(m);
    }

    /** Offset of chunk record i's id (its SHA-256 at +32, size at +64). */
    short record(short i) {
        return (short) (table + (short) (i * RECORD));
    }

    private void checkTable(byte[] m) {
        Util.arrayFillNonAtomic(sum, (short) 0, (short) 5, (byte) 0);
        for (short i = 0; i < count; i++) {
            short r = record(i);
            for (short j = 0; j < i; j++) {
                if (Util.arrayCompare(m, r, m, record(j), (short) 32) == 0) {
                    fail();                      // a chunk listed twice
                }
            }
            add(m, (short) (r + 64));
        }
        if (sum[0] != 0 || Util.arrayCompare(sum, (short) 1, m, total, (short) 4) != 0) {
            fail();                              // total size does not match the table
        }
    }

    /** sum += the u32 at m[off..off+4). */
    private void add(byte[] m, short off) {
        short carry = 0;
        for (short i = 3; i >= 0; i--) {
            short s = (short) ((sum[(short) (i + 1)] & 0xFF) + (m[(short) (off + i)] & 0xFF) + carry);
            sum[(short) (i + 1)] = (byte) s;
            carry = (short) (s >> 8);
        }
        sum[0] = (byte) (sum[0] + carry);
    }

    private short fixed(byte[] m, short end, byte tag, short want) {
        expect(m, end, tag, want);
        short at = pos;
        pos += want;
        return at;
    }

    private void expect(byte[] m, short end, byte tag, short want) {
        header(m, end, tag);
        if (vlen != want) {
            fail();
        }
    }

    /** Tag (one byte, equal to tag) and BER length at pos, value inside end; pos -> value. */
    private void header(byte[] m, short end, byte tag) {
        if (pos >= end || m[pos] != tag) {
            fail();
        }
        pos++;
        if (pos >= end) {
            fail();
        }
        short first = (short) (m[pos++] & 0xFF);
        if (first < 0x80) {
            vlen = first;
        } else {
            short n = (short) (first & 0x7F);
            if (n == 0 || n > 4 || (short) (pos + n) > end) {
                fail();
            }
            short v = 0;
            for (short i = 0; i < n; i++) {
                if (v > 0x7F) {
                    fail();                      // above 32767: longer than any buffer here
                }
                v = (short) ((v << 8) | (m[pos++] & 0xFF));
            }
            vlen = v;
        }
        if (vlen < 0 || vlen > (short) (end - pos)) {
            fail();
        }
    }

    /** Strict UTF-8 (what Python's bytes.decode("utf-8") accepts). */
    static boolean utf8(byte[] b, short off, short len) {
        short end = (short) (off + len);
        while (off < end) {
            short c = (short) (b[off] & 0xFF);
            short n;
            short lo = 0x80;
            short hi = 0xBF;
            if (c < 0x80) {
                off++;
                continue;
            } else if (c >= 0xC2 && c <= 0xDF) {
                n = 1;
            } else if (c >= 0xE0 && c <= 0xEF) {
                n = 2;
                if (c == 0xE0) {
                    lo = 0xA0;
                } else if (c == 0xED) {
                    hi = 0x9F;
                }
            } else if (c >= 0xF0 && c <= 0xF4) {
                n = 3;
                if (c == 0xF0) {
                    lo = 0x90;
                } else if (c == 0xF4) {
                    hi = 0x8F;
                }
            } else {
                return false;
            }
            if ((short) (off + n) >= end) {
                return false;                    // truncated sequence
            }
            for (short i = 1; i <= n; i++) {
                short d = (short) (b[(short) (off + i)] & 0xFF);
                if (d < (i == 1 ? lo : 0x80) || d > (i == 1 ? hi : 0xBF)) {
                    return false;
                }
            }
            off += (short) (n + 1);
        }
        return true;
    }

    private static void fail() {
        ISOException.throwIt(Sw.WRONG_DATA);
    }
}
