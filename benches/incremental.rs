//! `cargo bench --bench incremental` (or `just bench-incremental`), issue #13: what the daemon's
//! save after one file changed costs at 100 and at 100 000 files — the incremental save
//! (`State::save_changed`, what a watching daemon runs) next to a full `save` of the same change.
//! The state is the bench's small-files layout (bench/compare.py: sessions of 100 files in
//! `tabs/` and `history/` folders). Prints medians and spreads (min–max), and the work the
//! incremental save counted. Environment: `BENCH_RUNS` (default 11), `BENCH_DIR` (default a
//! fresh folder under the current one: /tmp is slow to create files in on some machines).
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use shelldone::{Paths, SaveOptions, State};

/// `n` files: sessions `sNNN` of 100 files each (a descriptor, `tabs/tK/paneN.json`,
/// `history/hN.txt`), as bench/compare.py's small-files state.
fn generate(base: &Path, n: usize) {
    let config = base.join("config");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::write(config.join("config.toml"), "font_size = 12\n").expect("write");
    std::fs::create_dir_all(base.join("state/journal")).expect("mkdir");
    std::fs::write(base.join("state/journal/0000.jsonl"), "{}\n").expect("write");
    let mut left = n.saturating_sub(2);
    let mut s = 0;
    while left > 0 {
        let sd = base.join(format!("state/sessions/s{s:03}"));
        std::fs::create_dir_all(&sd).expect("mkdir");
        std::fs::write(sd.join("session.json"), format!("{{\"id\": \"s{s:03}\"}}")).expect("write");
        left -= 1;
        for k in 0..left.min(99) {
            let p = if k % 2 == 0 {
                sd.join(format!("tabs/t{}/pane{k:02}.json", k % 5))
            } else {
                sd.join(format!("history/h{k:02}.txt"))
            };
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&p, format!("{{\"pane\": {k}, \"s\": {s}}}").repeat(20)).expect("write");
        }
        left -= left.min(99);
        s += 1;
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.2} ms ({:.2}–{:.2})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    )
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let top = std::env::var_os("BENCH_DIR").map_or_else(
        || {
            std::env::current_dir()
                .expect("cwd")
                .join("target/bench-incremental")
        },
        Into::into,
    );
    println!(
        "| files | incremental save (median, min–max) | full save of the same change | files read | entries listed | trees read / written |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [100, 100_000] {
        let base = top.join(format!("n{n}"));
        let _ = std::fs::remove_dir_all(&base);
        generate(&base, n);
        let (st, _) = State::open(Paths {
            config_dir: base.join("config"),
            state_dir: base.join("state"),
        })
        .expect("open");
        let opts = SaveOptions {
            message: "bench".into(),
            ..Default::default()
        };
        st.save(&opts).expect("first save");
        let mut base_info = st.save_base().expect("base").expect("a head with modes");
        let file = base.join("state/sessions/s000/history/h01.txt");
        let rel: BTreeSet<Vec<u8>> = [b"state/sessions/s000/history/h01.txt".to_vec()].into();
        let (mut inc, mut full) = (Vec::new(), Vec::new());
        let mut work = None;
        for i in 0..runs {
            std::fs::write(&file, format!("incremental {i}\n")).expect("write");
            let t = Instant::now();
            let (o, w) = st
                .save_changed("bench", &mut base_info, &rel)
                .expect("save")
                .expect("incremental");
            inc.push(t.elapsed());
            assert!(o.created);
            work = Some(w);
            std::fs::write(&file, format!("full {i}\n")).expect("write");
            let t = Instant::now();
            assert!(st.save(&opts).expect("full save").created);
            full.push(t.elapsed());
            base_info = st.save_base().expect("base").expect("a head");
        }
        let w = work.expect("at least one run");
        println!(
            "| {n} | {} | {} | {} | {} | {} / {} |",
            stats(inc),
            stats(full),
            w.files_read,
            w.entries_listed,
            w.trees_read,
            w.trees_written
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
