#!/usr/bin/env bash
# SyncEvolution's SyncML HTTP server on 127.0.0.1, headless, configured for simvault's DS client.
#
#   scripts/syncevolution.sh start     install if missing (root), configure (idempotent), start; prints the URL
#   scripts/syncevolution.sh stop      stop the server (its private D-Bus session and syncevo-dbus-server too)
#   scripts/syncevolution.sh status    exit 0 when it listens
#   scripts/syncevolution.sh reset     stop, then wipe its data and config
#   scripts/syncevolution.sh url       print the sync URL
#
# Environment (defaults in brackets):
#   SYNCEVO_DIR        state: HOME, XDG dirs, datastore files, log, pid  [/tmp/simvault-syncevolution]
#   SYNCEVO_PORT       TCP port on 127.0.0.1                              [18090]
#   SYNCEVO_USER       user the DS client authenticates as                [simvault]
#   SYNCEVO_PASSWORD   its password (stored in the config, keyring=no)    [simvault-ds]
#   SYNCEVO_DEVICES    client DevIDs (space separated), one peer each     [simvault-device]
#   SYNCEVO_DATASTORE  datastore name (file backend, text/plain)          [backup]
#   SYNCEVO_MAXMSG     MaxMsgSize the server announces                    [65536]
#
# Facts (Debian 12, SyncEvolution 2.0.0): /usr/bin/syncevo-http-server starts with a broken
# `#!@PYTHON@` and listens on all interfaces; we run a copy with /usr/bin/python3 (Debian's
# dbus/gi/twisted, not a venv) that binds 127.0.0.1. It needs a session bus: a private one
# from dbus-run-session. Each client needs a server-side peer config with peerIsClient=1 and
# remoteDeviceId=<client DevID>. One SyncML session runs at a time.
set -euo pipefail

DIR="${SYNCEVO_DIR:-/tmp/simvault-syncevolution}"
PORT="${SYNCEVO_PORT:-18090}"
USER_NAME="${SYNCEVO_USER:-simvault}"
PASSWORD="${SYNCEVO_PASSWORD:-simvault-ds}"
DEVICES="${SYNCEVO_DEVICES:-simvault-device}"
DATASTORE="${SYNCEVO_DATASTORE:-backup}"
MAXMSG="${SYNCEVO_MAXMSG:-65536}"
URL="http://127.0.0.1:${PORT}/syncevolution"
PIDFILE="$DIR/http-server.pid"
LOG="$DIR/http-server.log"
PY=/usr/bin/python3

export HOME="$DIR/home" XDG_CONFIG_HOME="$DIR/home/.config" XDG_DATA_HOME="$DIR/home/.local/share" \
       XDG_CACHE_HOME="$DIR/home/.cache" XDG_RUNTIME_DIR="$DIR/runtime"
unset DBUS_SESSION_BUS_ADDRESS DISPLAY

die() { echo "syncevolution.sh: $*" >&2; exit 1; }

install_if_missing() {
    local missing=()
    command -v syncevolution >/dev/null || missing+=(syncevolution)
    [ -x /usr/bin/syncevo-http-server ] || missing+=(syncevolution-http)
    "$PY" -c 'import twisted' 2>/dev/null || missing+=(python3-twisted)
    command -v dbus-run-session >/dev/null || missing+=(dbus)
    "$PY" -c 'import dbus, gi' 2>/dev/null || missing+=(python3-dbus python3-gi)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root or: sudo apt-get install -y ${missing[*]}"
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null; } \
        || die "apt-get install ${missing[*]} failed"
}

listening() {
    "$PY" - "$PORT" <<'EOF'
import socket, sys
s = socket.socket(); s.settimeout(0.5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid; pid="$(cat "$PIDFILE")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

configure() {
    mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_CACHE_HOME" "$XDG_RUNTIME_DIR" "$DIR/data/$DATASTORE"
    chmod 700 "$XDG_RUNTIME_DIR"
    # the datastore: plain files, one item per file, text/plain (the archive travels as base64 text)
    syncevolution --configure --keyring=no \
        --source-property backend=file --source-property databaseFormat=text/plain \
        --source-property "database=file://$DIR/data/$DATASTORE" \
        @server "$DATASTORE" >"$DIR/configure.log" 2>&1 || { cat "$DIR/configure.log" >&2; die "configuring the datastore failed"; }
    local dev peer
    for dev in $DEVICES; do
        peer="client-$(echo "$dev" | tr -c 'A-Za-z0-9_\n-' '_')"
        syncevolution --configure --keyring=no --template SyncEvolution_Client \
            --sync-property "username=$USER_NAME" --sync-property "password=$PASSWORD" \
            --sync-property peerIsClient=1 --sync-property "remoteDeviceId=$dev" \
            --sync-property "maxMsgSize=$MAXMSG" --sync-property printChanges=0 --sync-property dumpData=0 \
            --sync-property maxlogdirs=2 \
            "$peer@server" "$DATASTORE" >>"$DIR/configure.log" 2>&1 \
            || { cat "$DIR/configure.log" >&2; die "configuring peer $peer failed"; }
    done
}

start() {
    install_if_missing
    if pid="$(running_pid)" && listening; then
        echo "$URL"; return 0
    fi
    stop_quiet
    mkdir -p "$DIR"
    configure
    # a copy of syncevo-http-server with a real interpreter line that binds 127.0.0.1 only
    sed -e '1s|.*|#!/usr/bin/python3|' \
        -e 's|reactor.listenTCP(url.port, site)|reactor.listenTCP(url.port, site, interface="127.0.0.1")|' \
        /usr/bin/syncevo-http-server >"$DIR/syncevo-http-server.py"
    grep -q 'interface="127.0.0.1"' "$DIR/syncevo-http-server.py" || die "could not patch syncevo-http-server to bind 127.0.0.1"
    listening && die "port $PORT on 127.0.0.1 is taken by another program: set SYNCEVO_PORT"
    setsid dbus-run-session -- "$PY" "$DIR/syncevo-http-server.py" ${SYNCEVO_DEBUG:+--debug} "$URL" \
        >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
        listening && { echo "$URL"; return 0; }
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$LOG" >&2 || true
    stop_quiet
    die "syncevo-http-server did not start (log: $LOG)"
}

stop_quiet() {
    local pid
    if pid="$(running_pid)"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop_quiet ;;
    restart) stop_quiet; start ;;
    status) running_pid >/dev/null && listening && echo "running: $URL" || { echo "stopped"; exit 1; } ;;
    reset) stop_quiet; rm -rf "$DIR" ;;
    url) echo "$URL" ;;
    *) echo "usage: $0 start|stop|restart|status|reset|url" >&2; exit 2 ;;
esac
