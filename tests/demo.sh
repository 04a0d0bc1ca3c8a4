#!/usr/bin/env bash
# The main job on an embedded default: a store under a temporary directory, mounted;
# five nightly full backups (the standard backup corpus, as tar streams) copied in;
# the savings shown; then a compromised backup server deletes everything and the locked
# history brings it back; unmounted and cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/dedupfs-target}"
bash tests/setup.sh
dedupfs="$CARGO_TARGET_DIR/release/dedupfs"
work="$(mktemp -d /var/tmp/dedupfs-demo.XXXXXX)"
cleanup() { "$dedupfs" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== generating 5 nightly backups of an evolving tree (64 MB each)"
benches/backup-corpus --out "$work/backups" --versions 5 --size-mb 64 --format tar --seed 7 >/dev/null
mkdir "$work/mnt"
"$dedupfs" init "$work/store"
"$dedupfs" mount "$work/store" "$work/mnt"
"$dedupfs" --store "$work/store" container create nightly --compression zstd:3 \
  --lock governance --lock-for 7d
for v in "$work"/backups/v*.tar; do
  cp "$v" "$work/mnt/nightly/"
  echo "copied $(basename "$v") ($(du -h --apparent-size "$v" | cut -f1))"
done
sync
ls -l "$work/mnt/nightly"
echo
"$dedupfs" --store "$work/store" stats
cmp "$work/backups/v005.tar" "$work/mnt/nightly/v005.tar" && echo && echo "v005.tar reads back identical"
"$dedupfs" --store "$work/store" bookmark create nightly v005-done >/dev/null

echo
echo "== the backup server is compromised: it deletes every backup, then the container"
rm "$work/mnt/nightly/"*.tar
"$dedupfs" --store "$work/store" container delete nightly --force || echo "(exit $?)"
"$dedupfs" --store "$work/store" rollback nightly --to v005-done
cmp "$work/backups/v005.tar" "$work/mnt/nightly/v005.tar" && echo "v005.tar is back"
