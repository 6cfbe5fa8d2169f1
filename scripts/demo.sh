#!/usr/bin/env bash
# The README's one command: set the machine up (Debian packages, the .venv),
# start pcscd with the vpcd readers, then run the complete simvault demo.
#
#   bash scripts/demo.sh [--keep] [--workdir DIR] [--slot 0|1] [--no-pcsc] [--json]
#
# Re-runnable: scripts/setup.sh installs only what is missing, scripts/pcscd.sh
# start does nothing when pcscd already serves the readers. Needs root or sudo
# the first time (apt-get, pcscd); SKIP_APT=1 skips the system packages.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$here/.venv}

no_pcsc=0
for arg in "$@"; do
    [ "$arg" = "--no-pcsc" ] && no_pcsc=1
done

# set-up chatter goes to stderr: with --json, stdout carries only the report
bash "$here/scripts/setup.sh" >&2
if [ "$no_pcsc" = 0 ]; then
    bash "$here/scripts/pcscd.sh" start >&2
fi
exec "$VENV/bin/simvault" demo "$@"
