#!/usr/bin/env bash
# Runs an already-built upstream xfstests (XFSTESTS_DIR) against dedupfs and writes
# xfstests/RESULTS.md. Default: the quick group; or name tests: run.sh generic/001 generic/013
#
#   XFSTESTS_DIR=/var/tmp/xfstests bash xfstests/run.sh
#
# Environment: XFSTESTS_DIR (required), DEDUPFS (the binary under test; default: the release
# build, looked for as find_dedupfs says), XFSTESTS_WORK (stores, mounts, results; emptied
# by each run; default /var/tmp/dd-xfstests), XFSTESTS_BUDGET (seconds per
# test before the watchdog kills it; default 300).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
: "${XFSTESTS_DIR:?set XFSTESTS_DIR to an xfstests built by hand (see xfstests/README.md)}"
[ -x "$XFSTESTS_DIR/check" ] && [ -x "$XFSTESTS_DIR/ltp/fsstress" ] || {
    echo "run.sh: $XFSTESTS_DIR is not a built xfstests (no check or ltp/fsstress)" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || { echo "run.sh: xfstests needs root" >&2; exit 2; }
command -v python3 >/dev/null || { echo "run.sh: needs python3 (watchdog.py, results.py)" >&2; exit 2; }
WORK=$(realpath -m -- "${XFSTESTS_WORK:-/var/tmp/dd-xfstests}")
BUDGET=${XFSTESTS_BUDGET:-300}
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "run.sh: XFSTESTS_BUDGET=$BUDGET is not a number of seconds" >&2; exit 2; }
if [ $# -eq 0 ]; then set -- -g quick; fi

# The binary under test: $DEDUPFS if set; else the first release build found where cargo
# puts it: $CARGO_TARGET_DIR, the target directory `cargo metadata` reports (the same, or
# the one .cargo/config.toml sets), the repository's target/, and /var/tmp/dedupfs-target
# (tests/setup.sh's CARGO_TARGET_DIR).
find_dedupfs() {
    if [ -n "${DEDUPFS:-}" ]; then
        [ -f "$DEDUPFS" ] && [ -x "$DEDUPFS" ] && return
        echo "run.sh: DEDUPFS=$DEDUPFS is not an executable file" >&2
        return 1
    fi
    local ctd=${CARGO_TARGET_DIR:-} meta="" p
    if command -v cargo >/dev/null; then   # cargo metadata reads the manifests, builds nothing
        meta=$(cd "$REPO" && timeout 60 cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) || meta=""
    fi
    local places=("${ctd:+$ctd/release/dedupfs}" "${meta:+$meta/release/dedupfs}"
                  "$REPO/target/release/dedupfs" /var/tmp/dedupfs-target/release/dedupfs)
    for p in "${places[@]}"; do
        if [ -n "$p" ] && [ -f "$p" ] && [ -x "$p" ]; then DEDUPFS=$p; return; fi
    done
    [ -n "$ctd" ] || places[0]="(unset)"
    if [ -z "$meta" ]; then
        places[1]="(cargo metadata failed)"
        command -v cargo >/dev/null || places[1]="(cargo not on PATH; under sudo? sudo env PATH=\"\$PATH\" ...)"
    fi
    {
        echo "run.sh: no dedupfs binary; looked at"
        echo "  \$DEDUPFS                          (unset)"
        echo "  \$CARGO_TARGET_DIR/release         ${places[0]}"
        echo "  cargo metadata's target_directory ${places[1]}"
        echo "  the repository's target/release   ${places[2]}"
        echo "  tests/setup.sh's target dir       ${places[3]}"
        echo "build it as xfstests/README.md says, or set DEDUPFS=/path/to/dedupfs"
    } >&2
    return 1
}
find_dedupfs || exit 2
DEDUPFS=$(realpath -- "$DEDUPFS")
echo "run.sh: testing $DEDUPFS (built $(date -r "$DEDUPFS" '+%F %T'))"

# Mount points at or under $1, deepest first, from /proc/self/mountinfo: unlike stat,
# mountpoint(1) or findmnt --target, reading it never waits on a hung FUSE daemon.
mounts_under() {
    python3 - "$1" <<'EOF'
import re, sys
top = sys.argv[1].rstrip("/") or "/"
points = {re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])
          for line in open("/proc/self/mountinfo")}
for p in sorted(points, key=len, reverse=True):
    if p == top or p.startswith(top.rstrip("/") + "/"):
        print(p)
