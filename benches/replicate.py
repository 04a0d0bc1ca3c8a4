#!/usr/bin/env python3
"""Replication benchmark: `dedupfs replicate` (and `send | receive`) of a container of
nightly backups into a second store on the same disk — full throughput (night 1 alone, and
all nights at once), the wire cost of one nightly generation against the new unique bytes
it stored, and the time to resume after a cut. Writes the "Replication" section of
BENCHMARKS.md.

    python3 benches/replicate.py [--size-mb 256] [--nights 3]

As root. The binary is $DEDUPFS_BIN (default: CARGO_TARGET_DIR/release/dedupfs, as in
benches/run.py). Workload: the standard corpus (benches/backup-corpus --format tar
--seed 7), one tar stream per night copied with cp next to the previous nights in one
container of a mounted source store (-o gc_idle=0,prune_interval=0), each night's tar
written whole as one file; targets are fresh stores made with `init --like SOURCE`, not
mounted.

Stops with the exact command and output when dedupfs fails.
"""
import argparse, json, os, resource, shutil, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from run import DEDUPFS, corpus, drop_caches, machine, mb, sh, timed, write_section  # noqa: E402,F401

BIN = os.environ.get("DEDUPFS_BIN", DEDUPFS)
MIB = 2**20
BWLIMIT = "50M"
BWLIMIT_BYTES = 50 * MIB  # how dedupfs reads "50M" (the daemon logs bwlimit: 52428800)


class Failure(SystemExit):
    pass


def run(cmd, ok=(0,)):
    """Runs a shell command; on an unexpected exit status stops with the command and output."""
    p = subprocess.run(cmd, shell=True, text=True, capture_output=True)
    if p.returncode not in ok:
        raise Failure(f"FAILED (exit {p.returncode}): {cmd}\n--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}")
    return p


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid):
    try:
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return st != "Z"
    except FileNotFoundError:
        return False


def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except FileNotFoundError:
        return []


def sigpipe_disposition(pid):
    st = {l.split(":")[0]: l.split(":")[1].strip() for l in open(f"/proc/{pid}/status") if ":" in l}
    bit = 1 << (signal.SIGPIPE - 1)
    if int(st["SigIgn"], 16) & bit:
        return "ignored"
    if int(st["SigCgt"], 16) & bit:
        return "caught"
    if int(st["SigBlk"], 16) & bit:
        return "blocked"
    return "at its default action (terminate)"


