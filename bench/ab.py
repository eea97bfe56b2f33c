"""A/B of two shelldone binaries (e.g. before and after a refactor) on the same generated state
(scale 1), alternating which runs first, median of ROUNDS rounds: cold save, no-change save,
small-change save, restore --to, state check, state gc.

Usage: python3 bench/ab.py BEFORE_BIN AFTER_BIN [ROUNDS]   (standard library only)
"""
import os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
bins = {'before': sys.argv[1], 'after': sys.argv[2]}
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
w = Path(tempfile.mkdtemp(prefix='ab-', dir=None))
tpl = w / 'tpl'
compare.generate_fractional(tpl, 1.0)
env = {k: v for k, v in os.environ.items() if not k.startswith('SHELLDONE_')}
env['HOME'] = str(w)
res = {b: {} for b in bins}
def run(binp, d, *args):
    t = time.perf_counter()
    subprocess.run([binp, '--state-dir', str(d / 'state'), '--config-dir', str(d / 'config'), *args],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t
for r in range(rounds):
    for name, binp in (bins.items() if r % 2 == 0 else reversed(list(bins.items()))):
        d = w / f'run-{r}'
        if d.exists(): shutil.rmtree(d)
        shutil.copytree(tpl, d)
        m = res[name]
        m.setdefault('cold save', []).append(run(binp, d, 'state', 'save', '-m', 'one'))
        m.setdefault('no-change save', []).append(run(binp, d, 'state', 'save', '-m', 'two'))
        (d / 'state/sessions/s001/session.json').write_text('{"changed": %d}' % r)
        m.setdefault('small-change save', []).append(run(binp, d, 'state', 'save', '-m', 'three'))
        m.setdefault('restore --to (full)', []).append(run(binp, d, 'state', 'restore', 'head', '--to', str(d / 'out')))
        m.setdefault('state check', []).append(run(binp, d, 'state', 'check'))
        m.setdefault('state gc', []).append(run(binp, d, 'state', 'gc'))
        shutil.rmtree(d)
print(f'median of {rounds} rounds, wall seconds, state of {compare.content_stats(tpl)[0]/1e6:.1f} MB')
names = list(bins)
print('| operation | ' + ' | '.join(names) + ' | after/before |')
print('|---|' + '---|' * (len(names) + 1))
for op in res[names[0]]:
    a, b = (statistics.median(res[n][op]) for n in names)
    print(f'| {op} | {a:.3f} | {b:.3f} | {b/a:.2f} |')
shutil.rmtree(w)
