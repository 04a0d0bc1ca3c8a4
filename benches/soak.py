#!/usr/bin/env python3
"""Crash soak: proof that nothing acknowledged is lost, at a scale CI cannot afford.

Each round mounts the store, runs a mixed workload for a random while — files written and
fsynced, append-only logs fsynced after every record, the write-tmp/fsync/rename/fsync-dir
pattern of databases and package managers, GC running online, rollbacks and snapshots in a
separate container — then kills the daemon with SIGKILL at a random moment, remounts, checks
every acknowledged byte and runs `fsck`. A loss is an fsync'ed file (or log prefix, or
renamed file) that does not read back exactly, or an fsck that is not clean.

    python3 benches/soak.py [--rounds 1000] [--bin PATH] [--work DIR] [--seed N] [--out BENCHMARKS.md]

Prints one line per round and the totals; writes the "Crash soak" section of BENCHMARKS.md.
Stops at the first loss with everything needed to look (the store is kept).
"""

import argparse, hashlib, json, os, random, shutil, signal, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from run import machine, write_section  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/dedupfs-target")


def run(cmd, check=True):
    p = subprocess.run(cmd, shell=True, text=True, capture_output=True)
    if check and p.returncode != 0:
        raise SystemExit(f"FAILED (exit {p.returncode}): {cmd}\n{p.stdout}\n{p.stderr}")
    return p


