//! `cargo bench --bench state` (or `just bench-inproc`): shelldone vs `git add -A && git commit` and
//! `tar | zstd -3 -T2` on the same generated state (issue #2's workload: 48 sessions, 64.3 MB in 139 files).
//! Prints a table of medians. Environment: `BENCH_RUNS` (default 5), `BENCH_SCALE` (default 1).
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shelldone::demo::{self, DemoSpec};
use shelldone::{Paths, RestoreOptions, SaveOptions, State};

#[path = "common/mod.rs"]
mod common;
use common::dir_size;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn sh(cmd: &str, dir: &Path) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .expect("sh");
    assert!(st.success(), "{cmd} failed");
}

fn fresh_store(base: &Path) -> Paths {
    let snaps = base.join("state/snapshots");
    let _ = std::fs::remove_dir_all(&snaps);
    Paths {
        config_dir: base.join("config"),
        state_dir: base.join("state"),
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let tmp = tempfile::tempdir_in(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .expect("tempdir");
    let base = tmp.path().to_path_buf();
    let d = DemoSpec::default();
    let spec = DemoSpec {
        sessions: d.sessions * scale,
        journals: d.journals * scale,
        ..d
    };
    let total = demo::generate(&base.join("config"), &base.join("state"), &spec).expect("generate");
    let files = walkdir::WalkDir::new(&base)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count();
    println!(
        "workload: {} sessions, {} journals x {} lines, {files} files, {:.1} MB, {runs} runs each (median)",
        spec.sessions,
        spec.journals,
        spec.journal_lines,
        total as f64 / 1e6
    );
    std::thread::sleep(Duration::from_millis(100)); // let mtimes age past the stat-cache racy window

    // tar | zstd -3 -T2 of the same folders.
    let tarzst = base.join("peer.tar.zst");
    let mut t_tar = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        sh(
            &format!(
                "tar -cf - config state/sessions state/journal | zstd -q -3 -T2 -f -o {}",
                tarzst.display()
            ),
            &base,
        );
        t_tar.push(t.elapsed());
    }
    let tar_size = std::fs::metadata(&tarzst).expect("tar.zst").len();

    // git add -A && git commit, fresh repo each run.
    let gitdir = base.join("peer.git");
    let mut t_git = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&gitdir);
        sh(&format!("git init -q --bare {}", gitdir.display()), &base);
        let t = Instant::now();
        sh(
            &format!(
                "GIT_DIR={g} GIT_WORK_TREE=. git -c user.name=b -c user.email=b@b add -A config state/sessions state/journal && GIT_DIR={g} GIT_WORK_TREE=. git -c user.name=b -c user.email=b@b commit -q -m bench",
                g = gitdir.display()
            ),
            &base,
        );
        t_git.push(t.elapsed());
    }
    let git_size = dir_size(&gitdir);

    // shelldone cold save.
    let mut t_cold = Vec::new();
    for _ in 0..runs {
        let paths = fresh_store(&base);
        let (st, _) = State::open(paths).expect("open");
        let t = Instant::now();
        st.save(&SaveOptions::default()).expect("save");
        t_cold.push(t.elapsed());
    }
    let paths = fresh_store(&base);
    let (st, _) = State::open(paths.clone()).expect("open");
    st.save(&SaveOptions {
        message: "base".into(),
        session: None,
        ..Default::default()
    })
    .expect("save");
    let store_size = dir_size(&base.join("state/snapshots/objects"))
        + dir_size(&base.join("state/snapshots/packs"));
    std::thread::sleep(Duration::from_millis(100));
    st.save(&SaveOptions::default()).expect("settle stat cache");

    // No-change save.
    let mut t_nochange = Vec::new();
    for _ in 0..runs.max(10) {
        let t = Instant::now();
        let o = st.save(&SaveOptions::default()).expect("save");
        t_nochange.push(t.elapsed());
        assert!(!o.created);
    }

    // Small change: 200 journal lines, 2 descriptors, scrollback +100 KB.
    let mut t_small = Vec::new();
    let mut stored = Vec::new();
    let mut change_z = Vec::new();
    for r in 0..runs {
        let before_j = std::fs::read(base.join("state/journal/0000.jsonl"))
            .expect("journal")
            .len();
        let before_s = std::fs::read(base.join("state/sessions/s003/scrollback.bin"))
            .expect("sb")
            .len();
        demo::small_change(&paths.config_dir, &paths.state_dir, r as u64).expect("change");
        // The change itself, compressed the same way, as the yardstick.
        let mut change = std::fs::read(base.join("state/journal/0000.jsonl")).expect("journal")
            [before_j..]
            .to_vec();
        change.extend_from_slice(
            &std::fs::read(base.join("state/sessions/s003/scrollback.bin")).expect("sb")
                [before_s..],
        );
        change.extend(std::fs::read(base.join("state/sessions/s001/session.json")).expect("d"));
        change.extend(std::fs::read(base.join("state/sessions/s002/session.json")).expect("d"));
        change_z.push(zstd::bulk::compress(&change, 3).expect("zstd").len() as u64);
        let t = Instant::now();
        let o = st.save(&SaveOptions::default()).expect("save");
        t_small.push(t.elapsed());
        stored.push(o.bytes_written);
    }

    // Full restore into an empty dir.
    let mut t_restore = Vec::new();
    for i in 0..runs {
        let to = base.join(format!("restore-{i}"));
        let t = Instant::now();
        st.restore(&RestoreOptions {
            to: Some(to.clone()),
            ..RestoreOptions::default()
        })
        .expect("restore");
        t_restore.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&to);
    }

    // One-session restore (live): damage one session, restore it from head.
    let mut t_one = Vec::new();
    for r in 0..runs {
        std::fs::write(
            base.join("state/sessions/s005/session.json"),
            format!("{{\"damaged\":{r}}}"),
        )
        .expect("write");
        let head = st.refs().get("head").expect("head").expect("some").to_hex();
        let t = Instant::now();
        st.restore(&RestoreOptions {
            rev: Some(head),
            session: Some("s005".into()),
            ..RestoreOptions::default()
        })
        .expect("restore");
        t_one.push(t.elapsed());
    }

    let cold = median(t_cold);
    let tar = median(t_tar);
    let git = median(t_git);
    println!();
    println!("| measurement | shelldone | peer | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| cold save vs tar\\|zstd -3 -T2 | {} | {} | {:.2}x | <= 1.5x |",
        ms(cold),
        ms(tar),
        cold.as_secs_f64() / tar.as_secs_f64()
    );
    println!(
        "| cold save vs git add+commit | {} | {} | {:.2}x | < 1x |",
        ms(cold),
        ms(git),
        cold.as_secs_f64() / git.as_secs_f64()
    );
    println!(
        "| no-change save | {} | | | <= 15 ms |",
        ms(median(t_nochange))
    );
    let st_med = {
        let mut s = stored.clone();
        s.sort();
        s[s.len() / 2]
    };
    let ch_med = {
        let mut s = change_z.clone();
        s.sort();
        s[s.len() / 2]
    };
    println!(
        "| small-change save | {} | | | <= 30 ms |",
        ms(median(t_small))
    );
    println!(
        "| small-change stored bytes vs change zstd -3 | {st_med} B | {ch_med} B | {:.2}x | <= 2x |",
        st_med as f64 / ch_med as f64
    );
    println!(
        "| full restore into empty dir | {} | | | <= 150 ms |",
        ms(median(t_restore))
    );
    println!(
        "| one-session restore | {} | | | <= 20 ms |",
        ms(median(t_one))
    );
    println!(
        "| store size vs tar.zst | {} B | {} B | {:.3}x | <= 1.10x |",
        store_size,
        tar_size,
        store_size as f64 / tar_size as f64
    );
    println!(
        "| store size vs git repo | {} B | {} B | {:.3}x | |",
        store_size,
        git_size,
        store_size as f64 / git_size as f64
    );
    let _: PathBuf = base;
}
