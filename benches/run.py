#!/usr/bin/env python3
"""dedupfs benchmark: ingest, read and untar through a real mount, against two baselines
measured in the same run — a plain directory on the same disk and a null FUSE filesystem
(benches/src/nullfs.rs, same kernel settings as dedupfs) that measures the FUSE ceiling.

    python3 benches/run.py [--size-mb 256] [--versions 5] [--out BENCHMARKS.md] [--work DIR]

Workload: the standard backup corpus (benches/backup-corpus --format tar --seed 7), each
nightly version a tar stream copied with cp then sync; the tree format (many small files)
tarred once and extracted with tar. Results go to the "Latest run" section of the output
file (the rest of the file is kept).
"""
import argparse, json, os, platform, re, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/dedupfs-target")
DEDUPFS = os.path.join(TARGET, "release", "dedupfs")
NULLFS = os.path.join(TARGET, "release", "nullfs")


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def timed(cmd):
    t = time.monotonic()
    sh(cmd)
    return time.monotonic() - t


def drop_caches():
    sh("sync")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def du(path):
    return int(sh(f"du -sb {path}").split()[0])


def mb(n):
    return n / 1e6


def corpus(work, size_mb, versions):
    d = os.path.join(work, f"corpus-{size_mb}-{versions}")
    if not os.path.exists(os.path.join(d, "done")):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        gen = os.path.join(ROOT, "benches", "backup-corpus")
        print(f"generating corpus in {d} ...", flush=True)
        sh(f"{gen} --out {d}/tar --versions {versions} --size-mb {size_mb} --format tar --seed 7")
        sh(f"{gen} --out {d}/tree --versions 1 --size-mb {size_mb} --format tree --seed 7")
        sh(f"tar -C {d}/tree -cf {d}/tree.tar v001")
        open(os.path.join(d, "done"), "w").close()
    tars = sorted(os.path.join(d, "tar", f) for f in os.listdir(os.path.join(d, "tar")))
    return tars, os.path.join(d, "tree.tar")


class Target:
    """A place to write to: a plain directory or a mount."""

    def __init__(self, name, path):
        self.name, self.path = name, path

    def dest(self):
        return self.path


