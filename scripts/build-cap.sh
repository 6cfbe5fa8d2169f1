#!/usr/bin/env bash
# Builds the CAP file for a real SIM: compiles javacard/src/main (org.simvault.card only)
# against Oracle's Java Card 3.0.4 API jar, converts it with the kit's converter
# (-target 3.0.4) and checks the result with verifycap against the 3.0.4 export files.
# Writes javacard/target/simvault.cap (and simvault.exp); fails on any converter or
# verifier error, and when the CAP component table of javacard/README.md no longer
# matches the CAP (scripts/cap_sizes.py --write updates it).
#
#     bash scripts/build-cap.sh [--jc-home DIR]      # or JC_HOME=DIR
#     bash scripts/build-cap.sh --verify CAP         # only verifycap on CAP (tests/test_build_cap.py)
#
# The kit: Oracle's Java Card Development Kit tools 25.1 (jc320v25.1_kit), as in the
# public repository martinpaljak/oracle_javacard_sdks; default ../shared/tools/
# javacard-sdk/jc320v25.1_kit beside the clone (where CI has it). Needs JDK 17.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

jc_home=${JC_HOME:-$ROOT/../shared/tools/javacard-sdk/jc320v25.1_kit}
verify_only=
while [ $# -gt 0 ]; do
    case "$1" in
        --jc-home) jc_home=$2; shift 2 ;;
        --verify) verify_only=$(readlink -f "$2"); shift 2 ;;
        *) echo "build-cap: unknown argument $1 (use --jc-home DIR, --verify CAP)" >&2; exit 2 ;;
    esac
done
API_JAR=$jc_home/lib/api_classic-3.0.4.jar
if [ ! -f "$API_JAR" ] || [ ! -f "$jc_home/bin/converter.sh" ]; then
    echo "build-cap: no Java Card kit at $jc_home (want lib/api_classic-3.0.4.jar and bin/converter.sh):" \
         "clone https://github.com/martinpaljak/oracle_javacard_sdks and pass --jc-home .../jc320v25.1_kit" \
         "or set JC_HOME" >&2
    exit 2
fi
if [ -z "${JAVA_HOME:-}" ]; then
    JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
fi
export JAVA_HOME

OUT=$ROOT/javacard/target
WORK=$OUT/cap-build
EXP=$WORK/exp/api_export_files_3.0.4

# verifycap exits 0 even when it finds errors: its summary line decides.
verify() {
    local log=$WORK/verifycap.log exports
    mapfile -t exports < <(find "$EXP" -name '*.exp' | sort)
    "$jc_home/bin/verifycap.sh" -nobanner -target 3.0.4 "${exports[@]}" "$1" >"$log" 2>&1 || true
    if ! grep -q "Verification completed with [0-9]* warnings and 0 errors" "$log" || grep -q "SEVERE" "$log"; then
        cat "$log" >&2
        echo "build-cap: verifycap found errors in $1 (log above)" >&2
        exit 1
    fi
    grep -h "Verification completed" "$log" | sed 's/^\[ INFO \] /build-cap: /'
}

if [ -n "$verify_only" ]; then
    [ -d "$EXP" ] || { echo "build-cap: run it once without --verify first (export files)" >&2; exit 2; }
    verify "$verify_only"
    exit 0
fi

AID_PACKAGE=0xF0:0x53:0x49:0x4D:0x56:0x41:0x55:0x4C:0x54            # apdu_specs/README.md
AID_APPLET=$AID_PACKAGE:0x01
rm -rf "$WORK"
mkdir -p "$WORK/classes" "$WORK/exp"

# Class files of version 52 (Java 8): what the 25.1 converter reads. The 3.0.4 API jar is
# the boot class path, the whole platform: a JDK class (String, java.util) does not compile.
"$JAVA_HOME/bin/javac" -source 8 -target 8 -bootclasspath "$API_JAR" -g -Xlint:-options -nowarn \
    -d "$WORK/classes" "$ROOT"/javacard/src/main/java/org/simvault/card/*.java

# The 3.0.4 export files ship inside the kit's tools.jar.
(cd "$WORK/exp" && "$JAVA_HOME/bin/jar" xf "$jc_home/lib/tools.jar" api_export_files_3.0.4)

log=$WORK/converter.log
if ! "$jc_home/bin/converter.sh" -nobanner -target 3.0.4 -classdir "$WORK/classes" -exportpath "$EXP" \
        -d "$WORK/out" -out CAP EXP -applet "$AID_APPLET" org.simvault.card.BackupApplet \
        org.simvault.card "$AID_PACKAGE" 1.0 >"$log" 2>&1 \
        || ! grep -q "conversion completed with 0 errors" "$log"; then
    cat "$log" >&2
    echo "build-cap: the converter failed (log above)" >&2
    exit 1
fi
cap=$WORK/out/org/simvault/card/javacard/card.cap
grep -h "conversion completed" "$log" | sed 's/^\[ INFO \] /build-cap: /'
verify "$cap"

cp "$cap" "$OUT/simvault.cap"
cp "$WORK/out/org/simvault/card/javacard/card.exp" "$OUT/simvault.exp"
python3 "$ROOT/scripts/cap_sizes.py" "$OUT/simvault.cap" --check "$ROOT/javacard/README.md"
echo "build-cap: $OUT/simvault.cap ($(stat -c %s "$OUT/simvault.cap") bytes), verified for Java Card 3.0.4"
