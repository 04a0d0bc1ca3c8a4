#!/usr/bin/env python3
"""Random 4 KiB reads of a cold VM-image-like file: this build against an older one.

    python3 benches/randread.py --old PATH/TO/OLD/dedupfs [--new PATH] [--rounds 3] [--seconds 15]

For each build, in alternating rounds: a new store, a 1 GB image (the real-data nights of
benches/peers.py concatenated, so it compresses like real data) copied in, a remount and a
dropped page cache, then `fio --rw=randread --bs=4k --ioengine=psync` for a fixed time.
Reports IOPS and mean latency per round and the ratio of the medians; writes the "Random
reads" section of BENCHMARKS.md. Needs fio (Debian's package; installed when missing).
"""
import argparse, json, os, shutil, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers  # noqa: E402
import run  # noqa: E402


def one(binary, image_parts, work, seconds, compression=None):
    store, mnt = os.path.join(work, "store"), os.path.join(work, "mnt")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(mnt)
    opts = "-o gc_idle=0,prune_interval=0"
    run.sh(f"{binary} init {store}")
    run.sh(f"{binary} mount {store} {mnt} {opts}")
    run.sh(f"{binary} --store {store} container create vm" + (f" --compression {compression}" if compression else ""))
    run.sh(f"cat {' '.join(image_parts)} > {mnt}/vm/disk.img && sync -f {mnt}/vm")
    run.sh(f"{binary} umount {mnt}")
    run.sh(f"{binary} mount {store} {mnt} {opts}")
    peers.drop_caches()
    out = run.sh(f"fio --name=rr --filename={mnt}/vm/disk.img --rw=randread --bs=4k --runtime={seconds} "
                 f"--time_based --ioengine=psync --readonly --invalidate=1 --randrepeat=1 --output-format=json")
    job = json.loads(out)["jobs"][0]["read"]
    run.sh(f"{binary} umount {mnt}")
    shutil.rmtree(work)
    return job["iops"], job["clat_ns"]["mean"] / 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="the dedupfs binary to compare with")
    ap.add_argument("--new", default=run.DEDUPFS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--work", default="/var/tmp/dedupfs-randread")
    ap.add_argument("--corpus", default="/var/tmp/dedupfs-peers", help="where peers.py keeps its real data")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches needs it)")
    if not shutil.which("fio"):
        run.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio")
    os.makedirs(a.work, exist_ok=True)
    nights = peers.real_corpus(a.corpus)
    parts = [nights[0], nights[2], nights[3]]
    variants = [("old", a.old, None), ("new", a.new, None), ("new, zstd-chunk:3", a.new, "zstd-chunk:3")]
    res = {v[0]: [] for v in variants}
    for r in range(a.rounds):
        for name, binary, comp in (variants if r % 2 == 0 else variants[::-1]):
            work = os.path.join(a.work, name.split(",")[0])
            iops, lat = one(binary, parts, work, a.seconds, comp)
            res[name].append((iops, lat))
            print(f"round {r + 1} {name}: {iops:.0f} IOPS, {lat:.0f} µs", flush=True)
    med = {k: statistics.median(x[0] for x in v) for k, v in res.items()}
    size = sum(os.path.getsize(p) for p in parts)
    lines = [
        "## Random reads",
        "",
        f"Command: `python3 benches/randread.py --old OLD --rounds {a.rounds} --seconds {a.seconds}` (as root), "
        f"{time.strftime('%Y-%m-%d %H:%M')}; old: `{run.sh(a.old + ' --version').strip()}` at {a.old}, "
        f"new: `{run.sh(a.new + ' --version').strip()}` at {a.new}.",
        f"Machine: {run.machine()}.",
        f"A {size / 1e6:.0f} MB image (the real-data nights 1, 3, 4 of `benches/peers.py` concatenated) in a new "
        "store per round, remounted, page cache dropped; `fio --rw=randread --bs=4k --ioengine=psync` for "
        f"{a.seconds} s; rounds alternate the order. *new* uses the default compression (zstd:3 in frames), "
        "*new, zstd-chunk:3* a container created with `--compression zstd-chunk:3` (each chunk alone).",
        "",
        "| build | IOPS per round | mean latency per round | median IOPS | vs old | target ≥ 0.80x |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k, _, _ in variants:
        ratio = med[k] / med["old"]
        verdict = "" if k == "old" else ("met" if ratio >= 0.8 else "**not met**")
        lines.append(f"| {k} | {', '.join(f'{x[0]:.0f}' for x in res[k])} | "
                     f"{', '.join(f'{x[1]:.0f} µs' for x in res[k])} | {med[k]:.0f} | {ratio:.2f}x | {verdict} |")
    lines.append("")
    section = "\n".join(lines)
    print(section)
    run.write_section(a.out, "## Random reads", section)


if __name__ == "__main__":
    main()
