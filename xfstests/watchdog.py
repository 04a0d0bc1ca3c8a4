#!/usr/bin/env python3
"""A per-test time budget for fstests' ./check, which has none: watchdog.py SECONDS LOG [MNT...]

Finds test scripts (`bash .../tests/<dir>/<nnn>`) in /proc; one running past SECONDS has its
descendants killed, then itself (SIGTERM, then SIGKILL); if it still hangs (a stuck FUSE
request), the FUSE connections of the MNTs are aborted. Exits when its parent exits."""
import os, re, signal, sys, time

budget, logf, mnts = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
parent = os.getppid()
test_re = re.compile(r"tests/([a-z0-9]+/\d+)$")


def note(msg):
    with open(logf, "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")


def table():
    t = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{p}/stat").read()
            argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            t[int(p)] = (int(stat[stat.rindex(")") + 2:].split()[1]), [x.decode(errors="replace") for x in argv])
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
            note(f"{name}: over {budget:.0f}s budget, killing")
            signal_all(tree(p, t), signal.SIGKILL)
            signal_all([p], signal.SIGTERM)
            started[p] = (t0, 1)
        elif step == 1 and late > 30:
            signal_all(tree(p, t) + [p], signal.SIGKILL)
            started[p] = (t0, 2)
        elif step == 2 and late > 60:
            for m in mnts:
                try:
                    conn = f"/sys/fs/fuse/connections/{os.stat(m).st_dev}/abort"
                    open(conn, "w").write("1")
                    note(f"{name}: aborted the FUSE connection of {m}")
                except OSError:
                    pass
            started[p] = (t0, 3)
    time.sleep(2)
