#!/usr/bin/env python3
"""bench/backup.py: `shelldone backup` vs `restic backup/restore` and `borg create/extract`
(issue #15), encrypted repositories for all three, on the same generated state.

For each tool: backup, verify (shelldone: every object read, decrypted and checked, then about
one file in eight restored and compared; restic check --read-data; borg check --verify-data) and
restore times, the size of what it wrote, and the peak RSS of each step (GNU time), each the median of
`--runs` runs with ± half the range. The shelldone backup is of a snapshot already saved (its
`state save` is timed apart). Uses only the standard library, `/usr/bin/time`, `age-keygen`,
`restic` and `borg`; run from the repository root: `just bench-backup`.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd, env=None, cwd=None):
    """Runs cmd under GNU time; returns (seconds, peak RSS in KiB)."""
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, env=env, cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    secs = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.decode(errors='replace')}")
    rss = int(p.stderr.decode().strip().splitlines()[-1])
    return secs, rss


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def same_tree(a, b):
    p = subprocess.run(["diff", "-r", "--no-dereference", a, b], capture_output=True)
    if p.returncode != 0:
        sys.exit(f"restore differs: {a} vs {b}\n{p.stdout.decode(errors='replace')[:2000]}")


def one_run(bin_, work, scale):
    os.makedirs(work)
    src = os.path.join(work, "src")
    subprocess.run([bin_, "generate", src, "--scale", str(scale)], check=True,
                   capture_output=True)
    live = [os.path.join(src, "config"), os.path.join(src, "state", "sessions"),
            os.path.join(src, "state", "journal")]
    env = dict(os.environ, SHELLDONE_STATE_DIR=os.path.join(src, "state"),
               SHELLDONE_CONFIG_DIR=os.path.join(src, "config"))
    out = {}
    key = os.path.join(work, "key.txt")
    subprocess.run(["age-keygen", "-o", key], check=True, capture_output=True)
    pub = subprocess.run(["age-keygen", "-y", key], check=True,
                         capture_output=True).stdout.decode().strip()
    out["shelldone save"] = run([bin_, "state", "save", "-m", "bench"], env)
    bdir = os.path.join(work, "bundles")
    r = {"backup": run([bin_, "backup", "run", "--to", bdir, "--recipient", pub], env)}
    bundle = os.path.join(bdir, os.listdir(bdir)[0])
    r["verify"] = run([bin_, "backup", "verify", bundle, "--identity", key], env)
    new = os.path.join(work, "new-machine")
    env_new = dict(os.environ, SHELLDONE_STATE_DIR=os.path.join(new, "state"),
                   SHELLDONE_CONFIG_DIR=os.path.join(new, "config"))
    r["restore"] = run([bin_, "backup", "restore", bundle, "--identity", key], env_new)
    same_tree(os.path.join(src, "config"), os.path.join(new, "config"))
    same_tree(os.path.join(src, "state", "sessions"), os.path.join(new, "state", "sessions"))
    r["size"] = du(bundle)
    out["shelldone"] = r

    renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=os.path.join(work, "restic"),
                RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
    subprocess.run(["restic", "init"], env=renv, check=True, capture_output=True)
    r = {"backup": run(["restic", "backup", "--quiet"] + live, renv)}
    r["verify"] = run(["restic", "check", "--read-data"], renv)
    rt = os.path.join(work, "restic-out")
    r["restore"] = run(["restic", "restore", "latest", "--target", rt], renv)
    same_tree(os.path.join(src, "config"), rt + os.path.join(src, "config"))
    r["size"] = du(renv["RESTIC_REPOSITORY"])
    out["restic"] = r

    benv = dict(os.environ, BORG_PASSPHRASE="bench", BORG_REPO=os.path.join(work, "borg"),
                BORG_BASE_DIR=os.path.join(work, "borg-base"),
                BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
    subprocess.run(["borg", "init", "--encryption=repokey-blake2"], env=benv, check=True,
                   capture_output=True)
    r = {"backup": run(["borg", "create", "::a", "config", "state/sessions", "state/journal"],
                           benv, cwd=src)}
    r["verify"] = run(["borg", "check", "--verify-data"], benv)
    bt = os.path.join(work, "borg-out")
    os.makedirs(bt)
    r["restore"] = run(["borg", "extract", "::a"], benv, cwd=bt)
    same_tree(os.path.join(src, "config"), os.path.join(bt, "config"))
    r["size"] = du(benv["BORG_REPO"])
    out["borg"] = r
    return out


def fmt(vals, unit):
    m = statistics.median(vals)
    half = (max(vals) - min(vals)) / 2
    if unit == "s":
        return f"{m:.2f} s ± {half:.2f}"
    if unit == "MiB":
        return f"{m / 1024:.0f} MiB ± {half / 1024:.0f}"
    return f"{m / 1e6:.1f} MB ± {half / 1e6:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--workdir", default="/work/bench-tmp")
    ap.add_argument("--shelldone", default="target/release/shelldone")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    runs = []
    for i in range(a.runs):
        work = tempfile.mkdtemp(prefix="backup-", dir=a.workdir)
        shutil.rmtree(work)
        try:
            runs.append(one_run(os.path.abspath(a.shelldone), work, a.scale))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"backup benchmark: scale {a.scale}, {a.runs} runs (median ± half the range); "
          f"encrypted: age (shelldone), repository key (restic; borg repokey-blake2, its default lz4)")
    save = [r["shelldone save"][0] for r in runs]
    print(f"shelldone state save before the backup: {fmt(save, 's')}")
    print("| tool | backup | verify | restore | size | peak RSS backup / verify / restore |")
    print("|---|---|---|---|---|---|")
    for tool in ["shelldone", "restic", "borg"]:
        col = lambda k, j: [r[tool][k][j] for r in runs]  # noqa: E731
        rss = " / ".join(fmt(col(k, 1), "MiB") for k in ["backup", "verify", "restore"])
        print(f"| {tool} | {fmt(col('backup', 0), 's')} | {fmt(col('verify', 0), 's')} | "
              f"{fmt(col('restore', 0), 's')} | {fmt([r[tool]['size'] for r in runs], 'MB')} | "
              f"{rss} |")
    med = lambda tool, k: statistics.median(r[tool][k][0] for r in runs)  # noqa: E731
    for k in ["backup", "verify", "restore"]:
        ok = med("shelldone", k) <= med("restic", k) / 2
        print(f"target: shelldone {k} at most half of restic's: "
              f"{med('shelldone', k):.2f} s vs {med('restic', k):.2f} s: {'PASS' if ok else 'FAIL'}")
    size = lambda tool: statistics.median(r[tool]["size"] for r in runs)  # noqa: E731
    ok = size("shelldone") <= size("borg")
    print(f"target: bundle no larger than borg's repository: {size('shelldone') / 1e6:.1f} MB vs "
          f"{size('borg') / 1e6:.1f} MB: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
