#!/usr/bin/env bash
# Runs an already-built upstream xfstests (XFSTESTS_DIR) against dedupfs and writes
# xfstests/RESULTS.md. Default: the quick group; or name tests: run.sh generic/001 generic/013
#
#   XFSTESTS_DIR=/var/tmp/xfstests bash xfstests/run.sh
#
# Environment: XFSTESTS_DIR (required), DEDUPFS (binary; default: the release build),
# XFSTESTS_WORK (stores, mounts, results; default /var/tmp/dd-xfstests),
# XFSTESTS_BUDGET (seconds per test before the watchdog kills it; default 300).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${XFSTESTS_DIR:?set XFSTESTS_DIR to an xfstests built by hand (see xfstests/README.md)}"
[ -x "$XFSTESTS_DIR/check" ] && [ -x "$XFSTESTS_DIR/ltp/fsstress" ] || {
    echo "run.sh: $XFSTESTS_DIR is not a built xfstests (no check or ltp/fsstress)" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || { echo "run.sh: xfstests needs root" >&2; exit 2; }
DEDUPFS=${DEDUPFS:-${CARGO_TARGET_DIR:-/var/tmp/dedupfs-target}/release/dedupfs}
[ -x "$DEDUPFS" ] || { echo "run.sh: no dedupfs binary at $DEDUPFS (cargo build --release)" >&2; exit 2; }
WORK=${XFSTESTS_WORK:-/var/tmp/dd-xfstests}
BUDGET=${XFSTESTS_BUDGET:-300}
if [ $# -eq 0 ]; then set -- -g quick; fi

for u in fsgqa fsgqa2 123456-fsgqa; do
    id "$u" >/dev/null 2>&1 || useradd -m "$u"
done
"$DEDUPFS" install >/dev/null   # /usr/local/bin/dedupfs and /sbin/mount.fuse.dedupfs

for m in "$WORK/mnt/test" "$WORK/mnt/scratch"; do
    if mountpoint -q "$m" 2>/dev/null || ! stat "$m" >/dev/null 2>&1; then
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    fi
done
# Wait for daemons of an earlier run to let go of their stores.
while pgrep -f "dedupfs mount $WORK/" >/dev/null; do sleep 0.2; done
rm -rf "$WORK"
mkdir -p "$WORK/mnt/test" "$WORK/mnt/scratch" "$WORK/results"
dedupfs init "$WORK/test-store" >/dev/null
dedupfs init "$WORK/scratch-store" >/dev/null
sed "s|@WORK@|$WORK|g" "$HERE/local.config.in" > "$WORK/local.config"

WATCHDOG=/work/shared/testing/xfstests-watchdog.py
[ -f "$WATCHDOG" ] || WATCHDOG="$HERE/watchdog.py"
python3 "$WATCHDOG" "$BUDGET" "$WORK/results/watchdog.log" "$WORK/mnt/test" "$WORK/mnt/scratch" &
started=$(date -u +%Y-%m-%dT%H:%MZ)
t0=$(date +%s)
set +e
(cd "$XFSTESTS_DIR" && HOST_OPTIONS="$WORK/local.config" RESULT_BASE="$WORK/results" \
    ./check -E "$HERE/exclude" "$@") 2>&1 | tee "$WORK/results/run.out"
set -e
secs=$(( $(date +%s) - t0 ))
for m in "$WORK/mnt/test" "$WORK/mnt/scratch"; do umount "$m" 2>/dev/null || true; done
python3 "$HERE/results.py" --results "$WORK/results" --out "$HERE/RESULTS.md" \
    --started "$started" --seconds "$secs" --command "XFSTESTS_DIR=$XFSTESTS_DIR bash xfstests/run.sh $*" \
    --xfstests "$XFSTESTS_DIR" --exclude "$HERE/exclude"
