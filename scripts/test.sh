#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs what is
# missing (Debian packages, the venv), starts the services the tests need
# (pcscd; PostgreSQL and SyncEvolution are started by their fixtures through
# scripts/*.sh), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/pcscd.sh start
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
