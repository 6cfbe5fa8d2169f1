#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs what is
# missing (Debian packages, the venv), starts the services the tests need
# (pcscd; PostgreSQL and SyncEvolution are started by their fixtures through
# scripts/*.sh), then pytest. Extra arguments go to pytest. Then the Java Card
# applet: its JUnit tests (the shared vectors included), its CAP file built and verified
# with Oracle's Java Card kit (scripts/build-cap.sh), and the pcsc tests again,
# with the applet in jCardSim behind pcscd instead of the emulator (--card javacard).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/pcscd.sh start
.venv/bin/python -m pytest -p no:cacheprovider "$@"
if [ ! -f javacard/pom.xml ]; then
    echo "test: no javacard/pom.xml: the Java card is not tested"
    exit 0
fi
# jCardSim prints two lines per Signature.getInstance: noise, dropped here.
(cd javacard && mvn -q test) | { grep -v '^getInstance of assymetric algo' || true; }
# The CAP for a real SIM: Oracle's converter and verifycap (Java Card 3.0.4), from the kit in
# ../shared/tools/javacard-sdk beside the clone (or JC_HOME); fails on any error.
bash scripts/build-cap.sh
echo "test: the pcsc tests again, the card behind vpcd being the Java Card applet in jCardSim"
# --card is tests/conftest.py's option: pytest reads it only for paths on its command line.
paths=()
for arg in "$@"; do if [ -e "${arg%%::*}" ]; then paths+=("$arg"); fi; done
if [ "${#paths[@]}" -eq 0 ]; then set -- "$@" tests; fi
status=0
.venv/bin/python -m pytest -p no:cacheprovider --card javacard -m pcsc "$@" || status=$?
[ "$status" -eq 5 ] && status=0     # the arguments selected no pcsc test
exit "$status"
