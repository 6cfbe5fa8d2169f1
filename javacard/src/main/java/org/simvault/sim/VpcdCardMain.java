package org.simvault.sim;

import javacard.framework.Applet;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The simvault applet in jCardSim, served on a vpcd slot of pcscd:
 *
 * <pre>
 *   java -cp target/simvault-applet.jar org.simvault.sim.VpcdCardMain \
 *        --vpcd 127.0.0.1:35963 --params-file perso.hex [--control-stdin]
 * </pre>
 *
 * Install parameters (apdu_specs/README.md "Personalisation (install parameters)")
 * come as hex from a file, or as the first line of standard input with
 * {@code --params-stdin}, never on the command line (ps shows it to every user).
 * With {@code --control-stdin} standard input stays a control channel: the line
 * {@code counters} answers one line on standard output
 * ({@code counters apdus N bytes_in N bytes_out N sw6f00 N}); {@code quit} or the end
 * of input stops the card (so it never outlives its parent). Messages for people go
 * to standard error. The card's memory lives in this JVM only: stopping it loses
 * every backup on it.
 */
public final class VpcdCardMain {
    /** The backup applet's class; the second name is the one earlier drafts used. */
    static final String[] DEFAULT_APPLETS = {"org.simvault.card.BackupApplet", "org.simvault.card.SimvaultApplet"};
    static final String DEFAULT_AID = "F053494D5641554C5401";
    static final String PROGRAM = "simvault-jcardsim";

    private VpcdCardMain() {
    }

    public static void main(String[] args) {
        try {
            System.exit(run(args));
        } catch (UsageException e) {
            System.err.println(PROGRAM + ": error: " + e.getMessage());
            System.exit(2);
        }
    }

    static final class UsageException extends Exception {
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }

    static int run(String[] args) throws UsageException {
        String vpcd = "127.0.0.1:35963";
        String appletName = null;
        String aidHex = DEFAULT_AID;
        String atrHex = SimulatedCard.DEFAULT_ATR;
        String paramsFile = null;
        boolean paramsStdin = false;
        boolean control = false;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "--vpcd": vpcd = value(args, ++i, a); break;
                case "--applet": appletName = value(args, ++i, a); break;
                case "--aid": aidHex = value(args, ++i, a); break;
                case "--atr": atrHex = value(args, ++i, a); break;
                case "--params-file": paramsFile = value(args, ++i, a); break;
                case "--params-stdin": paramsStdin = true; break;
                case "--control-stdin": control = true; break;
                case "-h":
                case "--help":
                    System.out.println("usage: " + PROGRAM + " [--vpcd HOST:PORT] [--applet CLASS] [--aid HEX] "
                            + "[--atr HEX] (--params-file FILE | --params-stdin) [--control-stdin]");
                    return 0;
                default:
                    throw new UsageException("unknown argument " + a + " (--help lists them)");
            }
        }
        int colon = vpcd.lastIndexOf(':');
        int port;
        try {
            port = Integer.parseInt(vpcd.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new UsageException("--vpcd " + vpcd + ": expected HOST:PORT");
        }
        String host = colon > 0 ? vpcd.substring(0, colon) : "127.0.0.1";

        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        byte[] params;
        try {
            String text;
            if (paramsFile != null) {
                text = Files.readString(Path.of(paramsFile), StandardCharsets.US_ASCII);
            } else if (paramsStdin) {
                text = stdin.readLine();
                if (text == null) {
                    throw new UsageException("--params-stdin: standard input ended before the parameters");
                }
            } else {
                text = "";
            }
            params = Hex.decode(text);
        } catch (IOException e) {
            throw new UsageException("cannot read the install parameters: " + e.getMessage());
        } catch (IllegalArgumentException e) {
            throw new UsageException("install parameters are not hex: " + e.getMessage());
        }

        if (appletName == null) {
            appletName = defaultApplet();
        }
        // jCardSim prints to System.out (Signature.getInstance: "getInstance of assymetric algo ..."):
        // standard output is the control channel, so everything else goes to standard error.
        PrintStream controlOut = System.out;
        System.setOut(System.err);
        SimulatedCard card;
        try {
            card = new SimulatedCard(appletClass(appletName), hex(aidHex, "--aid"), params, hex(atrHex, "--atr"));
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        } catch (RuntimeException e) {
            // jCardSim wraps the applet's install exception (ISOException / SystemException)
            throw new UsageException("the applet refused its install parameters ("
                    + e.getClass().getSimpleName() + describe(e) + "): see apdu_specs/README.md, "
                    + "Personalisation (install parameters)");
        }
        java.util.Arrays.fill(params, (byte) 0);

        PrintStream err = System.err;
        VpcdLink link = new VpcdLink(card, host, port, err);
        Runtime.getRuntime().addShutdownHook(new Thread(link::stop, "vpcd-stop"));
        err.println("serving " + appletName + " (AID " + aidHex.toUpperCase() + ") in jCardSim on vpcd "
                + host + ":" + port + (link.quickAckAvailable() ? "" : " (no TCP_QUICKACK on this JDK)"));
        if (control) {
            Thread io = new Thread(() -> link.serveForever(), "vpcd-" + port);
            io.setDaemon(true);
            io.start();
            controlLoop(stdin, card, controlOut);
            link.stop();
            return 0;
        }
        link.serveForever();
        return 0;
    }

    private static void controlLoop(BufferedReader stdin, SimulatedCard card, PrintStream out) {
        try {
            String line;
            while ((line = stdin.readLine()) != null) {
                String cmd = line.trim();
                if (cmd.equals("quit")) {
                    break;
                } else if (cmd.equals("counters")) {
                    out.println("counters " + card.counters());
                    out.flush();
                } else if (!cmd.isEmpty()) {
                    out.println("error unknown control command");
                    out.flush();
                }
            }
        } catch (IOException e) {
            // standard input broke: the parent is gone, stop the card
        }
    }

    private static String describe(Throwable e) {
        Throwable root = e;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        if (root instanceof javacard.framework.CardRuntimeException) {
            return ", reason " + String.format("%04X", ((javacard.framework.CardRuntimeException) root).getReason()
                    & 0xFFFF) + " from " + root.getClass().getSimpleName();
        }
        return root == e ? "" : ", " + root.getClass().getSimpleName();
    }

    private static String value(String[] args, int i, String name) throws UsageException {
        if (i >= args.length) {
            throw new UsageException(name + " needs a value");
        }
        return args[i];
    }

    private static byte[] hex(String text, String name) throws UsageException {
        try {
            return Hex.decode(text);
        } catch (IllegalArgumentException e) {
            throw new UsageException(name + " " + text + ": " + e.getMessage());
        }
    }

    /** The first of DEFAULT_APPLETS on the class path (the first name when none is). */
    private static String defaultApplet() {
        for (String name : DEFAULT_APPLETS) {
            try {
                Class.forName(name, false, VpcdCardMain.class.getClassLoader());
                return name;
            } catch (ClassNotFoundException e) {
                // try the next name
            }
        }
        return DEFAULT_APPLETS[0];
    }

    @SuppressWarnings("unchecked")
    private static Class<? extends Applet> appletClass(String name) throws UsageException {
        Class<?> c;
        try {
            c = Class.forName(name);
        } catch (ClassNotFoundException e) {
            throw new UsageException("applet class " + name + " is not on the class path (build it: "
                    + "cd javacard && mvn -q package)");
        }
        if (!Applet.class.isAssignableFrom(c)) {
            throw new UsageException(name + " is not a javacard.framework.Applet");
        }
        return (Class<? extends Applet>) c;
    }
}
