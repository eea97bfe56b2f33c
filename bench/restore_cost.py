#!/usr/bin/env python3
"""Restore cost of two shelldone binaries side by side (issue #10: the restore reads again what
the stat cache vouches for). Usage: bench/restore_cost.py BEFORE AFTER [WORKDIR] [RUNS]

Generates the 1x state for each binary in WORKDIR (default ./target/restore-cost), saves, applies
small change 1, saves, then times (interleaved, median of RUNS, default 15): a full restore of
head when nothing differs, a one-session restore, alternating full restores of the two
snapshots, and a no-change save. Prints wall and CPU (user + sys) milliseconds as a table."""
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

bins = {"before": sys.argv[1], "after": sys.argv[2]}
root = os.path.abspath(sys.argv[3] if len(sys.argv) > 3 else "target/restore-cost")
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 15


def env(label):
    d = f"{root}/{label}"
    e = dict(os.environ)
    e["SHELLDONE_STATE_DIR"] = d + "/state"
    e["SHELLDONE_CONFIG_DIR"] = d + "/config"
    return e


def out(label, args):
    return subprocess.run([bins[label]] + args, env=env(label), check=True,
                          capture_output=True, text=True).stdout


def run(label, args):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([bins[label]] + args, env=env(label), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = (time.perf_counter() - t) * 1000
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000
    return wall, cpu


snaps = {}
for label in bins:
    d = f"{root}/{label}"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    out(label, ["generate", d, "--scale", "1"])
    time.sleep(1)  # past the stat cache's racy window
    s0 = out(label, ["state", "save", "-m", "base"]).split()[-1]
    out(label, ["generate", d, "--small-change", "1"])
    time.sleep(1)
    s1 = out(label, ["state", "save", "-m", "change"]).split()[-1]
    out(label, ["state", "save"])
    snaps[label] = (s0, s1)
session = sorted(os.listdir(f"{root}/before/state/sessions"))[0].split(".")[0]
cases = [
    ("full restore of head, nothing differs", lambda l, i: ["state", "restore"]),
    (f"one-session restore of head ({session})", lambda l, i: ["state", "restore", "--session", session]),
    ("full restore of the other snapshot (small change)", lambda l, i: ["state", "restore", snaps[l][i % 2]]),
    ("no-change save", lambda l, i: ["state", "save"]),
]
print("| case | wall before | wall after | CPU before | CPU after |")
print("|---|---|---|---|---|")
for name, args in cases:
    got = {l: [] for l in bins}
    for i in range(runs):
        for l in bins:
            got[l].append(run(l, args(l, i)))
    med = {l: (statistics.median(w for w, _ in got[l]), statistics.median(c for _, c in got[l])) for l in bins}
    print(f"| {name} | {med['before'][0]:.1f} ms | {med['after'][0]:.1f} ms | "
          f"{med['before'][1]:.0f} ms | {med['after'][1]:.0f} ms |", flush=True)
