#!/usr/bin/env python3
"""GC benchmark: online garbage collection (`dedupfs gc`, through the mounted daemon) on
two kinds of dead data — deleted nightly backups of the standard corpus, and a large random
file with 60% of its 64 KiB regions overwritten (partially dead packs: the rewrite path) —
and the throughput of a concurrent writer with and without GC running. Writes the
"Garbage collection" section of BENCHMARKS.md.

Run as root after a release build: python3 benches/gc.py [--bin PATH]

Stops with the exact command and output when dedupfs misbehaves (an error, a non-clean
fsck, data that does not read back identical, packs on disk not shrinking).
"""

import argparse, hashlib, json, os, random, shutil, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from run import corpus, drop_caches, machine, mb, sh, timed, write_section  # noqa: E402,F401

MiB, GiB = 2**20, 2**30
REGION = 64 * 1024
SHM = "/dev/shm/dedupfs-bench-gc"


class Failure(SystemExit):
    pass


def run(cmd, ok=(0,)):
    """Runs a shell command; on an unexpected exit status stops with the command and output."""
    p = subprocess.run(cmd, shell=True, text=True, capture_output=True)
    if p.returncode not in ok:
        raise Failure(f"FAILED (exit {p.returncode}): {cmd}\n--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}")
    return p.stdout


def fail(msg):
    raise Failure("PROBLEM: " + msg)


