#!/usr/bin/env python3
"""History benchmark: snapshot and rollback cost at 1,000 and 100,000 files, idle and
right after heavy writes, and read throughput of a snapshot and a time-travel view
against the live container. Writes the "History" section of BENCHMARKS.md.

Run as root after a release build: python3 benches/history.py
"""

import argparse, json, os, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/dedupfs-target")
DEDUPFS = os.path.join(TARGET, "release", "dedupfs")
sys.path.insert(0, os.path.join(ROOT, "benches"))
from run import corpus, drop_caches, machine, mb, sh, timed, write_section  # noqa: E402


def cli(store, *args):
    t = time.monotonic()
    out = sh(" ".join([DEDUPFS, "--store", store, "--json"] + [f"'{a}'" for a in args]))
    return json.loads(out), time.monotonic() - t


def fill(path, n):
    os.makedirs(path)
    for i in range(n):
        d = os.path.join(path, f"d{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(b"x" * 512 + str(i).encode())
    sh("sync")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--work", default="/var/tmp/dedupfs-bench-history")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches needs it)")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    tars, _ = corpus("/var/tmp/dedupfs-bench", 256, 5)
    store, mnt = os.path.join(a.work, "store"), os.path.join(a.work, "mnt")
    os.makedirs(mnt)
    sh(f"{DEDUPFS} init {store}")
    sh(f"{DEDUPFS} mount {store} {mnt}")
    rows = []
    try:
        for n in (1000, 100_000):
            c = f"files{n}"
            print(f"{n} files ...", flush=True)
            fill(os.path.join(mnt, c), n)
            cli(store, "bookmark", "create", c, "filled")
            s, wall = cli(store, "snapshot", "create", c, f"idle{n}", "--mode", "ro")
            rows.append((f"snapshot create, idle, {n:,} files", s["seconds"], wall))
            s, wall = cli(store, "snapshot", "create", c, f"idle-rw{n}", "--mode", "rw")
            rows.append((f"snapshot create (rw), idle, {n:,} files", s["seconds"], wall))
            # Right after heavy writes: 256 MB copied in, no sync, then snapshot at once.
            sh(f"cp {tars[0]} {mnt}/{c}/")
            s, wall = cli(store, "snapshot", "create", c, f"busy-noflush{n}", "--no-flush")
            rows.append((f"snapshot create --no-flush, right after 256 MB of writes, {n:,} files", s["seconds"], wall))
            sh(f"cp {tars[1]} {mnt}/{c}/")
            s, wall = cli(store, "snapshot", "create", c, f"busy{n}")
            rows.append((f"snapshot create (commits buffered writes first), right after 256 MB of writes, {n:,} files", s["seconds"], wall))
            r, wall = cli(store, "rollback", c, "--to", "filled")
            rows.append((f"rollback, {n:,} files", r["seconds"], wall))
            sh(f"cp {tars[2]} {mnt}/{c}/")
            r, wall = cli(store, "rollback", c, "--to", f"busy{n}")
            rows.append((f"rollback right after 256 MB of writes, {n:,} files", r["seconds"], wall))
        # Read throughput: live vs ro snapshot vs time-travel view, cold each time.
        print("reads ...", flush=True)
        os.makedirs(os.path.join(mnt, "r"))
        sh(f"cp {tars[0]} {mnt}/r/ && sync")
        cli(store, "bookmark", "create", "r", "b")
        cli(store, "snapshot", "create", "r", "rs")
        name = os.path.basename(tars[0])
        size = os.path.getsize(tars[0])
        reads = {}
        for label, path in (("live container", f"r/{name}"), ("ro snapshot (.snapshots)", f".snapshots/rs/{name}"), ("time-travel view (.at)", f".at/r/b/{name}")):
            sh(f"{DEDUPFS} umount {mnt}")
            drop_caches()
            sh(f"{DEDUPFS} mount {store} {mnt}")
            reads[label] = mb(size) / timed(f"cat {mnt}/{path} > /dev/null")
    finally:
        subprocess.run([DEDUPFS, "umount", mnt])
    lines = [
        "## History",
        "",
        f"Command: `python3 benches/history.py` (as root), {time.strftime('%Y-%m-%d %H:%M')}.",
        f"Machine: {machine()}.",
        "Containers of 1,000 and 100,000 small files; \"right after writes\" = a 256 MB corpus tar "
        "copied in with `cp` immediately before, without `sync`. *In daemon* is the time the "
        "operation takes inside the daemon; *CLI wall* includes starting the `dedupfs` process "
        "and its `syncfs` of the mount. Targets: snapshot create < 10 ms and rollback < 100 ms, "
        "the same at both sizes.",
        "",
        "| operation | in daemon | CLI wall |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {r[0]} | {r[1]*1000:.1f} ms | {r[2]*1000:.0f} ms |" for r in rows]
    lines += ["", "| cold read of a 256 MB file | MB/s | vs live |", "| --- | --- | --- |"]
    live = reads["live container"]
    lines += [f"| {k} | {v:.0f} | {v/live:.2f}x |" for k, v in reads.items()]
    lines.append("")
    section = "\n".join(lines)
    print(section)
    write_section(a.out, "## History", section)


if __name__ == "__main__":
    main()
