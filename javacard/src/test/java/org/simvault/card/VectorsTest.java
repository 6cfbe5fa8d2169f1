package org.simvault.card;

import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The shared APDU vectors of apdu_specs/vectors/*.json (written by make_vectors.py from
 * the codecs, replayed on the Python emulator by tests/test_vectors.py) on the applet in
 * jCardSim, installed with the same personalisation through the same install data as
 * {@code simvault card serve --impl javacard} uses (org.simvault.sim.SimulatedCard, in
 * {@link TestCard}, which answers what a GlobalPlatform card OS answers where jCardSim's
 * runtime differs: 6A82 for SELECT of an AID not installed, 6700 for a malformed TPDU).
 * scp03.json has its own tests: Scp03Test (the Scp03 class, every session and command) and
 * AdminTest.thePublishedTraceOpensTheChannel (this applet under the trace's AID and keys).
 */
class VectorsTest {
    static final String APPLET = BackupApplet.class.getName();

    static Path vectorsDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path candidate = p.resolve("apdu_specs").resolve("vectors");
            if (Files.isDirectory(candidate)) {
                return candidate;
            }
        }
        throw new IllegalStateException("apdu_specs/vectors not found above " + Path.of("").toAbsolutePath());
    }

    @TestFactory
    List<DynamicTest> vectors() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        try (DirectoryStream<Path> files = Files.newDirectoryStream(vectorsDir(), "*.json")) {
            for (Path file : files) {
                if (!file.getFileName().toString().equals("scp03.json")) {
                    tests.add(DynamicTest.dynamicTest(file.getFileName().toString(), () -> replay(file)));
                }
            }
        }
        assertTrue(tests.size() >= 5, "expected the vector files of make_vectors.py, found " + tests.size());
        return tests;
    }

    @SuppressWarnings("unchecked")
    static void replay(Path file) throws Exception {
        Map<String, Object> doc = (Map<String, Object>) new Json(Files.readString(file, StandardCharsets.UTF_8))
                .parse();
        Map<String, Object> perso = (Map<String, Object>) doc.get("personalisation");
        assertTrue(javacard.framework.Applet.class.isAssignableFrom(Class.forName(APPLET)));
        TestCard card = new TestCard(hex((String) perso.get("install_params")), null);
        List<String> failures = new ArrayList<>();
        List<Object> steps = (List<Object>) doc.get("steps");
        for (int n = 0; n < steps.size(); n++) {
            Map<String, Object> step = (Map<String, Object>) steps.get(n);
            if ("cycle".equals(step.get("power"))) {
                card.reset();
                continue;
            }
            byte[] answer = card.transmit(hex((String) step.get("command")));
            String problem = mismatch(step, answer);
            if (problem != null) {
                failures.add(doc.get("name") + " step " + n + " (" + step.get("note") + "): " + problem);
            }
        }
        if (card.internalErrors != 0) {
            failures.add(card.internalErrors + " answers were 6F00 (an exception the applet did not catch)");
        }
        if (!failures.isEmpty()) {
            fail(failures.size() + " of " + steps.size() + " steps differ:\n  " + String.join("\n  ", failures));
        }
    }

    /** null when the answer fulfils the step (same SW, same length, equal under the mask). */
    static String mismatch(Map<String, Object> step, byte[] answer) {
        byte[] want = hex((String) step.get("response"));
        int sw = Integer.parseInt((String) step.get("sw"), 16);
        byte[] mask = step.containsKey("mask") ? hex((String) step.get("mask")) : null;
        int gotSw = ((answer[answer.length - 2] & 0xFF) << 8) | (answer[answer.length - 1] & 0xFF);
        int n = answer.length - 2;
        if (gotSw != sw) {
            return String.format("SW %04X, expected %04X (data %s)", gotSw, sw, hexOf(answer, n));
        }
        if (n != want.length) {
            return n + " data bytes, expected " + want.length + ": " + hexOf(answer, n);
        }
        for (int i = 0; i < n; i++) {
            int m = mask == null ? 0xFF : mask[i] & 0xFF;
            if ((answer[i] & m) != (want[i] & m)) {
                return "data differs at byte " + i + ": " + hexOf(answer, n) + " vs " + hexOf(want, want.length);
            }
        }
        return null;
    }

    static byte[] hex(String s) {
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    static String hexOf(byte[] b, int n) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < n; i++) {
            sb.append(String.format("%02X", b[i] & 0xFF));
        }
        return sb.toString();
    }

    /** Enough JSON for the vector files: objects, arrays, strings (no escapes but \" \\ \n), ints, true/false/null. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object parse() {
            Object v = value();
            ws();
            if (i != s.length()) {
                throw new IllegalArgumentException("trailing text at " + i);
            }
            return v;
        }

        private void ws() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private Object value() {
            ws();
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> m = new LinkedHashMap<>();
                i++;
                ws();
                if (s.charAt(i) == '}') {
                    i++;
                    return m;
                }
                while (true) {
                    ws();
                    String k = string();
                    ws();
                    expect(':');
                    m.put(k, value());
                    ws();
                    if (s.charAt(i) == ',') {
                        i++;
                    } else {
                        expect('}');
                        return m;
                    }
                }
            }
            if (c == '[') {
                List<Object> l = new ArrayList<>();
                i++;
                ws();
                if (s.charAt(i) == ']') {
                    i++;
                    return l;
                }
                while (true) {
                    l.add(value());
                    ws();
                    if (s.charAt(i) == ',') {
                        i++;
                    } else {
                        expect(']');
                        return l;
                    }
                }
            }
            if (c == '"') {
                return string();
            }
            for (String word : new String[] {"true", "false", "null"}) {
                if (s.startsWith(word, i)) {
                    i += word.length();
                    return word.equals("null") ? null : Boolean.valueOf(word);
                }
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            return Long.parseLong(s.substring(start, i));
        }

        private String string() {
            expect('"');
            StringBuilder sb = new StringBuilder();
            while (s.charAt(i) != '"') {
                char c = s.charAt(i++);
                if (c == '\\') {
                    char e = s.charAt(i++);
                    if (e == 'u') {
                        sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        i += 4;
                    } else {
                        sb.append(e == 'n' ? '\n' : e == 't' ? '\t' : e);
                    }
                } else {
                    sb.append(c);
                }
            }
            i++;
            return sb.toString();
        }

        private void expect(char c) {
            if (s.charAt(i) != c) {
                throw new IllegalArgumentException("expected " + c + " at " + i);
            }
            i++;
        }
    }
}
