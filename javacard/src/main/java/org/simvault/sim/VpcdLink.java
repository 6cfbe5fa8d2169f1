package org.simvault.sim;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketOption;

/**
 * Puts a {@link SimulatedCard} into pcscd's vpcd driver (Debian vsmartcard-vpcd), as
 * card/vpcd.py does for the Python emulator. The card connects to vpcd as a TCP client;
 * every frame is a 2-byte big-endian length and a payload. A 1-byte payload is a
 * control frame: 0 power off, 1 power on, 2 reset (no answer), 4 get ATR (answer:
 * the ATR); a longer one is a C-APDU, answered with the R-APDU.
 *
 * <p>Latency: vpcd writes the length and the payload in two writes without
 * TCP_NODELAY, so Nagle holds the payload until the length is ACKed; delayed ACKs
 * cost about 40 ms per APDU. TCP_QUICKACK before each read (the kernel clears it
 * again) ACKs at once; TCP_NODELAY sends each answer at once.
 */
final class VpcdLink {
    private static final long BACKOFF_FIRST_MS = 50;
    private static final long BACKOFF_MAX_MS = 2000;
    private static final long WARN_EVERY_MS = 5000;

    private final SimulatedCard card;
    private final String host;
    private final int port;
    private final PrintStream notify;
    private final SocketOption<Boolean> quickAck = quickAckOption();
    private volatile boolean stopped;
    private volatile Socket socket;

    VpcdLink(SimulatedCard card, String host, int port, PrintStream notify) {
        this.card = card;
        this.host = host;
        this.port = port;
        this.notify = notify;
    }

    boolean quickAckAvailable() {
        return quickAck != null;
    }

    /** jdk.net.ExtendedSocketOptions.TCP_QUICKACK where the JDK has it (Linux), else null. */
    @SuppressWarnings("unchecked")
    private static SocketOption<Boolean> quickAckOption() {
        if (Boolean.getBoolean("simvault.vpcd.noQuickAck")) {
            return null;                          // for measuring what QUICKACK buys (bench/)
        }
        try {
            Class<?> options = Class.forName("jdk.net.ExtendedSocketOptions");
            return (SocketOption<Boolean>) options.getField("TCP_QUICKACK").get(null);
        } catch (ReflectiveOperationException | LinkageError e) {
            return null;
        }
    }

    static String readerName(int port) {
        if (port == 35963) {
            return "reader 'Virtual PCD 00 00'";
        }
        if (port == 35964) {
            return "reader 'Virtual PCD 00 01'";
        }
        return "the vpcd reader of port " + port;
    }

    /** Connect, serve frames, reconnect with a backoff when vpcd goes away; until stop(). */
    void serveForever() {
        long backoff = BACKOFF_FIRST_MS;
        long lastWarning = 0;
        while (!stopped) {
            Socket s = new Socket();
            try {
                s.connect(new InetSocketAddress(host, port), 2000);
            } catch (IOException e) {
                closeQuietly(s);
                long now = System.currentTimeMillis();
                if (now - lastWarning >= WARN_EVERY_MS) {
                    lastWarning = now;
                    notify.println("no vpcd at " + host + ":" + port
                            + ": is pcscd running with vsmartcard-vpcd? retrying");
                }
                sleep(backoff);
                backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
                continue;
            }
            backoff = BACKOFF_FIRST_MS;
            lastWarning = 0;
            socket = s;
            try {
                s.setTcpNoDelay(true);
                notify.println("card in " + readerName(port) + " (vpcd " + host + ":" + port + ")");
                serve(s);
            } catch (IOException e) {
                if (!stopped) {
                    notify.println("vpcd " + host + ":" + port + " connection lost (" + e.getMessage()
                            + "): reconnecting");
                }
            } finally {
                socket = null;
                closeQuietly(s);
                card.reset();                     // a dropped link is a power loss
            }
            if (!stopped) {
                sleep(backoff);
            }
        }
    }

    void stop() {
        stopped = true;
        Socket s = socket;
        if (s != null) {
            closeQuietly(s);                      // wakes the blocked read
        }
    }

    private void serve(Socket s) throws IOException {
        InputStream in = s.getInputStream();
        OutputStream out = s.getOutputStream();
        byte[] header = new byte[2];
        while (!stopped) {
            readExactly(s, in, header, 2);
            int length = ((header[0] & 0xFF) << 8) | (header[1] & 0xFF);
            byte[] payload = new byte[length];
            readExactly(s, in, payload, length);
            byte[] answer = handle(payload);
            if (answer != null) {
                if (answer.length > 0xFFFF) {
                    answer = new byte[] {0x67, 0x00};
                }
                byte[] frame = new byte[2 + answer.length];
                frame[0] = (byte) (answer.length >> 8);
                frame[1] = (byte) answer.length;
                System.arraycopy(answer, 0, frame, 2, answer.length);
                out.write(frame);                 // one write: one segment with TCP_NODELAY
                out.flush();
            }
        }
    }

    private byte[] handle(byte[] payload) {
        if (payload.length == 1) {
            switch (payload[0]) {
                case 0:               // power off
                case 1:               // power on
                case 2:               // reset
                    card.reset();
                    return null;
                case 4:
                    return card.atr();
                default:
                    return null;      // unknown control byte: ignored, as vpcd's own vicc does
            }
        }
        if (payload.length == 0) {
            return null;
        }
        return card.transmit(payload);
    }

    private void readExactly(Socket s, InputStream in, byte[] buf, int n) throws IOException {
        int got = 0;
        while (got < n) {
            if (quickAck != null) {
                s.setOption(quickAck, Boolean.TRUE);
            }
            int k = in.read(buf, got, n - got);
            if (k < 0) {
                throw new EOFException("vpcd closed the connection");
            }
            got += k;
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException ignored) {
            // closing: nothing left to do
        }
    }
}
