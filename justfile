# shelldone state — one entry point. `just --list` shows everything.

# The product end to end on a state it makes itself (save, change, log, restore, verify).
tour:
    cargo run --release --quiet -- tour

# The test suite (what CI runs after fmt and clippy).
test:
    cargo test --workspace --locked

# fmt, clippy (warnings are errors), tests.
verify:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo test --workspace --locked

# cargo-deny (deny.toml): bans, licenses, sources, and RustSec advisories when the database can be
# fetched (loudly NOT CHECKED when it cannot; SHELLDONE_REQUIRE_ADVISORIES=1 makes that fail).
# Installs the pinned cargo-deny when missing (about 5.5 min on 2 cores). CI runs it too.
deny:
    bash .ci/deny

# The fuzz targets build on stable (what CI checks; `just fuzz` runs them).
fuzz-build:
    cargo build --manifest-path fuzz/Cargo.toml --locked

# The independent Python decoder (objects-format/tools/README.md): every test vector, every store
# layout vector and the frozen store fixtures/store-v1 (objects and layout: FORMAT, device, refs,
# reflog, session refs), decoded and verified from objects-format/SPEC.md alone.
spec:
    python3 objects-format/tools/decode.py --vectors objects-format/tests/vectors.json --layout-vectors objects-format/tests/store-layout.json --store fixtures/store-v1/state --compare-with fixtures/store-v1

# The state health check (issue #17): `state check --read-data-subset` plus a restore of head into
# a temp dir read back against the snapshot, read-only on the store shelldone would use (yours,
# unless SHELLDONE_STATE_DIR/SHELLDONE_CONFIG_DIR say otherwise). SUBSET is a percentage.
health-check SUBSET="10":
    cargo build --release --locked --quiet
    SHELLDONE_HEALTH_SUBSET={{SUBSET}} bash .ci/health-check

# verify + cargo-deny + 200 SIGKILL fault-injection iterations + 300 cases of simulated power cuts
# + the sync model (tests/sync_model.rs) for 2000 steps per remote + fuzzing each decoder + the
# state health check on your real store (read-only).
verify-full: verify deny health-check
    SHELLDONE_CRASH_ITERATIONS=200 cargo test --release --locked --test crash -- --nocapture
    SHELLDONE_POWER_CASES=300 cargo test --release --locked --test power_loss -- --nocapture
    SHELLDONE_MODEL_STEPS=2000 cargo test --release --locked --test sync_model -- --nocapture
    just fuzz 60

# The sync model alone: STEPS per remote (directory and git daemon), SEED (decimal or 0x-hex),
# STRICT=0 to work around the bugs it found (fixed; for bisecting old binaries).
sync-model STEPS="300" SEED="0x5EED0009" STRICT="1":
    SHELLDONE_MODEL_STEPS={{STEPS}} SHELLDONE_MODEL_SEED={{SEED}} SHELLDONE_MODEL_STRICT={{STRICT}} cargo test --release --locked --test sync_model -- --nocapture

