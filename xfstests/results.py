#!/usr/bin/env python3
"""Writes xfstests/RESULTS.md from a run's RESULT_BASE (run.out, *.out.bad, watchdog.log)
and the hand-written analysis in xfstests/analysis.md (why each failure fails)."""
import argparse, collections, os, platform, re, subprocess

ap = argparse.ArgumentParser()
for a in ("results", "out", "started", "seconds", "command", "xfstests", "exclude"):
    ap.add_argument("--" + a, required=True)
a = ap.parse_args()
lines = open(os.path.join(a.results, "run.out"), errors="replace").read().splitlines()
status, detail, notrun = {}, collections.defaultdict(list), collections.Counter()
cur = None
for i, line in enumerate(lines):
    m = re.match(r"^([a-z0-9]+/\d+)\s+(.*)$", line)
    if m:
        cur, rest = m.groups()
        if "[not run]" in rest:
            status[cur] = "not run"
            reason = rest.split("[not run]", 1)[1].strip()
            notrun[reason] += 1
            detail[cur].append(reason)
        elif "[expunged]" in rest:
            status[cur] = "excluded"
        elif "failed" in rest or "mismatch" in rest:
            status[cur] = "fail"
            detail[cur].append(rest.strip())
        elif re.search(r"\d+s\s*$", rest):
            status[cur] = "pass"
        else:
            status[cur] = "interrupted"
            detail[cur].append(rest.strip())
        continue
    if cur and status.get(cur) in ("fail", "interrupted") and line.startswith("    ") and len(detail[cur]) < 14:
        detail[cur].append(line.strip())
    if cur and status.get(cur) == "not run" and line.strip() and not line.startswith("Ran") and len(detail[cur]) == 0:
        pass
c = collections.Counter(status.values())
try:
    rev = subprocess.run(["git", "-C", a.xfstests, "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
except OSError:
    rev = ""
if not rev and os.path.exists(os.path.join(a.xfstests, "VERSION")):
    # KEY=VALUE lines (PACKAGE_MAJOR=1 ...) after comments: keep "version 1.1.1".
    kv = dict(l.split("=", 1) for l in open(os.path.join(a.xfstests, "VERSION")).read().splitlines()
              if "=" in l and not l.startswith("#"))
    parts = [kv.get(k, "").strip() for k in ("PACKAGE_MAJOR", "PACKAGE_MINOR", "PACKAGE_REVISION")]
    rev = "version " + ".".join(p for p in parts if p) if any(parts) else ""
watchdog = ""
wl = os.path.join(a.results, "watchdog.log")
if os.path.exists(wl):
    watchdog = open(wl).read().strip()
analysis = ""
ap_ = os.path.join(os.path.dirname(os.path.abspath(a.out)), "analysis.md")
if os.path.exists(ap_):
    analysis = open(ap_).read().strip()
excluded = [l.strip() for l in open(a.exclude) if l.strip() and not l.startswith("#")]

out = []
w = out.append
w("# xfstests results for dedupfs\n")
w(f"Run {a.started}, {int(a.seconds) // 60} min {int(a.seconds) % 60} s, kernel {platform.release()}, "
  f"{os.cpu_count()} cores; xfstests {rev}.\n")
w(f"Command: `{a.command}` (written by `xfstests/results.py`; failures explained in "
  "`xfstests/analysis.md`, included below).\n")
w("| result | tests |\n| --- | ---: |")
for k in ("pass", "fail", "not run", "excluded", "interrupted"):
    w(f"| {k} | {c.get(k, 0)} |")
w(f"| total | {len(status)} |\n")
w("Reference on this machine (../shared/testing): libfuse `passthrough_ll` passes 132 of "
  "generic/quick (19 fail, 482 not run).\n")
if analysis:
    w("## Analysis of failures\n")
    w(analysis + "\n")
w("## Failures (first lines of each diff)\n")
fails = sorted(t for t, s in status.items() if s in ("fail", "interrupted"))
if not fails:
    w("None.\n")
for t in fails:
    w(f"### {t}\n\n```")
    w("\n".join(detail[t][:14]))
    w("```\n")
w("## Excluded (xfstests/exclude)\n")
for e in excluded:
    w(f"- {e}")
w("")
if watchdog:
    w("## Watchdog\n\n```\n" + watchdog + "\n```\n")
w("## Not run, by reason\n")
for r, n in notrun.most_common():
    w(f"- {n} × {r}")
w("\n## Passed\n")
w(" ".join(sorted(t for t, s in status.items() if s == "pass")) + "\n")
open(a.out, "w").write("\n".join(out))
print(f"pass={c.get('pass',0)} fail={c.get('fail',0)} notrun={c.get('not run',0)} "
      f"excluded={c.get('excluded',0)} interrupted={c.get('interrupted',0)} -> {a.out}")