class Bench:
    def __init__(self, a):
        self.bin = a.bin
        self.work = a.work
        self.store = os.path.join(a.work, "store")
        self.mnt = os.path.join(a.work, "mnt")
        self.expected = {}  # path in mount -> ("file", src) or ("sha256", hex)

    # --- store and daemon -----------------------------------------------------------
    def cli(self, *args):
        t = time.monotonic()
        out = run(" ".join([self.bin, "--store", self.store, "--json"] + [f"'{x}'" for x in args]))
        return json.loads(out), time.monotonic() - t

    def mount(self):
        run(f"{self.bin} mount {self.store} {self.mnt} -o gc_idle=0,prune_interval=0")
        pid = self.pid()
        cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        if "mount" not in cmdline or "--foreground" not in cmdline:
            fail(f"pid {pid} from {self.store}/lock is not the mount daemon: {cmdline}")

    def umount(self):
        run(f"{self.bin} umount {self.mnt}")

    def pid(self):
        return int(open(os.path.join(self.store, "lock")).read().split()[1])

    def status(self, field):
        for line in open(f"/proc/{self.pid()}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def stats(self):
        return json.loads(run(f"{self.bin} --json stats --store {self.store}"))

    def packs_du(self):
        return int(run(f"du -sb {self.store}/packs").split()[0])

    def prune(self, container):
        self.cli("container", "set", container, "--retention", "all=1s")
        time.sleep(2)
        return self.cli("retention", "prune", container)[0]

    # --- data -----------------------------------------------------------------------
    def random_file(self, name, size):
        os.makedirs(SHM, exist_ok=True)
        path = os.path.join(SHM, name)
        run(f"head -c {size} /dev/urandom > {path}")
        return path

    def scratch(self, container, size, seed):
        """A random file of `size` bytes, then 60% of its 64 KiB regions overwritten in place
        with new random data (fsync'd); the history is pruned so the old data is dead."""
        src = self.random_file(f"{container}.src", size)
        os.makedirs(os.path.join(self.mnt, container))
        dst = os.path.join(self.mnt, container, "big")
        run(f"cp {src} {dst} && sync")
        rng = random.Random(seed)
        n = size // REGION
        fd, fs = os.open(dst, os.O_WRONLY), os.open(src, os.O_WRONLY)
        try:
            for i in rng.sample(range(n), int(n * 0.6)):
                data = rng.randbytes(REGION)
                os.pwrite(fd, data, i * REGION)
                os.pwrite(fs, data, i * REGION)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.close(fs)
        self.expected[dst] = ("sha256", sha256(src))
        os.unlink(src)
        return self.prune(container)

    def verify(self):
        """Every remaining file reads back identical to its source."""
        for path, (kind, ref) in sorted(self.expected.items()):
            if kind == "file":
                run(f"cmp {ref} {path}")
            elif sha256(path) != ref:
                fail(f"{path} reads back with a different sha256 than what was written")

    def fsck(self):
        t = time.monotonic()
        out = json.loads(run(f"{self.bin} --json fsck {self.store} --scrub"))
        if out["problems"] or out["unrepaired"]:
            fail(f"fsck --scrub not clean: {json.dumps(out)}")
        return out, time.monotonic() - t

    # --- GC -------------------------------------------------------------------------
    def gc(self, label, extra=""):
        """Dry run, then a full `gc --grace 0`, page cache dropped before each; returns a
        dict of measurements."""
        r = {"label": label}
        r["du_before"] = self.packs_du()
        r["stats_before"] = self.stats()
        r["hwm_before"] = self.status("VmHWM")
        drop_caches()
        t = time.monotonic()
        r["dry"] = json.loads(run(f"{self.bin} --json gc {self.store} --dry-run {extra}"))
        r["dry_wall"] = time.monotonic() - t
        drop_caches()
        r.update(self.gc_full(extra))
        r["hwm_after"] = self.status("VmHWM")
        r["du_after"] = self.packs_du()
        r["stats_after"] = self.stats()
        check_gc(r)
        return r

    def gc_full(self, extra=""):
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], self.status("VmRSS"))
                time.sleep(0.02)

        th = threading.Thread(target=sample)
        th.start()
        t0 = time.monotonic()
        try:
            out = run(f"{self.bin} --json gc {self.store} --grace 0 {extra}")
        finally:
            t1 = time.monotonic()
            done.set()
            th.join()
        return {"gc": json.loads(out), "gc_wall": t1 - t0, "gc_t": (t0, t1), "rss_during": peak[0]}

    def writer(self, name, src, with_gc=False, delay=0.5):
        """dd of a pre-generated random file into the mount; optionally `gc` started
        `delay` seconds after the writer."""
        dst = os.path.join(self.mnt, "c2", name)
        size = os.path.getsize(src)
        sh("sync")
        drop_caches()
        cmd = f"dd if={src} of={dst} bs=1M conv=fsync status=none"
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        g = None
        if with_gc:
            time.sleep(delay)
            box = {}
            gt = threading.Thread(target=lambda: box.update(self.gc_full_safe()))
            gt.start()
            g = (gt, box)
        out, err = p.communicate()
        t1 = time.monotonic()
        if p.returncode != 0:
            raise Failure(f"FAILED (exit {p.returncode}): {cmd}\n{out}{err}")
        res = {"mbps": mb(size) / (t1 - t0), "secs": t1 - t0, "t": (t0, t1)}
        if g:
            g[0].join()
            if "error" in g[1]:
                raise g[1]["error"]
            res["gc"] = g[1]
        self.expected[dst] = ("sha256", sha256(src))
        return res

    def gc_full_safe(self):
        try:
            return self.gc_full()
        except Failure as e:
            return {"error": e}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def check_gc(r):
    g = r["gc"]
    if g["dry_run"]:
        fail(f"{r['label']}: gc reported a dry run")
    # Packs below --min-reclaim are kept by design; when the plan reclaims something, the
    # packs on disk must shrink.
    if r["du_after"] > r["du_before"]:
        fail(f"{r['label']}: du -sb packs grew: {r['du_before']} -> {r['du_after']}")
    if g["plan"]["reclaimable_bytes"] > 0:
        if not r["du_after"] < r["du_before"]:
            fail(f"{r['label']}: du -sb packs did not go down: {r['du_before']} -> {r['du_after']}; "
                 f"report {json.dumps({k: v for k, v in g.items() if k != 'plan'})}")
        if g["pack_bytes_after"] >= g["pack_bytes_before"] or g["reclaimed_bytes"] <= 0:
            fail(f"{r['label']}: gc reclaimed nothing: {json.dumps({k: v for k, v in g.items() if k != 'plan'})}")


def log(msg, **kw):
    print(time.strftime("%H:%M:%S ") + msg, **kw)


