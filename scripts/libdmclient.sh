#!/usr/bin/env bash
# intel libdmclient's testdmclient (an independent OMA DM 1.2 client), built once per source.
#
#   scripts/libdmclient.sh            build if missing; print the path of testdmclient
#   scripts/libdmclient.sh --path     print the path only when it is built (exit 1 otherwise)
#
# Environment (defaults in brackets):
#   LIBDMCLIENT_TARBALL  the source snapshot   [<repo>/../shared/peers/libdmclient-9d4e3e8.tar.gz]
#   LIBDMCLIENT_CACHE    where builds live     [${XDG_CACHE_HOME:-$HOME/.cache}/simvault]
#
# The build directory is keyed by the SHA-256 of the tarball and of the files this script adds
# (tests/mgtobj/dmacc_file.c, scripts/libdmclient/*.patch): a CI run builds it once (about 40 s
# on 2 cores) and every later test reuses it. `./configure --enable-tests --prefix=<cache dir>`:
# testdmclient loads its MO plugins from <prefix>/bin/plugins, a path compiled in, so the build
# is made where it stays.
#
# The DM account: testdmclient's own DMAcc plugin has its account compiled in (address
# http://127.0.0.1:8080/funambol/dm, no place to keep nonces). Its modmacc.so is replaced by
# tests/mgtobj/dmacc_file.c, a DMAcc plugin that reads the account from the file named by
# $SIMVAULT_DMACC and writes Replaces (the nonces) back: the device is provisioned, its
# protocol code is untouched. Debian 12's gcc 12 builds the snapshot as is: no patch is
# applied today; a build fix would go in scripts/libdmclient/NN-name.patch (applied with
# patch -p1, in name order), never a change of the client's protocol behaviour.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL="${LIBDMCLIENT_TARBALL:-$here/../shared/peers/libdmclient-9d4e3e8.tar.gz}"
CACHE="${LIBDMCLIENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/simvault}"
PLUGIN="$here/tests/mgtobj/dmacc_file.c"
PATCHES=("$here"/scripts/libdmclient/*.patch)
[ -e "${PATCHES[0]}" ] || PATCHES=()

die() { echo "libdmclient.sh: $*" >&2; exit 1; }

[ -f "$TARBALL" ] || die "no source snapshot at $TARBALL: set LIBDMCLIENT_TARBALL"
key=$(cat "$TARBALL" "$PLUGIN" "${PATCHES[@]}" | sha256sum | cut -c1-16)
prefix="$CACHE/libdmclient-$key"
client="$prefix/bin/testdmclient"

if [ "${1:-}" = "--path" ]; then
    [ -f "$prefix/.built" ] || exit 1
    echo "$client"
    exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/libdmclient-$key.lock"
flock 9  # parallel test workers: one builds, the others wait and reuse
if [ -f "$prefix/.built" ]; then
    echo "$client"
    exit 0
fi

for tool in autoreconf libtoolize make gcc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install autoconf automake libtool pkg-config gcc make"
done
pkg-config --exists libcurl sqlite3 || die "libcurl/sqlite3 headers missing: apt-get install libcurl4-openssl-dev libsqlite3-dev"

rm -rf "$prefix"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
tar -xzf "$TARBALL" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
for p in "${PATCHES[@]}"; do
    patch -d "$src" -p1 --forward <"$p" >>"$log" || die "patch $(basename "$p") failed"
done
echo "libdmclient.sh: building testdmclient into $prefix" >&2
(
    cd "$src"
    autoreconf -fi
    ./configure --enable-tests --prefix="$prefix"
    make -j"$(nproc)"
    make install
) >>"$log" 2>&1 || { tail -30 "$log" >&2; die "build failed (log above)"; }
# the provisioned DMAcc replaces the compiled-in one (one plugin per base URI ./DMAcc)
gcc -O2 -fPIC -shared -Wall -Wextra -I "$src/dmcore/include" -o "$prefix/bin/plugins/modmacc.so" "$PLUGIN" \
    >>"$log" 2>&1 || { tail -30 "$log" >&2; die "the DMAcc plugin did not build (log above)"; }
touch "$prefix/.built"
echo "$client"
