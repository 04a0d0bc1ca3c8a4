#!/usr/bin/env python3
"""SMB throughput: `smbclient` put and get of backup tars through a Samba share of a dedupfs
container, against the same share options on a plain directory of the same disk.

    python3 benches/smb.py [--rounds 3] [--size-mb 256] [--bin PATH]

Starts its own smbd on 127.0.0.1 (two shares, `dd` on a container of a fresh mount and
`plain` on /var/tmp; the share options of docs/exports.md), generates the standard corpus
(three nightly tars), and in interleaved rounds puts every tar into each share and gets it
back (caches dropped before each get), timing each whole `smbclient` call. Checks the data
read back. Writes the "SMB" section of BENCHMARKS.md. Needs root; installs samba and
smbclient from apt when missing.
"""
import argparse, filecmp, os, shutil, signal, socket, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402

CLIENTS = os.path.join(run.ROOT, "tests", "clients")


def smb_conf(d, shares):
    """The export tests' smbd configuration (tests/clients/*.conf.in) with `shares`."""
    for sub in ("run", "lock", "state", "cache", "private", "ncalrpc"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    conf = open(os.path.join(CLIENTS, "smb.conf.in")).read().replace("@DIR@", d)
    share = open(os.path.join(CLIENTS, "smb-share.conf.in")).read()
    for name, path in shares.items():
        conf += share.replace("@NAME@", name).replace("@PATH@", path)
    p = os.path.join(d, "smb.conf")
    open(p, "w").write(conf)
    return p


def wait_port(port, proc):
    t0 = time.monotonic()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                sys.exit("smbd did not start")
            time.sleep(0.05)


def smbclient(share, cwd, cmd):
    t = time.monotonic()
    subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-U", "root%pw", "-c", cmd],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=run.DEDUPFS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--work", default="/var/tmp/dedupfs-smb")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (smbd on port 445, drop_caches)")
    if not (shutil.which("smbd") and shutil.which("smbclient")):
        run.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends samba smbclient")
    tars, _ = run.corpus(os.path.join("/var/tmp/dedupfs-meta", "corpus"), a.size_mb, 3)
    shutil.rmtree(a.work, ignore_errors=True)
    store, mnt, plain, srv, back = (os.path.join(a.work, x) for x in ("store", "mnt", "plain", "srv", "back"))
    for d in (mnt, plain, srv, back):
        os.makedirs(d)
    os.chmod(a.work, 0o755)
    b = a.bin
    run.sh(f"{b} init {store}")
    run.sh(f"{b} mount {store} {mnt} -o allow_other,gc_idle=0,prune_interval=0")
    smbd = None
    try:
        run.sh(f"{b} --store {store} container create c")
        conf = smb_conf(srv, {"dd": f"{mnt}/c", "plain": plain})
        run.sh(f"(echo pw; echo pw) | smbpasswd -c {conf} -a -s root > /dev/null")
        smbd = subprocess.Popen(["smbd", "--foreground", "--no-process-group", "-s", conf],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(445, smbd)
        total = sum(os.path.getsize(t) for t in tars)
        res = {(s, op): [] for s in ("dd", "plain") for op in ("put", "get")}
        for r in range(a.rounds):
            for share in (("dd", "plain") if r % 2 == 0 else ("plain", "dd")):
                put = 0.0
                for t in tars:
                    put += smbclient(share, os.path.dirname(t), f"put {os.path.basename(t)} r{r}-{os.path.basename(t)}")
                run.sh(f"sync -f {mnt} {plain}")
                run.drop_caches()
                get = 0.0
                for t in tars:
                    name = f"r{r}-{os.path.basename(t)}"
                    get += smbclient(share, back, f"get {name}")
                    assert filecmp.cmp(t, os.path.join(back, name), shallow=False), f"{share}: {name} differs"
                    os.remove(os.path.join(back, name))
                res[(share, "put")].append(total / put / 1e6)
                res[(share, "get")].append(total / get / 1e6)
                print(f"round {r + 1} {share}: put {total / put / 1e6:.0f} MB/s, get {total / get / 1e6:.0f} MB/s", flush=True)
        med = {k: statistics.median(v) for k, v in res.items()}
        rows = []
        for op in ("put", "get"):
            dd, pl = med[("dd", op)], med[("plain", op)]
            each = ", ".join(f"{x:.0f}" for x in res[("dd", op)])
            rows.append(f"| {op} | {dd:.0f} ({each}) | {pl:.0f} | {dd / pl:.2f}x |")
        section = f"""## SMB

Command: `python3 benches/smb.py --rounds {a.rounds} --size-mb {a.size_mb}` (as root), {time.strftime('%Y-%m-%d %H:%M')}.
Machine: {run.machine()}.
`smbclient` (SMB3) over 127.0.0.1 to one smbd with two shares of the same options
(docs/exports.md): a container of a dedupfs mount and a plain directory on the same disk.
Each round puts the corpus's {len(tars)} nightly tars ({total / 1e6:.0f} MB) into a share, syncs, drops
caches and gets them back (checked byte for byte); the shares alternate in order. MB/s,
median of the rounds (dedupfs's every round in brackets).

| operation | dedupfs share | plain share | ratio |
| --- | --- | --- | --- |
""" + "\n".join(rows) + "\n"
        print(section)
        run.write_section(a.out, "## SMB", section)
    finally:
        if smbd:
            smbd.send_signal(signal.SIGTERM)
            try:
                smbd.wait(20)
            except subprocess.TimeoutExpired:
                smbd.kill()
                smbd.wait()
        run.sh(f"{b} umount {mnt}")


if __name__ == "__main__":
    main()
