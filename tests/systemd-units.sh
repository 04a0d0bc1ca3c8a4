#!/bin/bash
# Checks the systemd units dedupfs ships (mount/systemd/): every unit and drop-in passes
# `systemd-analyze verify` without a warning about our files, and the directives the
# documentation relies on (docs/service.md) are present.
#
#   bash tests/systemd-units.sh
#
# Environment:
#   SYSTEMD_UNITS_DIR  the directory to check (default: mount/systemd of this repository)
#   DEDUPFS_BIN        a dedupfs binary for the ExecStart=/ExecStop= check (default:
#                      /usr/local/bin/dedupfs if installed, else a stub script)
#
# Needs no running systemd (works in containers where PID 1 is something else). Exits 0
# with a SKIP message if systemd-analyze is not installed; non-zero if anything is wrong.
set -uo pipefail

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze is not installed; the systemd units were not checked"
    exit 0
fi

here=$(cd "$(dirname "$0")/.." && pwd)
src=${SYSTEMD_UNITS_DIR:-$here/mount/systemd}

fail=0
problem() { echo "FAIL: $*"; fail=1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dedupfs-units.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
units=$tmp/units
mkdir -p "$units" "$tmp/bin"

servers="nfs-ganesha nfs-server smbd"
for f in dedupfs@.service dedupfs.target example.conf dedupfs-replicate@.service dedupfs-replicate@.timer; do
    [ -f "$src/$f" ] || problem "$src/$f is missing"
done
for s in $servers; do
    [ -f "$src/$s.service.d/dedupfs.conf" ] || problem "$src/$s.service.d/dedupfs.conf is missing"
done
[ $fail = 0 ] || exit 1
cp "$src/dedupfs@.service" "$src/dedupfs.target" "$src/dedupfs-replicate@.service" \
    "$src/dedupfs-replicate@.timer" "$units/"
for s in $servers; do
    mkdir -p "$units/$s.service.d"
    cp "$src/$s.service.d/dedupfs.conf" "$units/$s.service.d/"
done

# systemd-analyze verify checks that ExecStart=/ExecStop= name an executable. Use the
# real binary if there is one, else a stub (the unit under test is otherwise unchanged).
bin=${DEDUPFS_BIN:-/usr/local/bin/dedupfs}
if [ ! -x "$bin" ]; then
    bin=$tmp/bin/dedupfs
    printf '#!/bin/sh\nexit 0\n' >"$bin"
    chmod +x "$bin"
fi
if [ "$bin" != /usr/local/bin/dedupfs ]; then
    sed -i "s#/usr/local/bin/dedupfs#$bin#g" "$units/dedupfs@.service" \
        "$units/dedupfs-replicate@.service"
fi
# An instance, as `systemctl enable dedupfs@example` would create it.
ln -s dedupfs@.service "$units/dedupfs@example.service"
ln -s dedupfs-replicate@.service "$units/dedupfs-replicate@example.service"
ln -s dedupfs-replicate@.timer "$units/dedupfs-replicate@example.timer"

# The servers' own units, for their drop-ins to be loaded: the installed ones where they
# exist, a minimal stand-in otherwise (e.g. no kernel NFS server installed).
check_units="dedupfs@example.service dedupfs.target dedupfs-replicate@example.service dedupfs-replicate@example.timer"
for s in $servers; do
    found=
    for d in /etc/systemd/system /run/systemd/system /usr/local/lib/systemd/system \
        /usr/lib/systemd/system /lib/systemd/system; do
        [ -e "$d/$s.service" ] && found=$d/$s.service && break
    done
    if [ -z "$found" ]; then
        printf '[Unit]\nDescription=stand-in for %s\n[Service]\nExecStart=/bin/true\n' "$s" \
            >"$units/$s.service"
    fi
    check_units="$check_units $s.service"
done

# "$units:" puts our directory first and keeps the system's unit directories after it.
out=$(cd "$tmp" && SYSTEMD_UNIT_PATH="$units:" SYSTEMD_LOG_COLOR=0 \
    systemd-analyze verify $check_units 2>&1)
rc=$?
# Any message about our files, our units or the unit names we declare is a failure;
# other units of the host may have warnings of their own, which are not ours to fix.
ours=$(printf '%s\n' "$out" | grep -E "$units|dedupfs|Unit [^ ]+ not found" || true)
if [ $rc != 0 ] || [ -n "$ours" ]; then
    problem "systemd-analyze verify (rc=$rc):"
    printf '%s\n' "${ours:-$out}" | sed 's/^/    /'
else
    echo "ok: systemd-analyze verify $check_units"
fi

# The directives docs/service.md describes. Fixed strings, each on a line of its own.
need() { # need FILE LINE...
    local f=$1; shift
    for l in "$@"; do
        grep -qxF -- "$l" "$f" || problem "${f#$src/}: missing line: $l"
    done
}
svc=$src/dedupfs@.service
need "$svc" \
    'Type=notify' \
    'NotifyAccess=main' \
    'EnvironmentFile=/etc/dedupfs/%i.conf' \
    'AssertPathExists=/etc/dedupfs/%i.conf' \
    'ExecStart=/usr/local/bin/dedupfs mount -f ${STORE} ${MOUNTPOINT} -o ${OPTIONS}' \
    'ExecStop=-/usr/local/bin/dedupfs umount --timeout 0 ${MOUNTPOINT}' \
    'Environment=OPTIONS=defaults' \
    'Environment=RUST_LOG=info,fuser=error' \
    'After=local-fs.target remote-fs.target' \
    'Before=nfs-ganesha.service nfs-server.service smbd.service' \
    'Restart=on-failure' \
    'RestartSec=10s' \
    'RestartPreventExitStatus=2 3 6' \
    'StartLimitIntervalSec=10min' \
    'StartLimitBurst=5' \
    'TimeoutStartSec=5min' \
    'TimeoutStopSec=10min' \
    'KillMode=mixed' \
    'KillSignal=SIGTERM' \
    'LimitNOFILE=1048576' \
    'WantedBy=multi-user.target' \
    'RequiredBy=dedupfs.target'
grep -q '^ExecStopPost=-/bin/sh -c .*dedupfs umount --lazy' "$svc" ||
    problem "dedupfs@.service: no ExecStopPost= that detaches a dead mount"
# Settings that give the unit its own mount namespace would hide the FUSE mount from
# the host; a device allow-list would block /dev/fuse.
bad=$(grep -nE '^(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|PrivateMounts|PrivateNetwork|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectClock|ProtectHostname|ProtectProc|ProcSubset|ReadOnlyPaths|ReadWritePaths|InaccessiblePaths|ExecPaths|NoExecPaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|MountFlags|RootDirectory|RootImage|DeviceAllow|DevicePolicy|DynamicUser)=' "$svc" || true)
[ -z "$bad" ] || problem "dedupfs@.service: settings that break a FUSE mount service: $bad"
# -o metrics=IP:PORT listens on TCP: an address-family allow-list must keep IPv4/IPv6.
if grep -q '^RestrictAddressFamilies=' "$svc"; then
    for fam in AF_UNIX AF_INET AF_INET6; do
        grep -qE "^RestrictAddressFamilies=.*\b$fam\b" "$svc" ||
            problem "dedupfs@.service: RestrictAddressFamilies= lacks $fam"
    done
fi
# Section placement: Start-limit settings belong to [Unit], restart ones to [Service].
section_of() { awk -v k="$2" '/^\[/{s=$0} index($0, k"=")==1{print s; exit}' "$1"; }
[ "$(section_of "$svc" StartLimitBurst)" = "[Unit]" ] || problem "StartLimitBurst= is not in [Unit]"
[ "$(section_of "$svc" Restart)" = "[Service]" ] || problem "Restart= is not in [Service]"

need "$src/dedupfs.target" 'DefaultDependencies=no' 'Conflicts=shutdown.target' \
    'Before=shutdown.target' 'WantedBy=multi-user.target'
for s in $servers; do
    need "$src/$s.service.d/dedupfs.conf" '[Unit]' 'PartOf=dedupfs.target' \
        'Wants=dedupfs.target' 'After=dedupfs.target'
done

# example.conf must be a valid EnvironmentFile with the three variables.
conf=$src/example.conf
bad=$(grep -nvE '^[[:space:]]*($|#)|^[A-Z_][A-Z0-9_]*=' "$conf" || true)
[ -z "$bad" ] || problem "example.conf: lines that are neither comments nor KEY=VALUE: $bad"
for k in STORE MOUNTPOINT OPTIONS; do
    grep -qE "^$k=" "$conf" || problem "example.conf: no $k="
done
grep -qE '^[A-Z_]+=[^#]*[[:space:]]#' "$conf" &&
    problem "example.conf: a '#' after a value is part of the value, not a comment"

if [ $fail = 0 ]; then
    echo "ok: directives of dedupfs@.service, dedupfs.target, the server drop-ins and example.conf"
    echo "PASS: systemd units in $src"
    exit 0
fi
echo "FAILED: systemd units in $src"
exit 1