def overlap(a, b):
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--work", default="/var/tmp/dedupfs-bench-gc")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/dedupfs-target"), "release", "dedupfs"))
    ap.add_argument("--size-mb", type=int, default=512, help="corpus: size of one night")
    ap.add_argument("--nights", type=int, default=6)
    ap.add_argument("--delete", type=int, default=3, help="oldest nights deleted")
    ap.add_argument("--scratch-mib", type=int, default=1024, help="random file, 60%% overwritten")
    ap.add_argument("--load-mib", type=int, default=3072, help="dead data for the GC under write load")
    ap.add_argument("--writer-mib", type=int, default=1024)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches needs it)")
    started = time.monotonic()
    load_start = open("/proc/loadavg").read().split()[0]
    tars, _ = corpus("/var/tmp/dedupfs-bench", a.size_mb, a.nights)
    shutil.rmtree(a.work, ignore_errors=True)
    shutil.rmtree(SHM, ignore_errors=True)
    b = Bench(a)
    os.makedirs(b.mnt)
    run(f"{b.bin} init {b.store}")
    b.mount()
    try:
        # 1. Nightly backups, oldest deleted.
        log("nightly backups ...", flush=True)
        nightly = os.path.join(b.mnt, "nightly")
        os.makedirs(nightly)
        for i, t in enumerate(tars, 1):
            d = os.path.join(nightly, f"night-{i}")
            os.makedirs(d)
            run(f"cp {t} {d}/ && sync")
            if i > a.delete:
                b.expected[os.path.join(d, os.path.basename(t))] = ("file", t)
        logical = sum(os.path.getsize(t) for t in tars)
        for i in range(1, a.delete + 1):
            run(f"rm -rf {nightly}/night-{i}")
        prune_a = b.prune("nightly")
        log("gc: nightly ...", flush=True)
        ga = b.gc("nightly")
        log("gc: nightly, --min-reclaim 0.05 ...", flush=True)
        ga2 = b.gc("nightly-0.05", "--min-reclaim 0.05")

        # 2. Random overwrites: partially dead packs.
        log("random overwrites ...", flush=True)
        prune_b = b.scratch("scratch", a.scratch_mib * MiB, seed=1)
        log("gc: random overwrites ...", flush=True)
        gb = b.gc("scratch")
        log("verify ...", flush=True)
        b.verify()
        fsck1, fsck1_wall = b.fsck()

        # 3. A writer alone (twice), during GC, alone again (twice).
        log("writer vs gc ...", flush=True)
        prune_c = b.scratch("load", a.load_mib * MiB, seed=2)
        os.makedirs(os.path.join(b.mnt, "c2"))
        drop_caches()
        t = time.monotonic()
        dry_c = json.loads(run(f"{b.bin} --json gc {b.store} --dry-run"))
        dry_c_wall = time.monotonic() - t
        w = {}
        for name, with_gc in (("alone1", False), ("alone2", False), ("during", True), ("alone3", False), ("alone4", False)):
            src = b.random_file(f"w-{name}", a.writer_mib * MiB)
            if with_gc:
                du_c, hwm_c = b.packs_du(), b.status("VmHWM")
            w[name] = b.writer(name, src, with_gc)
            if with_gc:
                gc_c = w["during"].pop("gc")
                # The writer added writer-mib of incompressible data meanwhile.
                gc_c.update(du_before=du_c, du_after=b.packs_du() - a.writer_mib * MiB, hwm_before=hwm_c,
                            hwm_after=b.status("VmHWM"), dry=dry_c, label="load", dry_wall=dry_c_wall,
                            stats_after=b.stats())
                check_gc(gc_c)
            os.unlink(src)

        # 4. Verify again: offline fsck, then a cold re-read by a fresh daemon.
        log("final verify ...", flush=True)
        b.umount()
        fsck2, fsck2_wall = b.fsck()
        b.mount()
        b.verify()
        final_stats = b.stats()
    finally:
        subprocess.run([b.bin, "umount", b.mnt])
        shutil.rmtree(SHM, ignore_errors=True)
    total = time.monotonic() - started
    load_end = open("/proc/loadavg").read().split()[0]

    # --- report ---------------------------------------------------------------------
    def mib(n):
        return f"{n / MiB:,.0f} MiB"

    def col(r, key):
        g, p = r["gc"], r["gc"]["plan"]
        secs = g["duration_ms"] / 1000
        return {
            "packs": f"{p['pack_files']} files, {mib(p['pack_bytes'])}",
            "dead": f"{mib(p['dead_bytes'])} + {mib(p['garbage_bytes'])} ({(p['dead_bytes'] + p['garbage_bytes']) / p['pack_bytes']:.0%})",
            "recl": f"{mib(p['reclaimable_bytes'])} / {mib(p['copy_bytes'])}",
            "removed": f"{g['dead_chunks_removed']:,}",
            "plan": f"{p['keep']} / {p['rewrite']} / {p['delete']}",
            "dry": f"{r['dry']['duration_ms']} ms" + (f" ({r['dry_wall'] * 1000:.0f} ms wall)" if r["dry_wall"] else ""),
            "full": f"{g['duration_ms'] / 1000:.2f} s ({r['gc_wall']:.2f} s wall)",
            "scan": f"{g['pack_bytes_before'] / GiB / secs:.2f} GiB/s",
            "reclaim": f"{mib(g['reclaimed_bytes'])}, {g['reclaimed_bytes'] / GiB / secs:.2f} GiB/s"
                       + ("" if r["label"] != "load" else
                          f" ² (by du: {mib(r['du_before'] - r['du_after'])}, "
                          f"{(r['du_before'] - r['du_after']) / GiB / secs:.2f} GiB/s)"),
            "copied": f"{mib(g['bytes_copied'])} ({g['packs_rewritten']} packs rewritten, {g['packs_deleted']} deleted)",
            "du": f"{mib(r['du_before'])} → {mib(r['du_after'])} (−{(r['du_before'] - r['du_after']) / r['du_before']:.0%})"
                  + (" ¹" if r["label"] == "load" else ""),
            "left": mib(r["stats_after"]["reclaimable_bytes"]) if "stats_after" in r else "-",
            "hwm": f"{r['hwm_before'] / MiB:.0f} → {r['hwm_after'] / MiB:.0f} MiB",
            "rss": f"{r['rss_during'] / MiB:.0f} MiB",
        }[key]

    rows = [
        ("packs before GC (plan)", "packs"),
        ("dead + garbage bytes (share of pack bytes)", "dead"),
        ("plan: reclaimable / to copy", "recl"),
        ("plan: keep / rewrite / delete packs", "plan"),
        ("`gc --dry-run` (plan), in daemon", "dry"),
        ("`gc --grace 0`, in daemon", "full"),
        ("pack data scanned (pack bytes before / duration)", "scan"),
        ("reclaimed", "reclaim"),
        ("copied by rewrites", "copied"),
        ("dead chunks removed from the index", "removed"),
        ("`du -sb STORE/packs` before → after", "du"),
        ("reclaimable left after GC (`stats`)", "left"),
        ("daemon VmHWM before → after GC", "hwm"),
        ("daemon RSS peak while GC ran (sampled)", "rss"),
    ]
    before = [w["alone1"]["mbps"], w["alone2"]["mbps"]]
    after = [w["alone3"]["mbps"], w["alone4"]["mbps"]]
    alone = sum(before + after) / 4
    ov = overlap(w["during"]["t"], gc_c["gc_t"])
    cmd = " ".join(["python3 benches/gc.py"] + sys.argv[1:])
    version = sh(f"{b.bin} --version").strip()
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(b.bin)))
    notes = [f"{r['label']}: skipped {r['gc']['skipped']}, waiting {r['gc']['waiting']}"
             for r in (ga, ga2, gb, gc_c) if r["gc"].get("skipped") or r["gc"].get("waiting")]
    lines = [
        "## Garbage collection",
        "",
        f"Command: `{cmd}` (as root), {time.strftime('%Y-%m-%d %H:%M')}; whole run {total / 60:.1f} min; "
        f"binary `{version}` built {built}.",
        f"Machine: {machine()}; load average {load_start} at start, {load_end} at end (shared machine).",
        f"Mounted with `-o gc_idle=0,prune_interval=0`; GC runs online through the daemon; page cache dropped "
        f"before each `gc`. Dead data is made by deleting files, `container set C --retention all=1s`, 2 s, "
        f"`retention prune C`. Columns, run one after another in one store:",
        f"*nightly* — {a.nights} nightly backups of the standard corpus (`backup-corpus --versions {a.nights} "
        f"--size-mb {a.size_mb} --format tar --seed 7`, {mb(logical):,.0f} MB logical) copied to "
        f"`nightly/night-N/`, then the oldest {a.delete} nights `rm -rf`'d and pruned "
        f"(released {mib(prune_a['released_bytes'])}); default `--min-reclaim 0.5`, so packs less than half "
        f"reclaimable are kept (their dead chunks leave the index and count as garbage from then on);",
        f"*nightly again* — a second GC of the same store with `--min-reclaim 0.05`, so those packs are rewritten;",
        f"*random overwrites* — a {a.scratch_mib} MiB random file, 60% of its 64 KiB regions overwritten in "
        f"place with new random data, pruned (released {mib(prune_b['released_bytes'])}): partially dead packs, "
        f"the rewrite path;",
        f"*under write load* — the same with {a.load_mib} MiB (released {mib(prune_c['released_bytes'])}), "
        f"GC started {0.5:.1f} s after the writer below (so it competes for the 2 cores and the disk).",
        "",
        "| measure | nightly | nightly again, `--min-reclaim 0.05` | random overwrites | under write load |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {label} | {col(ga, k)} | {col(ga2, k)} | {col(gb, k)} | {col(gc_c, k)} |" for label, k in rows]
    lines += [
        "",
        f"¹ After minus the {a.writer_mib} MiB the concurrent writer added meanwhile (incompressible).",
        "² `reclaimed_bytes` as reported; dedupfs computes it as the plan's pack bytes minus all pack bytes "
        "on disk after the sweep (gc/src/sweep.rs), so bytes the concurrent writer appended meanwhile are "
        "subtracted from it (also from `stats` gc.last/total_reclaimed_bytes). The du figure is the "
        "real reduction.",
        "",
        f"| concurrent writer: `dd if=<{a.writer_mib} MiB random, /dev/shm> of=MNT/c2/w bs=1M conv=fsync` | MB/s | vs alone |",
        "| --- | --- | --- |",
        f"| alone, 2 runs before GC | {before[0]:.0f}, {before[1]:.0f} | {before[0] / alone:.2f}x, {before[1] / alone:.2f}x |",
        f"| while `gc --grace 0` runs | {w['during']['mbps']:.0f} | **{w['during']['mbps'] / alone:.2f}x** |",
        f"| alone, 2 runs after GC | {after[0]:.0f}, {after[1]:.0f} | {after[0] / alone:.2f}x, {after[1] / alone:.2f}x |",
        "",
        f"Overlap: the writer took {w['during']['secs']:.1f} s, GC {gc_c['gc_wall']:.1f} s of wall time, "
        f"{ov:.1f} s of them together ({ov / w['during']['secs']:.0%} of the writer's time). "
        "\"vs alone\" is against the mean of the four alone runs (page cache dropped before each run; a "
        "new random source file each time, so nothing dedups).",
        f"Verified: `fsck --scrub` clean after the first two GCs (online, {fsck1['bytes_scrubbed'] / MiB:,.0f} MiB "
        f"scrubbed in {fsck1_wall:.1f} s) and at the end (unmounted, {fsck2['bytes_scrubbed'] / MiB:,.0f} MiB in "
        f"{fsck2_wall:.1f} s); every remaining file ({len(b.expected)}: nights {a.delete + 1}..{a.nights}, both "
        "overwritten files, the five writer files) read back identical to its source (cmp or sha256) online "
        "after the first two GCs and, after the last, cold after a remount. "
        f"Store at the end: packs {mib(final_stats['pack_bytes'])}, logical {mib(final_stats['logical_bytes'])}, "
        f"GC runs {final_stats['gc']['runs']}.",
    ]
    lines += [f"GC report notes — {n}." for n in notes]
    lines.append("")
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump({"gc": [ga, ga2, gb, gc_c], "writer": w, "prune": [prune_a, prune_b, prune_c],
                   "fsck": [fsck1, fsck2], "final_stats": final_stats}, f, indent=1, default=str)
    section = "\n".join(lines)
    print(section)
    write_section(a.out, "## Garbage collection", section)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(e, file=sys.stderr)
        sys.exit(1)