class Soak:
    def __init__(self, a):
        self.bin, self.work, self.rng = a.bin, a.work, random.Random(a.seed)
        self.store = os.path.join(a.work, "store")
        self.mnt = os.path.join(a.work, "mnt")
        # What was acknowledged: path -> the SHA-256s it may hold (one, or two while a
        # rename replacing it is not yet durable); log path -> (length, sha of that prefix).
        self.files, self.logs = {}, {}
        self.lock = threading.Lock()
        self.acked = self.verified_bytes = self.losses = 0
        self.gc_runs = self.rollbacks = 0
        self.kill_after = []

    def cli(self, *args, check=True):
        return run(" ".join([self.bin, "--store", self.store] + list(args)), check)

    def mount(self):
        run(f"{self.bin} mount {self.store} {self.mnt} -o gc_idle=0,prune_interval=0,lock_wait=30")

    def pid(self):
        return int(open(os.path.join(self.store, "lock")).read().split()[1])

    def kill9(self):
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        fd = os.pidfd_open(pid)
        try:
            import select
            select.select([fd], [], [], 60)
        finally:
            os.close(fd)
        run(f"umount -l {self.mnt}", check=False)

    # --- the workload (runs in threads; the harness itself is never killed) ----------
    def data_files(self, stop, rng):
        d = os.path.join(self.mnt, "c", "data")
        while not stop.is_set():
            name = os.path.join(d, f"f{rng.randrange(200)}")
            data = rng.randbytes(rng.choice([4096, 60_000, 300_000, 1_500_000]))
            # Rewriting in place promises nothing until the fsync returns.
            with self.lock:
                self.files.pop(name, None)
            try:
                with open(name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                return  # the daemon is gone
            with self.lock:
                self.files[name] = {hashlib.sha256(data).hexdigest()}
                self.acked += 1

    def append_logs(self, stop, rng):
        while not stop.is_set():
            name = os.path.join(self.mnt, "c", "logs", f"log{rng.randrange(4)}")
            rec = f"{time.time_ns()} {rng.random()}\n".encode() * rng.randrange(1, 50)
            try:
                with open(name, "ab") as f:
                    f.write(rec)
                    f.flush()
                    os.fsync(f.fileno())
                with open(name, "rb") as f:
                    whole = f.read()
            except OSError:
                return
            with self.lock:
                self.logs[name] = (len(whole), hashlib.sha256(whole).hexdigest())
                self.acked += 1

    def tmp_rename(self, stop, rng):
        d = os.path.join(self.mnt, "c", "db")
        while not stop.is_set():
            final = os.path.join(d, f"state{rng.randrange(20)}")
            tmp = final + ".tmp"
            data = rng.randbytes(rng.randrange(1, 200_000))
            new = hashlib.sha256(data).hexdigest()
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                # Until the directory is synced, the rename may or may not survive a crash.
                with self.lock:
                    if final in self.files:
                        self.files[final] = self.files[final] | {new}
                os.rename(tmp, final)
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                return
            with self.lock:
                self.files[final] = {new}
                self.acked += 1

    def gc_loop(self, stop, rng):
        while not stop.is_set():
            p = self.cli("gc", "--grace", "0", "--min-reclaim", "0.05", check=False)
            if p.returncode == 0:
                self.gc_runs += 1
            else:
                return

    def history_loop(self, stop, rng):
        d = os.path.join(self.mnt, "r")
        n = 0
        while not stop.is_set():
            n += 1
            try:
                with open(os.path.join(d, f"x{rng.randrange(30)}"), "wb") as f:
                    f.write(rng.randbytes(rng.randrange(1, 100_000)))
            except OSError:
                return
            if n % 5 == 0:
                if self.cli("bookmark", "create", "r", f"b{time.time_ns()}", check=False).returncode != 0:
                    return
            if n % 7 == 0:
                marks = self.cli("--json", "bookmark", "list", "r", check=False)
                if marks.returncode != 0:
                    return
                names = [b["name"] for b in json.loads(marks.stdout)]
                if names:
                    if self.cli("rollback", "r", "--to", rng.choice(names), check=False).returncode != 0:
                        return
                    self.rollbacks += 1

    # --- one round -------------------------------------------------------------------
    def round(self, i):
        self.mount()
        for d in ["c", "c/data", "c/logs", "c/db", "r"]:
            os.makedirs(os.path.join(self.mnt, d), exist_ok=True)
        stop = threading.Event()
        work = [self.data_files, self.append_logs, self.tmp_rename, self.gc_loop, self.history_loop]
        ts = [threading.Thread(target=w, args=(stop, random.Random(self.rng.random()))) for w in work]
        for t in ts:
            t.start()
        wait = self.rng.uniform(0.3, 3.0)
        self.kill_after.append(wait)
        time.sleep(wait)  # the random kill moment (what is being tested, not hoped for)
        self.kill9()
        stop.set()
        for t in ts:
            t.join()
        self.mount()
        lost = []
        for path, want in list(self.files.items()):
            try:
                got = hashlib.sha256(open(path, "rb").read()).hexdigest()
            except OSError as e:
                got = f"error {e}"
            if got not in want:
                lost.append(f"{path}: {got}")
            else:
                self.files[path] = {got}
                self.verified_bytes += os.path.getsize(path)
        for path, (n, want) in list(self.logs.items()):
            try:
                with open(path, "rb") as f:
                    prefix = f.read(n)
            except OSError as e:
                prefix = b""
                lost.append(f"{path}: {e}")
            if len(prefix) != n or hashlib.sha256(prefix).hexdigest() != want:
                lost.append(f"{path}: acknowledged prefix of {n} bytes differs")
            else:
                self.verified_bytes += n
        fsck = self.cli("--json", "fsck", check=False)
        if fsck.returncode != 0:
            lost.append(f"fsck: {fsck.stdout[-2000:]}")
        run(f"{self.bin} umount {self.mnt}")
        self.losses += len(lost)
        print(
            f"round {i}: killed after {wait:.2f} s; acknowledged {self.acked} ops so far, "
            f"{len(self.files)} files and {len(self.logs)} logs checked, gc runs {self.gc_runs}, "
            f"rollbacks {self.rollbacks}, losses {len(lost)}",
            flush=True,
        )
        if lost:
            raise SystemExit("LOSS in round %d (store kept at %s):\n%s" % (i, self.store, "\n".join(lost[:20])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--bin", default=os.path.join(TARGET, "release", "dedupfs"))
    ap.add_argument("--work", default="/var/tmp/dedupfs-soak")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    a = ap.parse_args()
    if os.path.ismount(os.path.join(a.work, "mnt")):
        run(f"umount -l {os.path.join(a.work, 'mnt')}", check=False)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(os.path.join(a.work, "mnt"))
    s = Soak(a)
    run(f"{a.bin} init {s.store}")
    t0 = time.monotonic()
    for i in range(1, a.rounds + 1):
        s.round(i)
    took = time.monotonic() - t0
    print(f"{a.rounds} rounds, {s.acked} acknowledged operations, {s.verified_bytes} bytes verified, {s.losses} losses")
    cmd = f"python3 benches/soak.py --rounds {a.rounds} --seed {a.seed}"
    section = f"""## Crash soak

Command: `{cmd}` (as root), {time.strftime('%Y-%m-%d %H:%M')}; {took / 60:.0f} min.
Machine: {machine()}.
Each round: mount; five concurrent workloads — data files written and fsynced (4 KB to 1.5 MB),
append-only logs fsynced after every record, the write-tmp/fsync/rename/fsync-dir pattern,
`gc --grace 0 --min-reclaim 0.05` in a loop, writes, bookmarks and rollbacks in a second container;
SIGKILL of the daemon after a random 0.3–3 s; remount; every acknowledged file, log prefix and
renamed file read back and compared by SHA-256; `fsck` must be clean.

| rounds | acknowledged operations | bytes verified (sum over rounds) | GC runs | rollbacks | losses | fsck failures |
| --- | --- | --- | --- | --- | --- | --- |
| {a.rounds} | {s.acked} | {s.verified_bytes} | {s.gc_runs} | {s.rollbacks} | {s.losses} | 0 |
"""
    write_section(a.out, "## Crash soak", section)


if __name__ == "__main__":
    main()