class Bench:
    def __init__(self, a):
        self.work = a.work
        self.src = os.path.join(a.work, "A")
        self.mnt = os.path.join(a.work, "mnt")
        self.mounted = []
        self.procs = []  # background Popen objects
        self.orphans = []  # pids of processes our runs left behind
        self.deaths = []  # the source's mount daemon found dead
        self.n = 0

    # --- stores ---------------------------------------------------------------------
    def mount(self, store, mnt):
        os.makedirs(mnt, exist_ok=True)
        run(f"{BIN} mount {store} {mnt} -o gc_idle=0,prune_interval=0")
        self.mounted.append(mnt)

    def umount(self, mnt):
        run(f"{BIN} umount {mnt}")
        self.mounted.remove(mnt)

    def fresh_source(self):
        if self.mnt in self.mounted:
            self.umount(self.mnt)
        shutil.rmtree(self.src, ignore_errors=True)
        run(f"{BIN} init {self.src}")
        self.mount(self.src, self.mnt)
        run(f"{BIN} --store {self.src} container create c")
        self.c = os.path.join(self.mnt, "c")

    def target(self, label):
        """A fresh target store that cuts chunks like the source."""
        self.n += 1
        t = os.path.join(self.work, f"T{self.n}-{label}")
        run(f"{BIN} init {t} --like {self.src}")
        return t

    def daemon_pid(self):
        return int(open(os.path.join(self.src, "lock")).read().split()[1])

    def check_daemon(self, pid, when):
        """If the source's mount daemon `pid` is gone: records it (its log's last lines, what
        the mount point says) and mounts the source again. Returns True if it was gone."""
        if alive(pid):
            return False
        d = {"when": when, "pid": pid}
        d["ls"] = subprocess.run(["ls", self.mnt], capture_output=True, text=True).stderr.strip()
        d["log"] = open(os.path.join(self.src, "dedupfs.log")).read().splitlines()[-3:]
        self.deaths.append(d)
        log(f"the source's mount daemon (pid {pid}) is gone after {when}: {d['ls']}; mounting again")
        subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        self.mounted.remove(self.mnt)
        self.mount(self.src, self.mnt)
        return True

    def stats(self):
        return json.loads(run(f"{BIN} --store {self.src} stats --json").stdout)

    def write_night(self, tar):
        run(f"cp {tar} {self.c}/")
        run(f"sync && {BIN} --store {self.src} sync")

    # --- replication ----------------------------------------------------------------
    def replicate(self, to, extra="", ok=(0,)):
        """`replicate c --to TO --json`; returns (report or error, wall, cpu seconds of the
        daemon, cpu seconds of the CLI and its children)."""
        pid = self.daemon_pid() if self.mnt in self.mounted else None
        d0 = proc_cpu(pid) if pid else 0.0
        c0 = child_cpu()
        cmd = f"{BIN} --store {self.src} replicate c --to {to} --json {extra}".strip()
        t = time.monotonic()
        p = run(cmd, ok=ok)
        wall = time.monotonic() - t
        d1 = proc_cpu(pid) if pid else 0.0
        out = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {"error": {"message": p.stderr.strip()}}
        out["_rc"], out["_cmd"], out["_stderr"] = p.returncode, cmd, p.stderr.strip()
        return out, wall, d1 - d0, child_cpu() - c0

    def pipe(self, to, ok=(0,)):
        """`send c | receive TO c`, timed around the shell pipeline."""
        cmd = f"set -o pipefail; {BIN} --store {self.src} send c | {BIN} receive {to} c --json"
        full = f"bash -c '{cmd}'"
        pid = self.daemon_pid() if self.mnt in self.mounted else None
        d0 = proc_cpu(pid) if pid else 0.0
        c0 = child_cpu()
        t = time.monotonic()
        p = run(full, ok=ok)
        wall = time.monotonic() - t
        d1 = proc_cpu(pid) if pid else 0.0
        out = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {"error": {"message": p.stderr.strip()}}
        out["_rc"], out["_cmd"], out["_stderr"] = p.returncode, cmd.replace("set -o pipefail; ", ""), p.stderr.strip()
        return out, wall, d1 - d0, child_cpu() - c0

    def background(self, to):
        cmd = f"{BIN} --store {self.src} replicate c --to {to} --json --bwlimit {BWLIMIT}"
        p = subprocess.Popen(cmd.split(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        self.procs.append(p)
        return p, cmd

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for pid in self.orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for m in list(self.mounted):
            if subprocess.run([BIN, "umount", m], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True)
            self.mounted.remove(m)
        shutil.rmtree(self.work, ignore_errors=True)


def err_text(r):
    e = r.get("error", {})
    return e.get("message", "") if isinstance(e, dict) else str(e)


def check_ok(r, what):
    if r["_rc"] != 0 or "error" in r:
        raise Failure(f"PROBLEM: {what} failed (exit {r['_rc']}): {r['_cmd']}\n{json.dumps(r)}")


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=256, help="corpus: size of one night")
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--work", default="/var/tmp/dedupfs-bench-replicate")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches needs it)")
    if a.nights < 2:
        sys.exit("--nights must be at least 2 (the incremental measure needs a second night)")
    started = time.monotonic()
    load_start = open("/proc/loadavg").read().split()[0]
    tars, _ = corpus("/var/tmp/dedupfs-bench", a.size_mb, a.nights)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    b = Bench(a)
    try:
        # 0. The standard workload as is: night 1, its tar written whole as one file.
        log("night 1: write ...")
        b.fresh_source()
        b.write_night(tars[0])
        sigpipe = sigpipe_disposition(b.daemon_pid())

        # 1. Full replication of night 1: replicate (twice), send | receive (twice), each
        #    into a fresh target, page cache dropped before each.
        log("full replication ...")
        full, full_targets = [], []
        for i in range(2):
            t = b.target(f"full{i + 1}")
            drop_caches()
            r, wall, dcpu, ccpu = b.replicate(t)
            check_ok(r, "full replicate")
            full.append({"r": r, "wall": wall, "dcpu": dcpu, "ccpu": ccpu})
            full_targets.append(t)
        pipes = []
        for i in range(2):
            t = b.target(f"pipe{i + 1}")
            drop_caches()
            r, wall, dcpu, ccpu = b.pipe(t)
            check_ok(r, "send | receive")
            pipes.append({"r": r, "wall": wall, "dcpu": dcpu, "ccpu": ccpu})
        tree = full[0]["r"]["tree_bytes"]
        full_secs = med([f["r"]["seconds"] for f in full])
        full_chunk = full[0]["r"]["chunk_bytes_sent"]
        full_wire = full[0]["r"]["wire_bytes"]
        raw_rate = full_chunk / full_secs  # chunk bytes per second of a full run

        # Source unmounted: the CLI does the work itself (once, for context).
        log("full replication, source unmounted ...")
        b.umount(b.mnt)
        t = b.target("unmounted")
        drop_caches()
        r, wall, _, ccpu = b.replicate(t)
        check_ok(r, "full replicate (source unmounted)")
        unmounted = {"r": r, "wall": wall, "ccpu": ccpu}
        log("resume, source unmounted ...")
        u_raw = r["chunk_bytes_sent"] / r["seconds"]
        u_cut = max(r["wire_bytes"] / BWLIMIT_BYTES, r["seconds"]) / 2
        t = b.target("resume-unmounted")
        drop_caches()
        p, cmd = b.background(t)
        time.sleep(u_cut)
        u_early = p.poll() is not None
        if not u_early:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        time.sleep(0.5)
        at_cut = int(sh(f"du -sb {t}/packs").split()[0])
        r, wall, _, _ = b.replicate(t)
        check_ok(r, "replicate after a cut (source unmounted)")
        resume_u = {"r": r, "wall": wall, "cut_at": u_cut, "early": u_early, "packs_at_cut": at_cut,
                    "overhead": r["seconds"] - r["chunk_bytes_sent"] / u_raw}
        b.mount(b.src, b.mnt)

        # 3. Resume: a rate-limited run cut with kill -9 of its process group (the
        #    replicate command and the `serve` it starts for a local target) at about
        #    half its expected duration, then an unlimited run.
        expected = max(full_wire / BWLIMIT_BYTES, full_secs)
        cut_at = expected / 2
        resumes = []
        for i in range(2):
            log(f"resume {i + 1} ...")
            t = b.target(f"resume{i + 1}")
            drop_caches()
            dpid = b.daemon_pid()
            p, cmd = b.background(t)
            time.sleep(cut_at)
            finished_early = p.poll() is not None
            kids = children(p.pid)
            if not finished_early:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            time.sleep(0.5)
            left = [k for k in kids if alive(k)]
            b.orphans += left
            died = b.check_daemon(dpid, f"the cut of resume run {i + 1}")
            at_cut = int(sh(f"du -sb {t}/packs").split()[0])
            r, wall, dcpu, ccpu = b.replicate(t)
            check_ok(r, "replicate after a cut")
            resumes.append({"r": r, "wall": wall, "cmd": cmd, "early": finished_early, "left": left,
                            "packs_at_cut": at_cut, "daemon_died": died,
                            "overhead": r["seconds"] - r["chunk_bytes_sent"] / raw_rate})

        # kill -9 of the replicate command's pid only (not its process group): what
        #    happens to the transfer, and to the next run.
        log("kill -9 of the replicate pid only ...")
        t = b.target("pidkill")
        dpid = b.daemon_pid()
        p, cmd = b.background(t)
        time.sleep(cut_at)
        kids = children(p.pid)
        pk = {"cmd": cmd, "early": p.poll() is not None, "kids": kids}
        if not pk["early"]:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        b.orphans += kids
        time.sleep(0.3)
        pk["alive_after_kill"] = [k for k in kids if alive(k)]
        pk["cmdlines"] = {k: open(f"/proc/{k}/cmdline").read().replace("\0", " ").strip()
                          for k in pk["alive_after_kill"]}
        r, wall, _, _ = b.replicate(t, ok=(0, 1))
        pk["rerun"] = r
        t0 = time.monotonic()
        while any(alive(k) for k in kids) and time.monotonic() - t0 < 120:
            time.sleep(0.1)
        pk["orphan_exit_after"] = time.monotonic() - t0
        pk["orphan_still_alive"] = [k for k in kids if alive(k)]
        pk["daemon_died"] = b.check_daemon(dpid, "the pid-only kill and the rerun after it")
        r, wall, _, _ = b.replicate(t, ok=(0, 1))
        pk["after"] = r

        # 2. Incremental: night k written next to the previous nights; new unique stored
        #    bytes of that generation; then replicate it into both full targets.
        incs = []
        for k in range(1, a.nights):
            log(f"night {k + 1}: write, replicate ...")
            s0 = b.stats()
            b.write_night(tars[k])
            s1 = b.stats()
            new_stored = s1["stored_bytes"] - s0["stored_bytes"]
            runs = []
            for t in full_targets:
                dpid = b.daemon_pid()
                r, wall, dcpu, ccpu = b.replicate(t)
                check_ok(r, f"incremental replicate of night {k + 1}")
                if b.check_daemon(dpid, f"the incremental replicate of night {k + 1}"):
                    raise Failure(f"PROBLEM: the mount daemon died during {r['_cmd']}: {b.deaths[-1]}")
                runs.append({"r": r, "wall": wall})
            incs.append({"night": k + 1, "new_stored": new_stored,
                         "new_unique": s1["unique_bytes"] - s0["unique_bytes"],
                         "written": os.path.getsize(tars[k]), "runs": runs,
                         "ratio": med([x["r"]["wire_bytes"] for x in runs]) / new_stored})
        final_stats = b.stats()

        # 4. Full replication of all nights at once (they dedupe against each other):
        #    replicate (twice), send | receive (twice), each into a fresh target, page cache
        #    dropped before each.
        log("full replication of all nights ...")
        allfull, all_targets, allpipes = [], [], []
        for i in range(2):
            t = b.target(f"all{i + 1}")
            drop_caches()
            dpid = b.daemon_pid()
            r, wall, dcpu, ccpu = b.replicate(t)
            check_ok(r, "full replicate of all nights")
            if b.check_daemon(dpid, f"the full replicate of all nights, run {i + 1}"):
                raise Failure(f"PROBLEM: the mount daemon died during {r['_cmd']}: {b.deaths[-1]}")
            allfull.append({"r": r, "wall": wall, "dcpu": dcpu, "ccpu": ccpu})
            all_targets.append(t)
        for i in range(2):
            t = b.target(f"allpipe{i + 1}")
            drop_caches()
            r, wall, dcpu, ccpu = b.pipe(t)
            check_ok(r, "send | receive of all nights")
            allpipes.append({"r": r, "wall": wall, "dcpu": dcpu, "ccpu": ccpu})

        # Verify: the first night-1 target (incrementals applied) and the first all-nights
        #    target, mounted, read back every night identical.
        log("verify the replicas ...")
        vm = os.path.join(a.work, "mnt-replica")
        replica_files = {}
        for label, st in (("replica", full_targets[0]), ("all-nights replica", all_targets[0])):
            b.mount(st, vm)
            for tar in tars:
                f = os.path.join(vm, "c", os.path.basename(tar))
                if not os.path.exists(f):
                    raise Failure(f"PROBLEM: {f} is missing from the {label} {st}")
                run(f"cmp {f} {tar}")
            replica_files[label] = sorted(os.listdir(os.path.join(vm, "c")))
            b.umount(vm)
        log("fsck --scrub of the source and the two verified targets ...")
        b.umount(b.mnt)
        fscks = {}
        for label, st in (("source", b.src), ("replica", full_targets[0]),
                          ("all-nights replica", all_targets[0])):
            fscks[label] = json.loads(run(f"{BIN} --json fsck {st} --scrub").stdout)
            if fscks[label]["problems"] or fscks[label]["unrepaired"]:
                raise Failure(f"PROBLEM: fsck --scrub of the {label} {st} not clean: {json.dumps(fscks[label])}")
        version = run(f"{BIN} --version").stdout.strip()
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(BIN)))
    finally:
        b.cleanup()
    total = time.monotonic() - started
    load_end = open("/proc/loadavg").read().split()[0]

    # --- report ---------------------------------------------------------------------
    def check(ok):
        return "met" if ok else "**not met**"

    def rate(n, s):
        return mb(n) / s

    rep_rates = [rate(f["r"]["tree_bytes"], f["r"]["seconds"]) for f in full]
    rep_walls = [rate(f["r"]["tree_bytes"], f["wall"]) for f in full]
    pipe_rates = [rate(tree, p["wall"]) for p in pipes]
    ratios = [x["ratio"] for x in incs]
    mean_ratio = statistics.mean(ratios)
    res_secs = [x["r"]["seconds"] for x in resumes]
    res_over = [x["overhead"] for x in resumes]
    all_tree = allfull[0]["r"]["tree_bytes"]
    all_rates = [rate(f["r"]["tree_bytes"], f["r"]["seconds"]) for f in allfull]
    all_walls = [rate(f["r"]["tree_bytes"], f["wall"]) for f in allfull]
    allpipe_rates = [rate(all_tree, p["wall"]) for p in allpipes]

    def two(xs, fmt):
        return ", ".join(fmt.format(x) for x in xs)

    rows = [
        (f"full replication of night 1 ({mb(tree):.0f} MB logical), `replicate c --to B`, logical MB/s "
         "(tree_bytes / seconds)",
         f"**{med(rep_rates):.0f} MB/s** ({two(rep_rates, '{:.0f}')}; CLI wall {two(rep_walls, '{:.0f}')})",
         "≥ 200 MB/s", check(med(rep_rates) >= 200)),
        ("full replication of night 1, `send c \\| receive B c`, logical MB/s (wall)",
         f"**{med(pipe_rates):.0f} MB/s** ({two(pipe_rates, '{:.0f}')})", "≥ 200 MB/s",
         check(med(pipe_rates) >= 200)),
        (f"full replication of all {a.nights} nights ({mb(all_tree):.0f} MB logical), `replicate c --to B`, "
         "logical MB/s (tree_bytes / seconds)",
         f"**{med(all_rates):.0f} MB/s** ({two(all_rates, '{:.0f}')}; CLI wall {two(all_walls, '{:.0f}')})",
         "≥ 200 MB/s", check(med(all_rates) >= 200)),
        (f"full replication of all {a.nights} nights, `send c \\| receive B c`, logical MB/s (wall)",
         f"**{med(allpipe_rates):.0f} MB/s** ({two(allpipe_rates, '{:.0f}')})", "≥ 200 MB/s",
         check(med(allpipe_rates) >= 200)),
    ]
    for x in incs:
        w = med([y["r"]["wire_bytes"] for y in x["runs"]])
        rows.append((f"night {x['night']}: wire bytes / new unique stored bytes",
                     f"{x['ratio']:.2f}x ({mb(w):.2f} MB / {mb(x['new_stored']):.2f} MB)", "≤ 1.1x",
                     check(x["ratio"] <= 1.1)))
    rows.append(("incremental, mean over nights", f"**{mean_ratio:.2f}x**", "≤ 1.1x", check(mean_ratio <= 1.1)))
    rows.append(("time to resume after a cut (`kill -9` of the process group)",
                 f"**{med(res_secs):.2f} s** ({two(res_secs, '{:.2f} s')}; source unmounted "
                 f"{resume_u['r']['seconds']:.2f} s); overhead {two(res_over, '{:+.2f} s')} "
                 f"(unmounted {resume_u['overhead']:+.2f} s)",
                 "(report)", ""))

    cmd = " ".join(["python3 benches/replicate.py"] + sys.argv[1:])
    lines = [
        "## Replication",
        "",
        f"Command: `{cmd}` (as root, `DEDUPFS_BIN={BIN}`), {time.strftime('%Y-%m-%d %H:%M')}; whole run "
        f"{total / 60:.1f} min; binary `{version}` built {built}.",
        f"Machine: {machine()}; load average {load_start} at start, {load_end} at end (shared machine).",
        f"Workload: the standard corpus (`backup-corpus --versions {a.nights} --size-mb {a.size_mb} --format tar "
        f"--seed 7`), night N copied with `cp` as one more file next to the previous nights in container `c` "
        f"of a source store mounted with `-o gc_idle=0,prune_interval=0` (the replication runs in its daemon), "
        f"then `sync` and `dedupfs sync`. Targets are fresh stores on the same disk made with "
        f"`init --like SOURCE`, not mounted. Full replication of night 1 ({mb(tree):.0f} MB logical, one tar "
        f"file): the container holding only night 1, into a fresh target, page cache dropped before each run, "
        f"`replicate` twice and `send | receive` twice (median in bold). Full replication of all nights "
        f"({mb(all_tree):.0f} MB logical in {a.nights} tar files, {mb(final_stats['stored_bytes']):.0f} MB "
        f"stored in the source: the nights dedupe against each other, so logical MB/s is what a user of a "
        f"nightly-backup container sees): the same, after the last night was written. Incremental: night "
        f"N+1 written, the store's `stored_bytes` (`stats --json`, compressed bytes in packs) before and after "
        f"is the generation's new unique stored bytes, then `replicate` into both full targets (median "
        f"`wire_bytes` of the two, the bytes the sender wrote into the stream). Resume: `replicate c --to B "
        f"--bwlimit {BWLIMIT}` on a fresh target, `kill -9` of its process group after {cut_at:.1f} s "
        f"(half of max(full wire bytes / {BWLIMIT}, full-run seconds) = {expected:.1f} s), then "
        f"`replicate` without a limit, twice; once more with the source unmounted (the command "
        f"sends itself; cut at half of its own full run). No peer measured: borg and restic have no comparable "
        f"store-to-store replication of their own (copying their repositories is a file copy).",
        "",
        "| measure | dedupfs | target | |",
        "| --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    u = unmounted

    def cells(xs, fn):
        return " | ".join(fn(x) for x in xs)

    fr = full + allfull
    pr = pipes + allpipes
    lines += [
        "",
        "| full replication | night 1, run 1 | night 1, run 2 | all nights, run 1 | all nights, run 2 |",
        "| --- | --- | --- | --- | --- |",
        "| `replicate`: seconds (report) / CLI wall | "
        + cells(fr, lambda f: f"{f['r']['seconds']:.2f} / {f['wall']:.2f} s") + " |",
        "| `replicate`: logical (tree) bytes; chunks sent, chunk bytes (raw) → wire bytes | "
        + cells(fr, lambda f: f"{mb(f['r']['tree_bytes']):.1f} MB; {f['r']['chunks_sent']:,}, "
                              f"{mb(f['r']['chunk_bytes_sent']):.1f} → {mb(f['r']['wire_bytes']):.1f} MB") + " |",
        "| `replicate`: CPU seconds, source daemon + CLI (with its `serve`) | "
        + cells(fr, lambda f: f"{f['dcpu']:.1f} + {f['ccpu']:.1f}") + " |",
        "| `send \\| receive`: wall / wire bytes | "
        + cells(pr, lambda p: f"{p['wall']:.2f} s / {mb(p['r']['wire_bytes']):.1f} MB") + " |",
        "| `send \\| receive`: CPU seconds, source daemon + CLIs | "
        + cells(pr, lambda p: f"{p['dcpu']:.1f} + {p['ccpu']:.1f}") + " |",
        f"| `replicate` with the source unmounted (the CLI does it): seconds, MB/s, CPU | "
        f"{u['r']['seconds']:.2f} s, {rate(u['r']['tree_bytes'], u['r']['seconds']):.0f} MB/s, {u['ccpu']:.1f} s | | | |",
        "",
        "| night | written (logical) | new stored bytes (new unique raw bytes) | changed extents (logical_bytes) | chunks sent "
        "(raw bytes) | wire bytes | wire / new stored | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in incs:
        r0, r1 = x["runs"][0]["r"], x["runs"][1]["r"]
        lines.append(
            f"| {x['night']} | {mb(x['written']):.1f} MB | {mb(x['new_stored']):.2f} MB ({mb(x['new_unique']):.2f} MB) | "
            f"{mb(r0['logical_bytes']):.1f} MB | {r0['chunks_sent']:,} ({mb(r0['chunk_bytes_sent']):.2f} MB) | "
            f"{mb(r0['wire_bytes']):.2f}, {mb(r1['wire_bytes']):.2f} MB | {x['ratio']:.2f}x | "
            f"{r0['seconds']:.2f}, {r1['seconds']:.2f} |")
    lines += [
        "",
        "| resume after `kill -9` of the process group | run 1, source mounted | run 2, source mounted "
        "| source unmounted |",
        "| --- | --- | --- | --- |",
    ]

    def rc(key):
        return [key(x) for x in resumes + [resume_u]]

    lines += [
        "| cut after | " + " | ".join(rc(lambda x: f"{x.get('cut_at', cut_at):.1f} s"
                                         + (" (had finished)" if x["early"] else ""))) + " |",
        "| the source's mount daemon after the cut | " + " | ".join(
            [("**gone** ¹" if x["daemon_died"] else "alive") for x in resumes] + ["-"]) + " |",
        "| target's packs at the cut | " + " | ".join(rc(lambda x: f"{mb(x['packs_at_cut']):.1f} MB")) + " |",
        "| next run: `resumed` | " + " | ".join(rc(lambda x: str(x["r"]["resumed"]).lower())) + " |",
        "| next run: seconds (report) / wall | " + " | ".join(rc(lambda x: f"{x['r']['seconds']:.2f} / {x['wall']:.2f} s")) + " |",
        "| next run: chunk bytes sent of the full run's | " + " | ".join(rc(
            lambda x: f"{mb(x['r']['chunk_bytes_sent']):.1f} of {mb(full_chunk):.1f} MB "
                      f"({1 - x['r']['chunk_bytes_sent'] / full_chunk:.0%} not resent)")) + " |",
        "| resume overhead: seconds − chunk bytes sent / full-run rate "
        f"({mb(raw_rate):.0f} MB/s raw mounted, {mb(u_raw):.0f} MB/s unmounted) | "
        + " | ".join(rc(lambda x: f"{x['overhead']:+.2f} s")) + " |",
    ]
    early = [i + 1 for i, x in enumerate(resumes) if x["early"]]
    left = sum((x["left"] for x in resumes), [])
    notes = []
    if early:
        notes.append(f"Resume run(s) {early}: the rate-limited run had finished before the cut.")
    if left:
        notes.append(f"After the process-group kill, pid(s) {left} were still alive.")
    lines.append("")
    pk_rerun, pk_after = pk["rerun"], pk["after"]
    if pk["early"]:
        lines.append("`kill -9` of the replicate pid only: the run had finished before the cut.")
    else:
        lines.append(
            f"`kill -9` of the `replicate` pid only (not its process group), source mounted, after "
            f"{cut_at:.1f} s: its child "
            + ", ".join(f"`{c.replace(BIN, 'dedupfs')}`" for c in pk["cmdlines"].values())
            + (" stayed alive (and kept receiving from the daemon), " if pk["alive_after_kill"] else "exited, ")
            + f"a `replicate` started 0.3 s later exited {pk_rerun['_rc']}"
            + (f" (`{err_text(pk_rerun)}`; stderr `{pk_rerun['_stderr']}`)" if pk_rerun['_rc'] else
               f" (resumed {str(pk_rerun.get('resumed')).lower()}, {mb(pk_rerun.get('chunk_bytes_sent', 0)):.1f} MB of chunks sent)")
            + (f"; the orphaned children exited {pk['orphan_exit_after']:.1f} s later" if pk["alive_after_kill"] and not pk["orphan_still_alive"] else "")
            + (f"; {pk['orphan_still_alive']} still alive after 120 s" if pk["orphan_still_alive"] else "")
            + ("; the source's mount daemon was gone after that rerun ¹" if pk["daemon_died"] else "")
            + f"; the run after that exited {pk_after['_rc']}"
            + (f" (`{err_text(pk_after)}`)" if pk_after['_rc'] else
               f" with {pk_after.get('changes')} changes, {mb(pk_after.get('chunk_bytes_sent', 0)):.1f} MB of chunks sent, "
               f"resumed {str(pk_after.get('resumed')).lower()}")
            + ("" if pk_after['_rc'] or pk_after.get("changes") or pk_after.get("chunk_bytes_sent") else
               f" (base `{pk_after.get('base')}`: nothing was left to send, so the transfer the killed command "
               f"had started was finished and published without it, by the daemon and the orphaned `serve`)")
            + ".")
    lines += notes
    if min(res_over + [resume_u["overhead"]]) < 0:
        lines.append(
            "A negative resume overhead means the resumed run moved its chunks faster than the cold full "
            "runs the rate comes from (the cut run had just read the same packs into the page cache): "
            "no measurable cost to resume beyond sending what was missing.")
    if b.deaths:
        lines.append(
            f"¹ The source's mount daemon was gone after {len(b.deaths)} of the cuts: "
            + "; ".join(f"after {d['when']}, pid {d['pid']} no longer existed, `ls MNT` said "
                        f"`{d['ls'] or '(nothing)'}`, the last lines of its log were "
                        + " / ".join(f"`{l}`" for l in d["log"])
                        for d in b.deaths)
            + f". In a fresh daemon SIGPIPE is {sigpipe} (/proc/PID/status). The benchmark unmounted "
            "the dead mount (`umount -l`) and mounted the source again before the next run.")
    lines.append(
        f"Verified: the first night-1 target (after the incremental runs) and the first all-nights target, "
        f"mounted, each read back all {a.nights} nights identical to the corpus (`cmp`; "
        f"{len(replica_files['replica'])} and {len(replica_files['all-nights replica'])} files in their `c`); "
        f"`fsck --scrub` clean on the source ({fscks['source']['chunks']:,} chunks) and those two targets "
        f"({fscks['replica']['chunks']:,} and {fscks['all-nights replica']['chunks']:,} chunks). "
        f"Source store at the end: stored "
        f"{mb(final_stats['stored_bytes']):.1f} MB, unique {mb(final_stats['unique_bytes']):.1f} MB, logical "
        f"{mb(final_stats['logical_bytes']):.1f} MB.")
    lines.append("")
    with open("/var/tmp/dedupfs-bench-replicate.json", "w") as f:
        json.dump({"full": full, "pipes": pipes, "unmounted": unmounted, "resumes": resumes, "pidkill": pk,
                   "resume_unmounted": resume_u, "deaths": b.deaths, "fsck": fscks,
                   "incs": incs, "allfull": allfull, "allpipes": allpipes, "sigpipe": sigpipe},
                  f, indent=1, default=str)
    section = "\n".join(lines)
    print(section)
    write_section(a.out, "## Replication", section)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(e, file=sys.stderr)
        sys.exit(1)
