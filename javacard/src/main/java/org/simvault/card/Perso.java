package org.simvault.card;

import javacard.framework.ISOException;

/**
 * The install parameters (apdu_specs/README.md, "Personalisation (install
 * parameters)"): simple TLVs (tag, one length byte, value) in the
 * application-specific part of the GlobalPlatform install data. Parsed and
 * checked as a whole before anything is allocated, so an applet is never left
 * half personalised: a bad TLV throws 6A80 and the installation fails.
 */
final class Perso {
    static final byte TAG_PIN = 0x01;
    static final byte TAG_PUK = 0x02;
    static final byte TAG_KEYS = 0x03;
    static final byte TAG_KEY_VERSION = 0x04;
    static final byte TAG_ANCHOR = 0x05;
    static final byte TAG_STORE_SIZE = 0x06;
    static final byte TAG_CHUNK_ENTRIES = 0x07;
    static final byte TAG_MAX_CHUNK = 0x08;
    static final byte TAG_MAX_MANIFEST = 0x09;
    static final byte TAG_TXN_BUDGET = 0x0A;

    static final short KEYS_LENGTH = 48;
    static final short DEFAULT_BLOCKS = 256;            // 65536 bytes
    static final short MIN_BLOCKS = 64;                 // 16384 bytes
    static final short MAX_CHUNK_ENTRIES = (short) (Chunks.PAGES_MAX * Chunks.PAGE);   // 8192
    static final short MIN_DEFAULT_ENTRIES = 64;
    static final short ENTRY_BLOCKS = 8;                // default: one chunk entry per 8 blocks
    static final short DEFAULT_MAX_CHUNK = 16384;
    static final short MIN_DEFAULT_MANIFEST = 8192;    // default: store bytes / 128 (blocks * 2) within 8192..32767
    static final short MIN_MANIFEST = 256;

    final byte[] data;
    short pin = -1;
    short puk = -1;
    short keys = -1;
    byte keyVersion = 1;
    final short[] anchors = new short[Credentials.MAX_ANCHORS];
    byte anchorCount;
    short blocks = DEFAULT_BLOCKS;
    short chunkEntries = -1;
    short maxChunk = DEFAULT_MAX_CHUNK;
    short maxManifest = -1;
    short txnBudget = 0;
    boolean empty = true;

    /** Parse params[off..off+len); 6A80 for anything the README does not allow. */
    Perso(byte[] params, short off, short len) {
        data = params;
        short end = (short) (off + len);
        short seen = 0;                       // bit per tag 01..0A, 05 may repeat
        while (off < end) {
            if ((short) (off + 2) > end) {
                fail();
            }
            byte tag = params[off];
            short vlen = (short) (params[(short) (off + 1)] & 0xFF);
            short v = (short) (off + 2);
            if (vlen > 0x7F || (short) (v + vlen) > end || tag < TAG_PIN || tag > TAG_TXN_BUDGET) {
                fail();
            }
            short bit = (short) (1 << tag);
            if (tag != TAG_ANCHOR && (seen & bit) != 0) {
                fail();
            }
            seen |= bit;
            take(tag, v, vlen);
            off = (short) (v + vlen);
        }
        empty = seen == 0;
        if (!empty && (pin < 0 || puk < 0 || keys < 0)) {
            fail();
        }
        if (maxManifest < 0) {                     // apdu_specs default_max_manifest
            maxManifest = blocks >= 16384 ? Sw.MAX_SHORT : (short) (blocks * 2);
            if (maxManifest < MIN_DEFAULT_MANIFEST) {
                maxManifest = MIN_DEFAULT_MANIFEST;
            }
        }
        if (chunkEntries < 0) {
            chunkEntries = (short) (blocks / ENTRY_BLOCKS);     // apdu_specs default_chunk_entries
            if (chunkEntries < MIN_DEFAULT_ENTRIES) {
                chunkEntries = MIN_DEFAULT_ENTRIES;
            }
            if (chunkEntries > MAX_CHUNK_ENTRIES) {
                chunkEntries = MAX_CHUNK_ENTRIES;
            }
        }
    }

    private void take(byte tag, short v, short vlen) {
        switch (tag) {
            case TAG_PIN:
                need(vlen, (short) 8);
                if (!Credentials.validPinBlock(data, v, (short) 4)) {
                    fail();
                }
                pin = v;
                break;
            case TAG_PUK:
                need(vlen, (short) 8);
                if (!Credentials.validPinBlock(data, v, (short) 8)) {
                    fail();
                }
                puk = v;
                break;
            case TAG_KEYS:
                need(vlen, KEYS_LENGTH);
                keys = v;
                break;
            case TAG_KEY_VERSION:
                need(vlen, (short) 1);
                keyVersion = data[v];
                if (keyVersion < 1) {             // 01..7F (a signed byte above 7F is negative)
                    fail();
                }
                break;
            case TAG_ANCHOR:
                need(vlen, Ecdsa.POINT_LENGTH);
                if (anchorCount >= Credentials.MAX_ANCHORS) {
                    fail();
                }
                anchors[anchorCount++] = v;
                break;
            case TAG_STORE_SIZE:
                need(vlen, (short) 4);
                // bytes -> 256-byte blocks: at most 32767 blocks (8 MiB), at least 64
                if (data[v] != 0 || (data[(short) (v + 1)] & 0x80) != 0) {
                    fail();
                }
                blocks = (short) (((data[(short) (v + 1)] & 0xFF) << 8) | (data[(short) (v + 2)] & 0xFF));
                if (blocks < MIN_BLOCKS) {
                    fail();
                }
                break;
            case TAG_CHUNK_ENTRIES:
                chunkEntries = shortValue(v, vlen, (short) 1, MAX_CHUNK_ENTRIES);
                break;
            case TAG_MAX_CHUNK:
                maxChunk = shortValue(v, vlen, (short) 1, Sw.MAX_SHORT);
                break;
            case TAG_MAX_MANIFEST:
                maxManifest = shortValue(v, vlen, MIN_MANIFEST, Sw.MAX_SHORT);
                break;
            default:   // TAG_TXN_BUDGET
                txnBudget = shortValue(v, vlen, Txn.MIN_BUDGET, Sw.MAX_SHORT);
                break;
        }
    }

    private short shortValue(short v, short vlen, short min, short max) {
        need(vlen, (short) 2);
        short value = (short) (((data[v] & 0xFF) << 8) | (data[(short) (v + 1)] & 0xFF));
        if (value < min || value > max) {     // a value above 7FFF is negative: refused too
            fail();
        }
        return value;
    }

    private static void need(short vlen, short want) {
        if (vlen != want) {
            fail();
        }
    }

    private static void fail() {
        ISOException.throwIt(Sw.WRONG_DATA);
    }
}