# The power-loss test with each sync left out in turn (docs/safety.md, "Power-loss test"): prints,
# per call site, whether the test notices. Tens of minutes.
power-loss-sites:
    #!/usr/bin/env bash
    set -euo pipefail
    bin=$(cargo test --locked --test power_loss --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p')
    sites=$(SHELLDONE_POWER_SEED=1 "$bin" --nocapture 2>&1 | sed -n 's/.*syncs at //p' | grep -v '@tests/' | sort -u)
    for site in $sites; do
        verdict="not caught"
        if ! SHELLDONE_POWER_SKIP_SYNC="$site" "$bin" --test-threads 1 scripted >/dev/null 2>&1; then
            verdict="caught (scripted)"
        else
            for seed in 11 12 13; do
                if ! SHELLDONE_POWER_SKIP_SYNC="$site" SHELLDONE_POWER_SEED=$seed "$bin" --test-threads 1 power_cuts >/dev/null 2>&1; then
                    verdict="caught (random, seed $seed)"; break
                fi
            done
        fi
        echo "$site: $verdict"
    done

# Run every fuzz target for SECONDS each (installs cargo-fuzz if missing). Uses nightly with
# AddressSanitizer when a nightly toolchain is installed, else stable without a sanitizer.
fuzz SECONDS="60":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    if rustup toolchain list | grep -q nightly; then tc=(+nightly); else tc=(+stable); extra=(--sanitizer none); fi
    cd fuzz
    for t in decode verify chunk pack_index block; do
        cargo "${tc[@]}" fuzz run "${extra[@]+"${extra[@]}"}" "$t" -- -max_total_time={{SECONDS}} -max_len=70000
    done

# Benchmarks side by side (issue #5): shelldone vs git, restic, borg and tar|zstd on 1×, 4×, 16×
# and 10 000 / 100 000 small files, medians, ratios, peak RSS, PASS/FAIL per target. Installs
# Debian's restic, borgbackup and time when missing; writes bench/results.md. Tens of minutes;
# ARGS go to bench/compare.py (e.g. `just bench --scales 1 --runs 3 --no-small-files`).
bench *ARGS:
    cargo build --release --locked
    python3 bench/compare.py {{ARGS}}

# The same comparison (kept for the name used before).
bench-compare *ARGS:
    just bench {{ARGS}}

# In-process benchmarks: save/restore vs git and tar|zstd, push bytes vs git push and rsync.
bench-inproc:
    command -v rsync >/dev/null || (apt-get update -qq && apt-get install -y -qq rsync)
    cargo bench --bench state --locked
    cargo bench --bench sync --locked
    cargo bench --bench encrypted --locked

# Issue #13: a save after one file changed at 100 and 100 000 files, the daemon's incremental save
# next to a full save (medians and spreads of BENCH_RUNS, and the work counted).
bench-incremental:
    cargo bench --bench incremental --locked

# Issue #15: `shelldone backup run/verify/restore` (age-encrypted) vs `restic backup/check
# --read-data/restore` and `borg create/check --verify-data/extract` (encrypted repositories) on the
# 1x state: times, sizes, peak RSS (medians of 3 runs), and the issue's targets. Needs Debian's
# age, restic, borgbackup and time. ARGS go to bench/backup.py (`--runs 5`, `--scale 4`).
bench-backup *ARGS:
    cargo build --release --locked
    python3 bench/backup.py {{ARGS}}

# Issue #18: journal append latency p50/p95/p99 and events/s at 1 000 and 10 000 events/s from
# threads and processes, durable within 50 ms, next to SQLite in WAL mode. Its own crate outside
# the workspace (bench/journal/, rusqlite bundled), so CI never builds SQLite. ARGS: --seconds S
# --writers N --dir DIR (default: target/bench-journal-data; not /tmp).
bench-journal *ARGS:
    cd bench/journal && CARGO_TARGET_DIR=../../target cargo build --release --locked
    target/release/shelldone-bench-journal --dir target/bench-journal-data {{ARGS}}

# Shell completion scripts (bash, zsh, fish, elvish, powershell) into target/completions/.
completions:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --locked --quiet
    mkdir -p target/completions
    for sh in bash zsh fish elvish powershell; do
        target/release/shelldone completions "$sh" > "target/completions/shelldone.$sh"
    done
    ls target/completions

# Man pages (shelldone.1 and one per command) into target/man/; `man -l target/man/shelldone.1`.
man:
    cargo build --release --locked --quiet
    target/release/shelldone man --dir target/man
    ls target/man

# A big first push over a real `git daemon` (tests/git_big.rs): MB MiB of incompressible live
# state (32 MiB files) plus sessions, saved, pushed, fetched by a second store and compared byte
# for byte. Prints the times, the peak RSS of the test and of the push's git processes, disk use
# (store, mirror, server), and (GNU time, when installed) the largest peak RSS of any process.
big-push MB="1024":
    #!/usr/bin/env bash
    set -euo pipefail
    bin=$(cargo test --release --locked --test git_big --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p')
    timer=()
    if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -f 'big-push: wall %e s, largest peak RSS of one process (the test, git push or a server of the daemon) %M kB'); fi
    SHELLDONE_BIG_PUSH_MB={{MB}} "${timer[@]}" "$bin" --nocapture --test-threads 1 2>&1 | grep -oE 'big-push:.*|test result.*|panicked.*'
