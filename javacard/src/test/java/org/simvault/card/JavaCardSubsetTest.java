package org.simvault.card;

import org.junit.jupiter.api.Test;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.spi.ToolProvider;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The compiled card package stays inside what a Java Card 3.0.4 converter takes,
 * checked on the class files with the JDK's javap (there is no Java Card SDK here):
 * no class outside java.lang.Object/RuntimeException, javacard.*, javacardx.* and the
 * package itself (no String, no java.util); no int, long, float, double or char in a
 * field or method signature; no long/float/double instruction and no ldc (an int
 * constant beyond a short, or a String); and no allocation (new, newarray) outside
 * constructors, install() and the static initialisers of constant arrays (which the
 * converter puts in the CAP): nothing is allocated once the applet is installed.
 */
class JavaCardSubsetTest {
    static final Pattern CLASS_REF = Pattern.compile("^\\s+#\\d+ = Class\\s+#\\d+\\s+// \"?([^\"]+)\"?$");
    static final Pattern MEMBER = Pattern.compile("^  (\\S.*[;{])$");
    static final Pattern DESCRIPTOR = Pattern.compile("^    descriptor: (.+)$");
    static final Pattern OPCODE = Pattern.compile("^\\s+\\d+: ([a-z_0-9]+)");
    static final Pattern FORBIDDEN_OPCODE = Pattern.compile("^(l(?!ookupswitch)[a-z0-9_]*|f[a-z0-9_]*|d(?!up)[a-z0-9_]*|i2[lfdc])$");

    static boolean allowedClass(String name) {
        return name.equals("java/lang/Object") || name.equals("java/lang/RuntimeException")
                || name.startsWith("javacard/") || name.startsWith("javacardx/")
                || name.startsWith("org/simvault/card/")
                || name.matches("\\[+[BSZ]") || name.matches("\\[+L(java/lang/Object|javacard/.*|org/simvault/card/.*);");
    }

    @Test
    void theCardPackageIsJavaCard304() throws Exception {
        Path dir = Path.of("target", "classes", "org", "simvault", "card");
        assertTrue(Files.isDirectory(dir), "compile first (mvn test does)");
        ToolProvider javap = ToolProvider.findFirst("javap").orElseThrow();
        List<String> problems = new ArrayList<>();
        int classes = 0;
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "*.class")) {
            for (Path f : files) {
                classes++;
                String cls = f.getFileName().toString().replace(".class", "");
                StringWriter out = new StringWriter();
                int rc = javap.run(new PrintWriter(out), new PrintWriter(new StringWriter()),
                        "-p", "-s", "-c", "-v", f.toString());
                assertEquals(0, rc, "javap " + f);
                check(cls, out.toString(), problems);
            }
        }
        assertTrue(classes >= 15, "expected the applet's classes, found " + classes);
        assertTrue(problems.isEmpty(), problems.size() + " problems:\n  " + String.join("\n  ", problems));
    }

    static void check(String cls, String javap, List<String> problems) {
        String member = "";
        for (String line : javap.split("\n")) {
            Matcher m = CLASS_REF.matcher(line);
            if (m.matches() && !allowedClass(m.group(1))) {
                problems.add(cls + ": uses class " + m.group(1));
                continue;
            }
            m = MEMBER.matcher(line);
            if (m.matches()) {
                member = m.group(1);
                continue;
            }
            m = DESCRIPTOR.matcher(line);
            if (m.matches()) {
                String types = m.group(1).replaceAll("L[^;]*;", "");
                if (types.matches(".*[IJFDC].*")) {
                    problems.add(cls + ": " + member + " has an int/long/float/double/char type (" + m.group(1) + ")");
                }
                continue;
            }
            m = OPCODE.matcher(line);
            if (m.find()) {
                String op = m.group(1);
                if (FORBIDDEN_OPCODE.matcher(op).matches() || op.startsWith("ldc")) {
                    problems.add(cls + ": " + member + " uses " + op);
                }
                boolean allocates = op.equals("new") || op.endsWith("newarray");
                boolean installTime = member.contains("org.simvault.card." + cls + "(") || member.contains(" install(")
                        || member.equals("static {};");           // constant arrays: at package load
                if (allocates && !installTime) {
                    problems.add(cls + ": " + member + " allocates (" + op + ") after install");
                }
            }
        }
    }
}
