#!/usr/bin/env bash
# The test command: sets up a bare machine (tests/setup.sh), checks formatting and lints,
# then runs every test — unit and property tests of the core, end-to-end tests on real
# mounts, pjdfstest and fsx. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/dedupfs-target}"
bash tests/setup.sh --test-tools
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings

echo "== tests"
# End-to-end tests mount real filesystems; two at a time suit a 2-core machine.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --release --workspace
echo "== the core end-to-end suites again, with packs in S3-compatible object storage"
bash tests/s3-suite.sh
echo "== systemd units (systemd-analyze verify)"
bash tests/systemd-units.sh
echo "== lock protocols under shuttle's randomized scheduler"
# The workspace's feature set plus the core's shuttle feature, so that no dependency is
# built again with other features (RocksDB would take 25 minutes).
cargo test --release --workspace --features dedupfs-core/shuttle --test shuttle_locks
echo "== all tests passed"
