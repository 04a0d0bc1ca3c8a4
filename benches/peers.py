#!/usr/bin/env python3
"""dedupfs against the backup tools admins already use, on the same inputs in one run:
borg (default settings), borg with a 64 KiB chunker, restic, and a plain directory.

    python3 benches/peers.py [--work DIR] [--out BENCHMARKS.md] [--only standard|real]

Two workloads, each a sequence of full backups written as tar streams:
- *standard*: `backup-corpus --versions 5 --size-mb 256 --format tar --seed 7` (synthetic);
- *real*: four nightly full backups of a Python application server's site-packages, made
  from release wheels on PyPI that nobody here wrote (Django, NumPy, SymPy, pandas,
  botocore, SciPy): night 1 the base install, night 2 the same tree again (a repeat full
  backup), night 3 after patch upgrades of five packages, night 4 after minor-release
  upgrades of all six. The wheels are downloaded once into the work dir (pinned versions).

Per system: ingest MB/s of new data (night 1) and of repeat data (night 2), MB/s of the
upgrades (nights 3-4), reduction (logical bytes / bytes of the store or repository on disk,
metadata included; borg's and restic's client caches are not counted), cold restore MB/s of
the newest and the oldest backup (page cache dropped, dedupfs remounted), and peak RSS
(dedupfs: the daemon's VmHWM; borg, restic: the largest of their processes). Every ingest is
followed by `sync -f` of its destination. Within each night the systems run in a rotating
order, and so do the restores. Installs borg and restic from Debian's packages when they are missing.
"""
import argparse, os, shutil, subprocess, sys, time, zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the standard benchmark's helpers: DedupFs, corpus, sh, ...)

REAL = [
    ["Django==4.2", "numpy==1.26.0", "sympy==1.12", "pandas==2.1.0", "botocore==1.31.0", "scipy==1.11.1"],
    None,  # night 2: the same tree again
    ["Django==4.2.16", "numpy==1.26.4", "sympy==1.12", "pandas==2.1.4", "botocore==1.31.50", "scipy==1.11.4"],
    ["Django==5.1", "numpy==2.0.0", "sympy==1.13.0", "pandas==2.2.0", "botocore==1.34.0", "scipy==1.12.0"],
]


def ensure_peers():
    missing = [p for p, cmd in (("borgbackup", "borg"), ("restic", "restic")) if not shutil.which(cmd)]
    if missing:
        print(f"installing {' '.join(missing)} ...", flush=True)
        run.sh("apt-get update -qq")
        run.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(missing)}")


def real_corpus(work):
    """The real-data nights as tar files; returns their paths."""
    d = os.path.join(work, "real")
    wheels = os.path.join(d, "wheels")
    nights = [os.path.join(d, f"night{i + 1}.tar") for i in range(len(REAL))]
    if os.path.exists(os.path.join(d, "done")):
        return nights
    os.makedirs(wheels, exist_ok=True)
    pins = sorted({p for n in REAL if n for p in n})
    print(f"downloading {len(pins)} wheels from PyPI ...", flush=True)
    for p in pins:
        run.sh(f"{sys.executable} -m pip download -q --no-deps --only-binary :all: --python-version 3.11 "
               f"--implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "
               f"-d {wheels} '{p}'")
    have = os.listdir(wheels)
    prev = None
    for i, pkgs in enumerate(REAL):
        if pkgs is None:
            shutil.copyfile(prev, nights[i])
            continue
        tree = os.path.join(d, f"tree{i + 1}")
        shutil.rmtree(tree, ignore_errors=True)
        site = os.path.join(tree, "site-packages")
        os.makedirs(site)
        for p in pkgs:
            name, ver = p.split("==")
            w = [x for x in have if x.lower().startswith(f"{name.lower()}-{ver}-")]
            if len(w) != 1:
                raise SystemExit(f"wheel for {p}: found {w}")
            z = zipfile.ZipFile(os.path.join(wheels, w[0]))
            z.extractall(site)
            # Each file keeps the time the wheel gives it, as an installed file keeps its
            # mtime until it is upgraded: unchanged packages back up identically.
            for info in z.infolist():
                if not info.is_dir():
                    t = time.mktime(info.date_time + (0, 0, -1))
                    os.utime(os.path.join(site, info.filename), (t, t))
        for sub, _, _ in os.walk(site):
            os.utime(sub, (1704067200, 1704067200))  # directories: a fixed time, deterministic
        run.sh(f"tar --sort=name --owner=0 --group=0 -C {tree} -cf {nights[i]} site-packages")
        shutil.rmtree(tree)
        prev = nights[i]
    open(os.path.join(d, "done"), "w").close()
    return nights


