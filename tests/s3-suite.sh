#!/usr/bin/env bash
# The core end-to-end suite again, with every test store's packs in a real S3-compatible
# server (SeaweedFS on 127.0.0.1, started here and stopped by pid on exit): the same tests
# must pass whether packs live on local disk or in a bucket. Each store gets its own
# prefix (DEDUPFS_TEST_PACKS, read by tests/src/lib.rs). Called by tests/run.sh after
# tests/setup.sh --test-tools (which installs SeaweedFS into the venv).
#
# Usage: bash tests/s3-suite.sh [TEST-FILE...]   (default: the suites listed below)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/dedupfs-target}"
venv="${DEDUPFS_VENV:-/var/tmp/dedupfs-venv}"
weed="$venv/bin/weed"
[ -x "$weed" ] || { echo "s3-suite: $weed missing; run tests/setup.sh --test-tools" >&2; exit 2; }

# Suites that exercise the store through a real mount. Left out, each for a reason:
# - object_storage: runs its own servers already;
# - replication, upgrade: they make stores of their own with `init` arguments (--like,
#   fixtures of older formats) that a bucket prefix does not change;
# - exports, conformance: Samba/Ganesha and pjdfstest/fsx runs (long) see only the mount,
#   which is the same code above the pack layer.
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(posix differential durability dedup history listing reliability cli clone no_silent_failures security retention_lock metrics)

data=$(mktemp -d /var/tmp/dedupfs-s3suite.XXXXXX)
key=s3suite-key; secret=s3suite-secret
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -9 -- -"$pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT
for attempt in 1 2 3 4 5; do
  b=$(( 22000 + (RANDOM % 60) * 10 ))
  rm -f "$data/mini.options"
  setsid env AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret "$weed" mini -dir="$data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=$b -master.port.grpc=$((b+1)) -volume.port=$((b+2)) -volume.port.grpc=$((b+3)) \
    -filer.port=$((b+4)) -filer.port.grpc=$((b+5)) -s3.port=$((b+6)) -s3.port.grpc=$((b+7)) \
    -admin.port=$((b+8)) -admin.port.grpc=$((b+8+10000)) \
    -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
    -master.telemetry=false -master.volumeSizeLimitMB=64 -s3.autoCreateBucket=false \
    -filer.localSocket="$data/filer.sock" -s3.localSocket="$data/s3.sock" \
    </dev/null >>"$data/weed.log" 2>&1 &
  pid=$!
  endpoint=http://127.0.0.1:$((b+6))
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || break
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --aws-sigv4 aws:amz:us-east-1:s3 \
      --user "$key:$secret" "$endpoint/" || true)
    [ "$code" = 200 ] && break
    sleep 0.05
  done
  [ "${code:-}" = 200 ] && break
  kill -9 -- -"$pid" 2>/dev/null || true
  pid=""
done
[ -n "$pid" ] || { echo "s3-suite: SeaweedFS did not start" >&2; cat "$data/weed.log" >&2; exit 1; }
curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "$key:$secret" -X PUT "$endpoint/suite" >/dev/null
echo "s3-suite: SeaweedFS at $endpoint (pid $pid); bucket s3://suite"

export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1
export DEDUPFS_TEST_PACKS=s3://suite
# Tests that reach into STORE/packs/ on local disk (damage a pack file, count them, fill
# the local disk): with packs in a bucket their pack files are elsewhere. Each with why:
skips=(
  # corrupts and deletes local pack files by path; object_storage.rs deletes an object
  a_corrupt_or_missing_pack_gives_eio_and_the_rest_stays_readable
  # flips bits in and truncates local pack files by path
  corruption_corpus_gives_clear_errors_and_fsck_names_the_files
)
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
skip_args=()
for s in "${skips[@]}"; do skip_args+=(--skip "$s"); done
RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --release --no-fail-fast -p dedupfs-tests \
  "${args[@]}" -- "${skip_args[@]}"
echo "s3-suite: passed with packs in object storage"
