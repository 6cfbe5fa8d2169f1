#!/usr/bin/env bash
# Machine set-up for a fresh Debian 12 (re-runnable, idempotent):
# system packages, the .venv, simvault installed editable with its test extras.
#
#   scripts/setup.sh            # as root (or with sudo available)
#   SKIP_APT=1 scripts/setup.sh # only the Python part
set -euo pipefail

# System packages. Others add theirs here (one list, one apt-get install).
APT_PACKAGES=(
    swig libpcsclite-dev pcscd        # pyscard build and the PC/SC daemon
    vsmartcard-vpcd vsmartcard-vpicc  # virtual reader driver, vsmartcard's emulator (vicc)
    python3-pycryptodome              # vicc imports PyCrypto (bench/bench_link.py shims it)
    pcsc-tools opensc                 # independent PC/SC clients: scriptor, pcsc_scan, opensc-tool
    libwbxml2-utils                   # WBXML reference codec (xml2wbxml, wbxml2xml)
    postgresql                        # the DM/DS servers' second database (tests start throwaway clusters)
    syncevolution syncevolution-http python3-twisted dbus   # a real SyncML DS peer (scripts/syncevolution.sh)
    g++                               # builds scripts/syncevolution-curl-shim.cpp (SyncEvolution as a DS client)
    python3-venv python3-dev
    openjdk-17-jdk-headless maven     # the Java Card applet (javacard/): build, JUnit, jCardSim behind vpcd
    zstd restic                       # bench/bench_backup.py: zstd -19 and restic columns
    chromium chromium-driver          # the DM web console's browser tests (Selenium, headless)
    autoconf automake libtool pkg-config libcurl4-openssl-dev libsqlite3-dev  # scripts/libdmclient.sh:
                                      # libdmclient's testdmclient, a stock OMA DM 1.2 client
)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$here/.venv}
PYTHON=${PYTHON:-python3}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_apt() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "setup: system packages already installed"
        return
    fi
    echo "setup: installing ${missing[*]}"
    # apt-get update once per run, and only when something is missing.
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

install_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "setup: creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet -e "$here[test]"
    "$VENV/bin/python" -c "import smartcard, host, card, apdu_specs" \
        || { echo "setup: the venv cannot import simvault's packages" >&2; exit 1; }
    echo "setup: $VENV ready"
}

build_javacard() {
    # javacard/target/simvault-applet.jar: applet + jCardSim launcher (card/jcardsim.py runs it).
    # Offline first (fast, no network when ~/.m2 has everything), online when Maven lacks a
    # plugin or jCardSim (a fresh machine: Maven Central); nothing when the jar is newer than
    # its sources.
    local dir=$here/javacard jar=$here/javacard/target/simvault-applet.jar
    if [ ! -f "$dir/pom.xml" ]; then
        echo "setup: no javacard/pom.xml: the Java card is not built"
        return
    fi
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        echo "setup: java or mvn missing (apt: openjdk-17-jdk-headless maven): the Java card is not built" >&2
        exit 1
    fi
    if [ -f "$jar" ] && [ -z "$(find "$dir/pom.xml" "$dir/src/main" -newer "$jar" -print -quit)" ]; then
        echo "setup: the Java card is built (javacard/target/simvault-applet.jar)"
        return
    fi
    echo "setup: building the Java card (mvn -q package in javacard/)"
    if ! (cd "$dir" && mvn -q -o -DskipTests package >/dev/null 2>&1); then
        (cd "$dir" && mvn -q -DskipTests package) || {
            echo "setup: the Java card did not build: see the Maven errors above (cd javacard && mvn package)" >&2
            exit 1
        }
    fi
}

[ "${SKIP_APT:-0}" = 1 ] || install_apt
install_python
build_javacard
echo "setup: done. Start pcscd for the tests with scripts/pcscd.sh"
