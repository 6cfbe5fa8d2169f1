package org.simvault.card;

import com.licel.jcardsim.smartcardio.CardSimulator;
import javacard.framework.JCSystem;
import org.junit.jupiter.api.Test;

import java.lang.reflect.Array;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What the applet allocates at install, measured on the object graph of a freshly
 * constructed applet (every array reachable from its fields: payload bytes, without object
 * headers and page-table references; platform objects such as keys and OwnerPINs counted by type), for
 * several install parameters, and compared with the "Memory" table of javacard/README.md:
 * the fixed part, the cost per 8 blocks, per chunk entry and per manifest byte, and the
 * transient RAM. A change to what install allocates fails here until the README says so.
 */
class MemoryTest {
    static final class Tally {
        long persistent;
        long resetRam;
        long deselectRam;
        final Map<String, Integer> platform = new TreeMap<>();
    }

    static Tally measure(String extraTlvs) throws Exception {
        new CardSimulator();                          // a runtime for JCSystem (transient arrays)
        TestCard.personalised(16384);                 // warm the crypto providers
        byte[] params = TestCard.HEX.parseHex(paramsHex(extraTlvs));
        Perso p = new Perso(params, (short) 0, (short) params.length);
        Constructor<BackupApplet> k = BackupApplet.class.getDeclaredConstructor(Perso.class);
        k.setAccessible(true);
        Tally t = new Tally();
        walk(k.newInstance(p), t, new IdentityHashMap<>());
        return t;
    }

    static String paramsHex(String extra) {
        return "0108" + TestCard.HEX.formatHex(TestCard.pinBlock(TestCard.PIN))
                + "0208" + TestCard.HEX.formatHex(TestCard.pinBlock(TestCard.PUK))
                + "0330" + TestCard.HEX.formatHex(TestCard.concat(TestCard.ENC, TestCard.MAC, TestCard.DEK)) + extra;
    }

    private static void walk(Object o, Tally t, IdentityHashMap<Object, Boolean> seen) throws IllegalAccessException {
        if (o == null || seen.put(o, Boolean.TRUE) != null) {
            return;
        }
        Class<?> c = o.getClass();
        if (c.isArray()) {
            Class<?> e = c.getComponentType();
            int n = Array.getLength(o);
            // payload bytes; the references of a page table (Object[]) are the card OS's business
            long bytes = e == byte.class || e == boolean.class ? n : e == short.class ? 2L * n : 0;
            byte kind = e.isPrimitive() ? JCSystem.isTransient(o) : JCSystem.NOT_A_TRANSIENT_OBJECT;
            if (kind == JCSystem.CLEAR_ON_RESET) {
                t.resetRam += bytes;
            } else if (kind == JCSystem.CLEAR_ON_DESELECT) {
                t.deselectRam += bytes;
            } else {
                t.persistent += bytes;
            }
            if (!e.isPrimitive()) {
                for (int i = 0; i < n; i++) {
                    walk(Array.get(o, i), t, seen);
                }
            }
            return;
        }
        if (!c.getName().startsWith("org.simvault.card.")) {
            t.platform.merge(platformName(c), 1, Integer::sum);
            return;
        }
        for (Class<?> k = c; k != null && k.getName().startsWith("org.simvault.card."); k = k.getSuperclass()) {
            for (Field f : k.getDeclaredFields()) {
                if (Modifier.isStatic(f.getModifiers()) || f.getType().isPrimitive()) {
                    continue;                          // statics are the CAP's StaticField component
                }
                f.setAccessible(true);
                walk(f.get(o), t, seen);
            }
        }
    }

    private static final Class<?>[] PLATFORM = {
        javacard.security.AESKey.class, javacard.security.ECPublicKey.class, javacard.security.ECPrivateKey.class,
        javacard.framework.OwnerPIN.class, javacard.security.Signature.class, javacardx.crypto.Cipher.class,
        javacard.security.MessageDigest.class, javacard.security.KeyAgreement.class, javacard.security.RandomData.class,
    };

    /** The javacard API type of a platform object (jCardSim's classes implement several). */
    private static String platformName(Class<?> c) {
        for (Class<?> k : PLATFORM) {
            if (k.isAssignableFrom(c)) {
                return k.getSimpleName();
            }
        }
        return c.getName();
    }

    static long readmeValue(String text, String row) {
        Matcher m = Pattern.compile("\\| " + Pattern.quote(row) + " \\| (\\d+) \\|").matcher(text);
        assertTrue(m.find(), "javacard/README.md has no Memory row '" + row + "'");
        return Long.parseLong(m.group(1));
    }

    @Test
    void theReadmeMemoryTableIsWhatInstallAllocates() throws Exception {
        String readme = Files.readString(Path.of("README.md"));
        // default store 64 KiB (256 blocks), 64 entries, manifest 8192
        Tally base = measure("");
        Tally blocks = measure("060400020000");                           // 512 blocks, 64 entries
        Tally entries = measure("07020080");                              // 128 entries
        Tally manifest = measure("09024000");                             // manifest 16384
        long perEightBlocks = (blocks.persistent - base.persistent) / 32;   // 256 more blocks
        long perEntry = (entries.persistent - base.persistent) / 64;
        long perManifestByte = (manifest.persistent - base.persistent) / 8192;
        long fixed = base.persistent - 32 * perEightBlocks - 64 * perEntry - 8192 * perManifestByte;
        System.out.println("memory at install: fixed " + fixed + ", per 8 blocks " + perEightBlocks + ", per entry "
                + perEntry + ", per manifest byte " + perManifestByte + ", defaults " + base.persistent
                + ", CLEAR_ON_DESELECT " + base.deselectRam + ", CLEAR_ON_RESET " + base.resetRam
                + ", platform " + base.platform);
        assertEquals(readmeValue(readme, "persistent, per 8 blocks of store (`06`)"), perEightBlocks);
        assertEquals(readmeValue(readme, "persistent, per chunk entry (`07`)"), perEntry);
        assertEquals(readmeValue(readme, "persistent, per manifest byte (`09`)"), perManifestByte);
        assertEquals(readmeValue(readme, "persistent, fixed"), fixed);
        assertEquals(readmeValue(readme, "persistent with the defaults (64 KiB, 64 entries, 8192)"), base.persistent);
        assertEquals(readmeValue(readme, "transient CLEAR_ON_DESELECT"), base.deselectRam);
        assertEquals(readmeValue(readme, "transient CLEAR_ON_RESET"), base.resetRam);
        Tally other = measure("06040003E800" + "0702012C" + "09021388");   // 1000 blocks, 300 entries, 5000
        assertEquals(fixed + 125 * perEightBlocks + 300 * perEntry + 5000 * perManifestByte, other.persistent,
                "the README's formula holds for other parameters");
        assertEquals(base.resetRam, other.resetRam, "RAM independent of 06/07/09");
        assertEquals(base.deselectRam, other.deselectRam);
        for (Map.Entry<String, Integer> e : base.platform.entrySet()) {
            assertEquals((long) e.getValue(), readmeValue(readme, "platform objects: " + e.getKey()),
                    "platform objects " + base.platform);
        }
    }
}
