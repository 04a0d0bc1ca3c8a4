#!/usr/bin/env python3
"""A per-test time budget for fstests' ./check, which has none: watchdog.py SECONDS LOG [MNT...]

Finds test scripts (`bash .../tests/<dir>/<nnn>`) in /proc; one running past SECONDS has its
descendants killed, then itself (SIGTERM, so its cleanup trap runs; 30 s later SIGKILL); if it
still hangs 30 s after that (a stuck FUSE request), the FUSE connections of the MNTs are aborted
through fusectl (/sys/fs/fuse/connections/NN/abort). Exits when its parent exits.

It never touches the MNTs themselves (no stat, listdir or ismount): on a hung FUSE mount that
would hang the watchdog too. A mount's connection number comes from /proc/self/mountinfo, and
of other processes only /proc/PID/stat is read, plus the cmdline of possible test shells."""
import os, re, signal, sys, time

test_re = re.compile(r"(?:^|/)tests/([a-z0-9]+/\d+)$")
logf = os.devnull  # the LOG argument


def note(msg):
    with open(logf, "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def table():
    """pid -> (ppid, argv); argv only for a possible test shell, else []. A test runs as
    `exec ./tests/generic/001`, so its shell's comm is the test's number; other processes'
    cmdline is not read (reading it takes their mm lock, which one stuck on FUSE may hold)."""
    t = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = read(f"/proc/{p}/stat")
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
            argv = []
            if comm[:1].isdigit() or comm == "bash":
                argv = [x.decode(errors="replace") for x in read(f"/proc/{p}/cmdline", "rb").split(b"\0")]
            t[int(p)] = (int(rest.split()[1]), argv)
        except (OSError, ValueError):
            pass
    return t


def tree(pid, t):
    out = [p for p, (pp, _) in t.items() if pp == pid]
    for k in list(out):
        out += tree(k, t)
    return out


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass


def fuse_connections(points):
    """(mount point, fusectl connection number) of each FUSE mount at one of points, from
    /proc/self/mountinfo (which never waits on a FUSE daemon). The number is the kernel's
    dev_t of the mount: major << 20 | minor (fuse mounts have major 0, so it is the minor)."""
    out = []
    for line in read("/proc/self/mountinfo").splitlines():
        f = line.split(" ")
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), f[4])
        fstype = f[f.index("-", 6) + 1]
        if point in points and fstype.split(".")[0] in ("fuse", "fuseblk"):
            major, minor = map(int, f[2].split(":"))
            out.append((point, major << 20 | minor))
    return out


def abort_fuse(name, points):
    conns = fuse_connections(points)
    if not conns:
        note(f"{name}: no FUSE mount at {' '.join(points)} to abort")
    for point, conn in conns:
        try:
            with open(f"/sys/fs/fuse/connections/{conn}/abort", "w") as f:
                f.write("1")
            note(f"{name}: aborted FUSE connection {conn} ({point})")
        except OSError as e:
            note(f"{name}: cannot abort FUSE connection {conn} ({point}): {e}"
                 " (is fusectl mounted on /sys/fs/fuse/connections?)")


def main():
    global logf
    budget, logf = float(sys.argv[1]), sys.argv[2]
    # Absolute, with symlinks resolved as mountinfo shows them: in the parent directory only
    # (on the host filesystem), never in the mount point itself.
    mnts = [os.path.join(os.path.realpath(os.path.dirname(m)), os.path.basename(m))
            for m in map(os.path.abspath, sys.argv[3:])]
    parent = os.getppid()
    started = {}
    while os.getppid() == parent:
        t, now = table(), time.time()
        running = {p: test_re.search(argv[1]).group(1) for p, (_, argv) in t.items()
                   if len(argv) > 1 and argv[0].endswith("bash") and test_re.search(argv[1])}
        for p in list(started):
            if p not in running:
                del started[p]
        for p, name in running.items():
            t0, step = started.setdefault(p, (now, 0))
            late = now - t0 - budget
            if step == 0 and late > 0:
                note(f"{name}: over {budget:.0f}s budget, killing (pid {p})")
                signal_all(tree(p, t), signal.SIGKILL)
                signal_all([p], signal.SIGTERM)
                started[p] = (t0, 1)
            elif step == 1 and late > 30:
                note(f"{name}: still running 30s after SIGTERM, SIGKILL")
                signal_all(tree(p, t) + [p], signal.SIGKILL)
                started[p] = (t0, 2)
            elif step == 2 and late > 60:
                note(f"{name}: still there 30s after SIGKILL (stuck on FUSE?), aborting the connections")
                abort_fuse(name, mnts)
                started[p] = (t0, 3)
        time.sleep(2)


if __name__ == "__main__":
    main()