def drop_caches():
    """Drops the page cache (no global `sync`: only the paths benchmarked are synced, each
    by its own ingest, so a stalled filesystem elsewhere cannot hang the run)."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed_rss(cmd):
    """Runs a shell command; returns (seconds, peak RSS in bytes of it and its children)."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t
    if status != 0:
        raise SystemExit(f"failed ({status}): {cmd}\n{p.stderr.read().decode()}")
    return secs, ru.ru_maxrss * 1024


class System:
    rss = 0

    def run(self, cmd):
        secs, rss = timed_rss(cmd)
        self.rss = max(self.rss, rss)
        return secs


class Plain(System):
    name = "plain dir"

    def __init__(self, work):
        self.dir = os.path.join(work, "plain")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)

    def ingest(self, src, night):
        return self.run(f"cp {src} {self.dir}/n{night}.tar && sync -f {self.dir}")

    def restore(self, night):
        return self.run(f"cat {self.dir}/n{night}.tar > /dev/null")

    def size(self):
        return run.du(self.dir)

    def close(self):
        shutil.rmtree(self.dir)


class Dedupfs(System):
    name = "dedupfs"

    def __init__(self, work):
        self.d = run.DedupFs(work)

    def ingest(self, src, night):
        return self.run(f"cp {src} {self.d.dest()}/n{night}.tar && sync -f {self.d.dest()}")

    def before_restores(self):
        self.rss = max(self.rss, self.d.peak_rss())
        self.d.umount()
        self.d.mount()

    def restore(self, night):
        return self.run(f"cat {self.d.dest()}/n{night}.tar > /dev/null")

    def size(self):
        self.st = self.d.stats()
        return run.du(self.d.store)

    def close(self):
        self.rss = max(self.rss, self.d.peak_rss())
        self.d.umount()
        shutil.rmtree(self.d.store)


class Borg(System):
    def __init__(self, work, name, chunker):
        self.name = name
        self.repo = os.path.join(work, name.replace(" ", "-"))
        self.env = (f"BORG_BASE_DIR={self.repo}-base BORG_PASSPHRASE= "
                    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes")
        self.chunker = f"--chunker-params {chunker}" if chunker else ""
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.repo + "-base", ignore_errors=True)
        run.sh(f"{self.env} borg init -e none {self.repo}")

    def ingest(self, src, night):
        # Read from stdin so that every night is the same path inside the archive.
        return self.run(f"{self.env} borg create {self.chunker} --stdin-name n.tar {self.repo}::n{night} - < {src} && sync -f {self.repo}")

    def restore(self, night):
        return self.run(f"{self.env} borg extract --stdout {self.repo}::n{night} > /dev/null")

    def size(self):
        return run.du(self.repo)

    def close(self):
        shutil.rmtree(self.repo)
        shutil.rmtree(self.repo + "-base", ignore_errors=True)


class Restic(System):
    name = "restic"

    def __init__(self, work):
        self.repo = os.path.join(work, "restic")
        self.env = f"RESTIC_PASSWORD=bench RESTIC_CACHE_DIR={self.repo}-cache"
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.repo + "-cache", ignore_errors=True)
        run.sh(f"{self.env} restic -q init -r {self.repo}")

    def ingest(self, src, night):
        return self.run(f"{self.env} restic -q -r {self.repo} backup --stdin --stdin-filename n.tar "
                        f"--tag n{night} < {src} && sync -f {self.repo}")

    def restore(self, night):
        return self.run(f"{self.env} restic -q -r {self.repo} dump --tag n{night} latest /n.tar > /dev/null")

    def size(self):
        return run.du(self.repo)

    def close(self):
        shutil.rmtree(self.repo)
        shutil.rmtree(self.repo + "-cache", ignore_errors=True)


def bench(work, nights, label):
    systems = [Plain(work), Dedupfs(work), Borg(work, "borg", None),
               Borg(work, "borg 64K", "buzhash,12,20,16,4095"), Restic(work)]
    sizes = [os.path.getsize(n) for n in nights]
    ing = {s.name: [0.0] * len(nights) for s in systems}
    for i, src in enumerate(nights):
        run.sh(f"cat {src} > /dev/null")  # every system reads its input from the page cache
        order = systems[i % len(systems):] + systems[:i % len(systems)]
        for s in order:
            print(f"  {label} night {i + 1}: {s.name} ...", flush=True)
            ing[s.name][i] = s.ingest(src, i + 1)
    on_disk = {s.name: s.size() for s in systems}
    for s in systems:
        if hasattr(s, "before_restores"):
            s.before_restores()
    rest = {s.name: {} for s in systems}
    last = len(nights)
    for j, night in enumerate((last, 1, last, 1)):
        order = systems[j % len(systems):] + systems[:j % len(systems)]
        for s in order:
            drop_caches()
            secs = s.restore(night)
            rest[s.name].setdefault(night, []).append(secs)
    dd = next(s for s in systems if s.name == "dedupfs")
    st = dd.st
    for s in systems:
        s.close()
    logical = sum(sizes)
    out = []
    for s in systems:
        def rate(idx):
            return run.mb(sum(sizes[k] for k in idx)) / sum(ing[s.name][k] for k in idx)
        newest = run.mb(sizes[-1]) / min(rest[s.name][last])
        oldest = run.mb(sizes[0]) / min(rest[s.name][1])
        out.append({
            "name": s.name, "new": rate([0]), "repeat": rate([1]), "upgrades": rate(range(2, len(nights))),
            "reduction": logical / on_disk[s.name], "newest": newest, "oldest": oldest, "rss": s.rss,
        })
    return out, logical, st


