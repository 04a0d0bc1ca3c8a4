#!/usr/bin/env python3
"""Zero-copy clones: `cp --reflink=auto` of a 1 GiB backup file inside a container.

    python3 benches/clone.py [--rounds 5] [--bin PATH]

A new store, a 1 GiB file of real data (the real-data nights of benches/peers.py
concatenated and cut to 1 GiB) written and synced; then, in rounds, `cp --reflink=auto`
of it to a new name in the same container (timed, wall clock, including the `sync -f`
that makes it durable), stored bytes before and after, and a byte comparison of the
copy. The same `cp` between two containers (bytes move through the write path and are
deduplicated again) and in a plain directory on the same disk are timed alongside.
Writes the "Zero-copy clones" section of BENCHMARKS.md.
"""
import argparse, json, os, shutil, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers  # noqa: E402
import run  # noqa: E402

GIB = 1 << 30


def timed(cmd):
    t = time.monotonic()
    run.sh(cmd)
    return time.monotonic() - t


def stored(binary, store):
    return json.loads(run.sh(f"{binary} --store {store} stats --json"))["stored_bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=run.DEDUPFS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default="/var/tmp/dedupfs-clone")
    ap.add_argument("--corpus", default="/var/tmp/dedupfs-peers", help="where peers.py keeps its real data")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    store, mnt, plain = (os.path.join(a.work, x) for x in ("store", "mnt", "plain"))
    os.makedirs(mnt)
    os.makedirs(plain)
    nights = peers.real_corpus(a.corpus)
    src = os.path.join(a.work, "full.bak")
    run.sh(f"cat {' '.join(nights)} {' '.join(nights)} | head -c {GIB} > {src}")
    assert os.path.getsize(src) == GIB, "the real data is shorter than 1 GiB"
    b = a.bin
    run.sh(f"{b} init {store}")
    run.sh(f"{b} mount {store} {mnt} -o gc_idle=0,prune_interval=0")
    try:
        run.sh(f"{b} --store {store} container create c")
        run.sh(f"{b} --store {store} container create other")
        run.sh(f"cp {src} {mnt}/c/full.bak && cp {src} {plain}/full.bak && sync -f {mnt}/c && sync -f {plain}")
        res = {"clone": [], "cross": [], "plain": []}
        added = []
        for r in range(a.rounds):
            before = stored(b, store)
            res["clone"].append(timed(f"cp --reflink=auto {mnt}/c/full.bak {mnt}/c/copy{r}.bak && sync -f {mnt}/c"))
            added.append(stored(b, store) - before)
            run.sh(f"cmp {src} {mnt}/c/copy{r}.bak")
            res["cross"].append(timed(f"cp --reflink=auto {mnt}/c/full.bak {mnt}/other/copy{r}.bak && sync -f {mnt}/other"))
            res["plain"].append(timed(f"cp --reflink=auto {plain}/full.bak {plain}/copy{r}.bak && sync -f {plain}"))
            os.remove(f"{plain}/copy{r}.bak")
            print(f"round {r + 1}: clone {res['clone'][-1]:.3f} s (+{added[-1]} stored bytes), "
                  f"across containers {res['cross'][-1]:.2f} s, plain {res['plain'][-1]:.2f} s", flush=True)
    finally:
        run.sh(f"{b} umount {mnt}")
    med = {k: statistics.median(v) for k, v in res.items()}
    lines = [
        "## Zero-copy clones",
        "",
        f"Command: `python3 benches/clone.py --rounds {a.rounds}`, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"`{run.sh(b + ' --version').strip()}`.",
        f"Machine: {run.machine()}.",
        "A 1 GiB file of real data (the real-data nights of `benches/peers.py`) in container `c`; each round "
        "`cp --reflink=auto` (coreutils' `copy_file_range`) of it to a new name, wall clock including `sync -f`. "
        "Inside a container the copy shares the chunk references (one commit); across containers the bytes go "
        "through the write path (deduplicated again); *plain* is the same `cp` in a directory on the same disk.",
        "",
        "| copy | seconds per round | median | stored bytes added per round | target |",
        "| --- | --- | --- | --- | --- |",
        f"| inside a container (clone) | {', '.join(f'{x:.3f}' for x in res['clone'])} | {med['clone']:.3f} s | "
        f"{', '.join(str(x) for x in added)} | < 0.2 s, 0 bytes: "
        f"{'met' if med['clone'] < 0.2 and max(added) == 0 else '**not met**'} |",
        f"| across containers | {', '.join(f'{x:.2f}' for x in res['cross'])} | {med['cross']:.2f} s | | |",
        f"| plain directory | {', '.join(f'{x:.2f}' for x in res['plain'])} | {med['plain']:.2f} s | | |",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    run.write_section(a.out, "## Zero-copy clones", section)
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