EOF
}

# WORK is emptied below (and the mounts under WORK/mnt detached): refuse one that run.sh did
# not make (.dd-xfstests; local.config and results/ from before that marker).
ours() {
    [ ! -e "$WORK" ] || { [ -d "$WORK" ] && { [ -z "$(ls -A "$WORK")" ] || [ -e "$WORK/.dd-xfstests" ] ||
        { [ -f "$WORK/local.config" ] && [ -d "$WORK/results" ]; }; }; }
}
ours || {
    echo "run.sh: XFSTESTS_WORK=$WORK exists and was not made by run.sh; not deleting it" >&2
    exit 2
}

for u in fsgqa fsgqa2 123456-fsgqa; do
    id "$u" >/dev/null 2>&1 || useradd -m "$u"
done
"$DEDUPFS" install --no-systemd >/dev/null   # /usr/local/bin/dedupfs and /sbin/mount.fuse.dedupfs

# The watchdog aborts hung FUSE connections through fusectl.
[ -d /sys/fs/fuse/connections ] || modprobe fuse 2>/dev/null || true
if [ -z "$(mounts_under /sys/fs/fuse/connections)" ]; then
    mount -t fusectl none /sys/fs/fuse/connections ||
        echo "run.sh: warning: fusectl not mounted; the watchdog cannot abort a hung FUSE mount" >&2
fi

# An earlier run's mounts are detached lazily (-l; -c and -i: no stat of the path, no helper),
# which never waits on a hung daemon; its daemons then exit, or are killed after 30 s.
for _ in 1 2 3 4 5; do
    left=$(mounts_under "$WORK/mnt")
    [ -n "$left" ] || break
    while IFS= read -r m; do umount -c -i -l "$m" 2>/dev/null || true; done <<<"$left"
done
left=$(mounts_under "$WORK/mnt")
[ -z "$left" ] || { echo "run.sh: cannot unmount, so not deleting $WORK:" $left >&2; exit 1; }
for _ in $(seq 150); do
    pgrep -f -- "dedupfs mount $WORK/" >/dev/null || break
    sleep 0.2
done
if pids=$(pgrep -f -- "dedupfs mount $WORK/"); then
    echo "run.sh: killing daemons of an earlier run that did not exit:" $pids >&2
    kill -9 $pids 2>/dev/null || true
    sleep 1
fi
# Its contents only, and not across mounts: WORK itself may be a mount point (a tmpfs).
mkdir -p "$WORK"
find "$WORK" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
mkdir -p "$WORK/mnt/test" "$WORK/mnt/scratch" "$WORK/results"
touch "$WORK/.dd-xfstests"
"$DEDUPFS" init "$WORK/test-store" >/dev/null
"$DEDUPFS" init "$WORK/scratch-store" >/dev/null
sed "s|@WORK@|$WORK|g" "$HERE/local.config.in" > "$WORK/local.config"

python3 "$HERE/watchdog.py" "$BUDGET" "$WORK/results/watchdog.log" "$WORK/mnt/test" "$WORK/mnt/scratch" &
watchdog=$!
sleep 0.5
kill -0 "$watchdog" 2>/dev/null || { echo "run.sh: the watchdog did not start" >&2; exit 1; }
started=$(date -u +%Y-%m-%dT%H:%MZ)
t0=$(date +%s)
set +e
(cd "$XFSTESTS_DIR" && HOST_OPTIONS="$WORK/local.config" RESULT_BASE="$WORK/results" \
    ./check -E "$HERE/exclude" "$@") 2>&1 | tee "$WORK/results/run.out"
set -e
secs=$(( $(date +%s) - t0 ))
kill "$watchdog" 2>/dev/null || true
# check leaves the test mount; a hung one is detached instead of waited for.
while IFS= read -r m; do
    [ -z "$m" ] || timeout -k 10 60 umount -c -i "$m" 2>/dev/null || umount -c -i -l "$m" 2>/dev/null || true
done <<<"$(mounts_under "$WORK/mnt")"
python3 "$HERE/results.py" --results "$WORK/results" --out "$HERE/RESULTS.md" \
    --started "$started" --seconds "$secs" --command "XFSTESTS_DIR=$XFSTESTS_DIR bash xfstests/run.sh $*" \
    --xfstests "$XFSTESTS_DIR" --exclude "$HERE/exclude"