def table(rows):
    by = {r["name"]: r for r in rows}
    dd, plain = by["dedupfs"], by["plain dir"]
    peers = [r for r in rows if r["name"] not in ("dedupfs", "plain dir")]
    best_red = max(peers, key=lambda r: r["reduction"])
    lines = ["| system | ingest new | ingest repeat | ingest upgrades | reduction | restore newest | restore oldest | peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['new']:.0f} MB/s | {r['repeat']:.0f} MB/s | {r['upgrades']:.0f} MB/s | "
                     f"{r['reduction']:.2f}x | {r['newest']:.0f} MB/s | {r['oldest']:.0f} MB/s | {r['rss'] / 2**20:.0f} MiB |")

    def check(ok):
        return "met" if ok else "**not met**"
    t = [
        ("reduction vs best peer", dd["reduction"] / best_red["reduction"], f"{best_red['name']}", 1.0),
        ("restore newest / oldest", dd["newest"] / dd["oldest"], "dedupfs oldest", 0.9),
        ("restore newest vs borg extract", dd["newest"] / by["borg"]["newest"], "borg", 1.5),
        ("restore newest vs plain dir", dd["newest"] / plain["newest"], "plain dir", 0.7),
        ("ingest new vs borg 64K", dd["new"] / by["borg 64K"]["new"], "borg 64K", 2.0),
        ("ingest repeat vs borg", dd["repeat"] / by["borg"]["repeat"], "borg", 2.0),
    ]
    lines += ["", "| target | ratio | against | needed | |", "| --- | --- | --- | --- | --- |"]
    for name, ratio, against, need in t:
        lines.append(f"| {name} | {ratio:.3f}x | {against} | ≥ {need}x | {check(ratio >= need)} |")
    lines.append(f"| daemon peak RSS | {dd['rss'] / 2**20:.0f} MiB | | ≤ 256 MiB | {check(dd['rss'] <= 256 * 2**20)} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/var/tmp/dedupfs-peers")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
    ap.add_argument("--only", choices=["standard", "real"])
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches and allow_other need it)")
    ensure_peers()
    os.makedirs(a.work, exist_ok=True)
    started = time.monotonic()
    lines = ["## Against borg and restic", "",
             f"Command: `python3 benches/peers.py{' --only ' + a.only if a.only else ''}` (as root), "
             f"{time.strftime('%Y-%m-%d %H:%M')}; {run.sh('borg --version').strip()}, "
             f"{run.sh('restic version').split(' compiled')[0].strip()}, {run.sh(run.DEDUPFS + ' --version').strip()}.",
             f"Machine: {run.machine()}.", ""]
    work = [("real", "Real data: four nightly full backups of a site-packages tree built from PyPI release wheels "
                     "(night 2 repeats night 1; nights 3-4 are patch and minor upgrades)", lambda: real_corpus(a.work)),
            ("standard", "Standard corpus: `backup-corpus --versions 5 --size-mb 256 --format tar --seed 7`; "
                         "'repeat' is version 2, 'upgrades' versions 3-5", lambda: run.corpus(a.work, 256, 5)[0])]
    for key, desc, make in work:
        if a.only and a.only != key:
            continue
        nights = make()
        print(f"{key} workload ...", flush=True)
        rows, logical, st = bench(a.work, nights, key)
        lines += [f"### {desc}", "", f"{run.mb(logical):.0f} MB logical in {len(nights)} tar streams. "
                  f"dedupfs store: dedup {st['ingest']['dedup_ratio']:.2f}x, compression {st['ingest']['compression_ratio']:.2f}x, "
                  f"metadata {run.mb(st['metadata_bytes']):.1f} MB.", ""]
        lines += table(rows) + [""]
    lines.append(f"Whole run {(time.monotonic() - started) / 60:.1f} min. Reduction = logical bytes / bytes of the store or "
                 "repository on disk. Restore = `cat` from the mount, `borg extract --stdout`, `restic dump`, to /dev/null, "
                 "best of two, page cache dropped before each.")
    section = "\n".join(lines) + "\n"
    print(section)
    run.write_section(a.out, "## Against borg and restic", section)


if __name__ == "__main__":
    main()