class DedupFs(Target):
    def __init__(self, work):
        self.store = os.path.join(work, "store")
        self.mnt = os.path.join(work, "mnt-dedupfs")
        shutil.rmtree(self.store, ignore_errors=True)
        os.makedirs(self.mnt, exist_ok=True)
        sh(f"{DEDUPFS} init {self.store}")
        self.mount()
        sh(f"{DEDUPFS} --store {self.store} container create nightly")
        super().__init__("dedupfs", os.path.join(self.mnt, "nightly"))

    def mount(self):
        sh(f"{DEDUPFS} mount {self.store} {self.mnt} -o allow_other")

    def umount(self):
        sh(f"{DEDUPFS} umount {self.mnt}")

    def pid(self):
        return int(open(os.path.join(self.store, "lock")).read().split()[1])

    def peak_rss(self):
        for line in open(f"/proc/{self.pid()}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stats(self):
        return json.loads(sh(f"{DEDUPFS} --store {self.store} stats --json"))


class NullFs(Target):
    def __init__(self, work):
        self.mnt = os.path.join(work, "mnt-null")
        os.makedirs(self.mnt, exist_ok=True)
        self.proc = subprocess.Popen([NULLFS, self.mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until the kernel shows the mount (the FUSE handshake is done then).
        for _ in range(500):
            if self.mnt in sh("cat /proc/self/mounts"):
                break
            time.sleep(0.01)
        else:
            raise SystemExit("nullfs did not mount")
        super().__init__("null FUSE", self.mnt)

    def close(self):
        sh(f"umount {self.mnt}")
        self.proc.wait()


BIGDIR = 100_000


def bigdir(path):
    """A directory of 100,000 empty files: seconds to create them, to list them, and to look
    up 10,000 of them by name."""
    import random
    os.makedirs(path)
    t = time.monotonic()
    for i in range(BIGDIR):
        os.close(os.open(os.path.join(path, f"entry-{i:06d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    create = time.monotonic() - t
    sh("sync")
    t = time.monotonic()
    n = len(os.listdir(path))
    listing = time.monotonic() - t
    assert n == BIGDIR, n
    rng = random.Random(1)
    t = time.monotonic()
    for _ in range(10_000):
        os.stat(os.path.join(path, f"entry-{rng.randrange(BIGDIR):06d}"))
    lookups = time.monotonic() - t
    return create, listing, lookups


def ingest(target, tars):
    """Copies each version with cp, then sync; returns seconds per version."""
    out = []
    for t in tars:
        out.append(timed(f"cp {t} {target.dest()}/ && sync"))
    return out


def read_all(target, tars):
    names = " ".join(os.path.join(target.dest(), os.path.basename(t)) for t in tars)
    return timed(f"cat {names} > /dev/null")


def write_section(path, title, section):
    """Replaces the section starting with `title` in BENCHMARKS.md (or appends it)."""
    old = open(path).read() if os.path.exists(path) else "# dedupfs benchmarks\n\n"
    if title in old:
        head, _, rest = old.partition(title)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = head + section + "\n" + tail
    else:
        new = old.rstrip() + "\n\n" + section
    with open(path, "w") as f:
        f.write(new)


def machine():
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read())
    mem = int(re.search(r"MemTotal:\s*(\d+)", open("/proc/meminfo").read()).group(1)) // 1024
    disk = sh("df -h --output=source,fstype,size /var/tmp | tail -1").split()
    return f"{os.cpu_count()} cores ({cpu.group(1) if cpu else '?'}), {mem} MiB RAM, kernel {platform.release()}, /var/tmp on {disk[0]} ({disk[1]}, {disk[2]})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--work", default="/var/tmp/dedupfs-bench")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches and allow_other need it)")
    os.makedirs(a.work, exist_ok=True)
    tars, tree_tar = corpus(a.work, a.size_mb, a.versions)
    sizes = [os.path.getsize(t) for t in tars]
    logical = sum(sizes)

    plain_dir = os.path.join(a.work, "plain")
    shutil.rmtree(plain_dir, ignore_errors=True)
    os.makedirs(plain_dir)
    plain = Target("plain directory", plain_dir)
    res = {}

    print("plain directory ...", flush=True)
    res["plain_ingest"] = ingest(plain, tars)
    drop_caches()
    res["plain_cold"] = read_all(plain, tars)
    res["plain_warm"] = read_all(plain, tars)
    os.makedirs(os.path.join(plain_dir, "untar"))
    drop_caches()
    res["plain_untar"] = timed(f"tar -C {plain_dir}/untar -xf {tree_tar} && sync")
    res["plain_bigdir"] = bigdir(os.path.join(plain_dir, "bigdir"))

    print("null FUSE ...", flush=True)
    null = NullFs(a.work)
    res["null_ingest"] = ingest(null, tars)
    null.close()

    print("dedupfs ...", flush=True)
    d = DedupFs(a.work)
    res["dd_ingest"] = ingest(d, tars)
    st = d.stats()
    d.umount()  # cold: a fresh daemon (empty chunk cache) and dropped page cache
    store_bytes = du(d.store)  # the reduction counts the tar streams only, not the untar below
    drop_caches()
    d.mount()
    res["dd_cold"] = read_all(d, tars)
    res["dd_warm"] = read_all(d, tars)
    os.makedirs(os.path.join(d.dest(), "untar"))
    drop_caches()
    res["dd_untar"] = timed(f"tar -C {d.dest()}/untar -xf {tree_tar} && sync")
    sh(f"diff -r {plain_dir}/untar {d.dest()}/untar")
    res["dd_bigdir"] = bigdir(os.path.join(d.dest(), "bigdir"))
    sh(f"cmp {tars[-1]} {d.dest()}/{os.path.basename(tars[-1])}")
    rss = d.peak_rss()
    d.umount()

    def rate(n, s):
        return mb(n) / s

    v1 = (rate(sizes[0], res["dd_ingest"][0]), rate(sizes[0], res["null_ingest"][0]), rate(sizes[0], res["plain_ingest"][0]))
    rest_b = sum(sizes[1:])
    vr = (rate(rest_b, sum(res["dd_ingest"][1:])), rate(rest_b, sum(res["null_ingest"][1:])), rate(rest_b, sum(res["plain_ingest"][1:])))
    cold = (rate(logical, res["dd_cold"]), rate(logical, res["plain_cold"]))
    warm = (rate(logical, res["dd_warm"]), rate(logical, res["plain_warm"]))
    reduction = logical / store_bytes
    untar_ratio = res["dd_untar"] / res["plain_untar"]

    def check(ok):
        return "met" if ok else "**not met**"

    rows = [
        ("ingest v1 (new data)", f"{v1[0]:.0f} MB/s", f"{v1[1]:.0f} MB/s", f"{v1[2]:.0f} MB/s", f"{v1[0]/v1[1]:.2f}x null", "≥ 0.5x null", check(v1[0] / v1[1] >= 0.5)),
        (f"ingest v2..v{a.versions} (repeat data)", f"{vr[0]:.0f} MB/s", f"{vr[1]:.0f} MB/s", f"{vr[2]:.0f} MB/s", f"{vr[0]/vr[1]:.2f}x null", "≥ 0.8x null", check(vr[0] / vr[1] >= 0.8)),
        ("read, cold", f"{cold[0]:.0f} MB/s", "-", f"{cold[1]:.0f} MB/s", f"{cold[0]/cold[1]:.2f}x plain", "≥ 0.7x plain", check(cold[0] / cold[1] >= 0.7)),
        ("read, warm", f"{warm[0]:.0f} MB/s", "-", f"{warm[1]:.0f} MB/s", f"{warm[0]/warm[1]:.2f}x plain", "", ""),
        ("untar tree (many small files)", f"{res['dd_untar']:.2f} s", "-", f"{res['plain_untar']:.2f} s", f"{untar_ratio:.2f}x plain time", "≤ 3x plain", check(untar_ratio <= 3)),
        ("100,000-entry directory: create", f"{res['dd_bigdir'][0]:.1f} s", "-", f"{res['plain_bigdir'][0]:.1f} s", f"{res['dd_bigdir'][0]/res['plain_bigdir'][0]:.1f}x plain time", "", ""),
        ("100,000-entry directory: list", f"{res['dd_bigdir'][1]*1000:.0f} ms", "-", f"{res['plain_bigdir'][1]*1000:.0f} ms", f"{res['dd_bigdir'][1]/res['plain_bigdir'][1]:.1f}x plain time", "", ""),
        ("100,000-entry directory: 10,000 lookups", f"{res['dd_bigdir'][2]*1000:.0f} ms", "-", f"{res['plain_bigdir'][2]*1000:.0f} ms", f"{res['dd_bigdir'][2]/res['plain_bigdir'][2]:.1f}x plain time", "", ""),
        ("reduction (logical / store on disk)", f"{reduction:.2f}x", "-", "1.00x", "", "≥ 5.7x", check(reduction >= 5.7)),
        ("daemon peak RSS", f"{rss/2**20:.0f} MiB", "-", "-", "", "≤ 256 MiB", check(rss <= 256 * 2**20)),
    ]
    cmd = f"python3 benches/run.py --size-mb {a.size_mb} --versions {a.versions}"
    lines = [
        "## Latest run",
        "",
        f"Command: `{cmd}` (as root), {time.strftime('%Y-%m-%d %H:%M')}.",
        f"Machine: {machine()}.",
        f"Corpus: `backup-corpus --versions {a.versions} --size-mb {a.size_mb} --format tar --seed 7`, "
        f"{mb(logical):.0f} MB logical in {a.versions} tar streams; untar: the same corpus's first version "
        f"as a tree ({sh(f'tar -tf {tree_tar} | wc -l').strip()} entries).",
        "",
        "| measure | dedupfs | null FUSE | plain dir | ratio | target | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        f"Store after ingest: {mb(store_bytes):.1f} MB on disk (packs {mb(st['pack_bytes']):.1f} MB, metadata "
        f"{mb(st['metadata_bytes']):.1f} MB); unique {mb(st['unique_bytes']):.1f} MB, stored {mb(st['stored_bytes']):.1f} MB; "
        f"dedup {st['ingest']['dedup_ratio']:.2f}x, compression {st['ingest']['compression_ratio']:.2f}x (of what was written).",
        "Per-version ingest seconds — dedupfs: " + ", ".join(f"{x:.2f}" for x in res["dd_ingest"])
        + "; null: " + ", ".join(f"{x:.2f}" for x in res["null_ingest"])
        + "; plain: " + ", ".join(f"{x:.2f}" for x in res["plain_ingest"]) + ".",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    write_section(a.out, "## Latest run", section)


if __name__ == "__main__":
    main()
