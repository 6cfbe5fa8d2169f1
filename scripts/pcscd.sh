#!/usr/bin/env bash
# Start (default), stop or check the system pcscd that serves the vpcd readers.
#
#   scripts/pcscd.sh [start|stop|status]
#
# Idempotent: "start" does nothing when pcscd already runs and lists the vpcd
# readers. pcscd runs as root in the foreground mode (-f) in the background,
# because a private socket (PCSCLITE_CSOCK_NAME) does not work with Debian's
# pcsc-lite 1.9.9: every client talks to /run/pcscd.
set -euo pipefail

PCSCD=${PCSCD:-/usr/sbin/pcscd}
RUN_DIR=/run/pcscd
LOG_FILE=${PCSCD_LOG:-/tmp/simvault-pcscd.log}
READERS=("Virtual PCD 00 00" "Virtual PCD 00 01")
WAIT_SECONDS=${PCSCD_WAIT_SECONDS:-15}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$here/.venv/bin/python}
[ -x "$PY" ] || PY=python3

die() { echo "pcscd.sh: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

pcscd_pid() {
    # The pid of a live pcscd, if any (the pid file can be stale).
    local pid
    if [ -r "$RUN_DIR/pcscd.pid" ]; then
        pid=$(tr -cd "0-9" <"$RUN_DIR/pcscd.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = pcscd ]; then
            echo "$pid"; return 0
        fi
    fi
    pgrep -x pcscd | head -n1 || true
}

# Prints the reader names pyscard sees, one per line (empty if none / no pcscd).
list_readers() {
    "$PY" - <<'PYEOF' 2>/dev/null || true
from smartcard.System import readers
try:
    for r in readers():
        print(str(r))
except Exception:
    pass
PYEOF
}

readers_ready() {
    local names r
    names=$(list_readers)
    for r in "${READERS[@]}"; do
        grep -qxF "$r" <<<"$names" || return 1
    done
}

start() {
    [ -x "$PCSCD" ] || die "$PCSCD not found: run scripts/setup.sh (installs pcscd and vsmartcard-vpcd)"
    [ -e /etc/reader.conf.d/vpcd ] || die "/etc/reader.conf.d/vpcd missing: install vsmartcard-vpcd (scripts/setup.sh)"
    if [ -z "$(pcscd_pid)" ]; then
        # A stale socket or pid file makes the new pcscd refuse to start.
        as_root rm -f "$RUN_DIR/pcscd.comm" "$RUN_DIR/pcscd.pid"
        as_root mkdir -p "$RUN_DIR"
        # setsid: the daemon must outlive the shell (and pytest) that started it.
        as_root setsid "$PCSCD" -f >>"$LOG_FILE" 2>&1 </dev/null &
        disown || true
    fi
    local deadline=$((SECONDS + WAIT_SECONDS))
    until readers_ready; do
        if [ $SECONDS -ge $deadline ]; then
            die "pcscd did not show the readers '${READERS[0]}' and '${READERS[1]}' within ${WAIT_SECONDS}s: see $LOG_FILE"
        fi
        sleep 0.2
    done
    echo "pcscd running (pid $(pcscd_pid)); readers: ${READERS[*]}"
}

stop() {
    local pid
    pid=$(pcscd_pid)
    if [ -n "$pid" ]; then
        as_root kill "$pid"
        for _ in $(seq 50); do
            [ -d /proc/"$pid" ] || break
            sleep 0.1
        done
        [ -d /proc/"$pid" ] && die "pcscd (pid $pid) did not stop; kill it by hand"
    fi
    as_root rm -f "$RUN_DIR/pcscd.comm" "$RUN_DIR/pcscd.pid"
    echo "pcscd stopped"
}

status() {
    local pid
    pid=$(pcscd_pid)
    if [ -z "$pid" ]; then echo "pcscd not running"; return 3; fi
    echo "pcscd running (pid $pid)"
    list_readers
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) die "usage: $0 [start|stop|restart|status]" ;;
esac
