//! Deterministic synthetic terminal state, for `shelldone tour`, the benchmarks and the tests.
//!
//! Shape (at scale 1): `sessions` sessions, each `sessions/<id>/session.json` (a descriptor with
//! tabs and panes) and `sessions/<id>/scrollback.bin` (20 KB–2 MB of terminal output with ANSI
//! escapes and some binary bytes), `journals` journal files of `journal_lines` JSONL lines, and a
//! config dir with `config.toml`, a theme and a keymap.

use std::io::Write;
use std::path::Path;

use fs_err as fs;

/// Sizes of a generated state.
#[derive(Debug, Clone, Copy)]
pub struct DemoSpec {
    /// Number of sessions.
    pub sessions: usize,
    /// Journal files.
    pub journals: usize,
    /// Lines per journal file.
    pub journal_lines: usize,
    /// Smallest scrollback.
    pub min_scrollback: usize,
    /// Largest scrollback.
    pub max_scrollback: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for DemoSpec {
    /// The 1× state of the benchmarks (issue #5 asks for about 60 MB in 150 files): 48
    /// sessions (96 files, ~49 MB of scrollback), 40 journal files of 3000 lines (~15 MB, the
    /// journal files of issue #2's workload), 3 config files: 64.3 MB in 139 files.
    fn default() -> Self {
        DemoSpec {
            sessions: 48,
            journals: 40,
            journal_lines: 3000,
            min_scrollback: 20_000,
            max_scrollback: 2_000_000,
            seed: 1,
        }
    }
}

impl DemoSpec {
    /// A small state for the tour and tests (a few hundred KB).
    #[must_use]
    pub fn small() -> Self {
        DemoSpec {
            sessions: 5,
            journals: 3,
            journal_lines: 200,
            min_scrollback: 2_000,
            max_scrollback: 150_000,
            seed: 1,
        }
    }
}

/// A small fast PRNG (xorshift64*), deterministic across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            lo
        } else {
            lo + (self.next_u64() % (hi - lo) as u64) as usize
        }
    }
}

const WORDS: &[&str] = &[
    "cargo",
    "build",
    "test",
    "git",
    "status",
    "commit",
    "ls",
    "-la",
    "cd",
    "src",
    "vim",
    "main.rs",
    "make",
    "ssh",
    "prod-db-1",
    "kubectl",
    "get",
    "pods",
    "error:",
    "warning:",
    "Compiling",
    "Finished",
    "target",
    "docker",
    "ps",
    "grep",
    "-rn",
    "TODO",
    "python3",
    "pytest",
    "passed",
    "failed",
    "npm",
    "install",
    "README.md",
    "journalctl",
];

/// Terminal-like output: prompts, commands, colored words, sometimes raw bytes.
#[must_use]
pub fn scrollback(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 200);
    while out.len() < len {
        let n = rng.range(3, 14);
        write!(
            out,
            "\x1b[32muser@host\x1b[0m:\x1b[34m~/p{}\x1b[0m$ ",
            rng.range(0, 50)
        )
        .expect("vec write");
        for _ in 0..n {
            let w = WORDS[rng.range(0, WORDS.len())];
            if rng.range(0, 8) == 0 {
                write!(out, "\x1b[1;31m{w}\x1b[0m ").expect("vec write");
            } else {
                write!(out, "{w} ").expect("vec write");
            }
        }
        write!(out, "{}\r\n", rng.next_u64() % 100_000).expect("vec write");
        if rng.range(0, 40) == 0 {
            for _ in 0..rng.range(8, 64) {
                out.push((rng.next_u64() >> 56) as u8);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.truncate(len);
    out
}

/// One journal line (JSONL).
#[must_use]
pub fn journal_line(rng: &mut Rng, i: usize) -> String {
    format!(
        "{{\"seq\":{i},\"ts\":\"2026-11-{:02}T{:02}:{:02}:{:02}Z\",\"session\":\"s{:03}\",\"kind\":\"{}\",\"cmd\":\"{} {}\",\"exit\":{},\"cwd\":\"/home/user/p{}\"}}\n",
        rng.range(1, 29),
        rng.range(0, 24),
        rng.range(0, 60),
        rng.range(0, 60),
        rng.range(0, 40),
        ["command", "output", "focus", "resize"][rng.range(0, 4)],
        WORDS[rng.range(0, WORDS.len())],
        WORDS[rng.range(0, WORDS.len())],
        rng.range(0, 3),
        rng.range(0, 50)
    )
}

/// A session descriptor.
#[must_use]
pub fn descriptor(rng: &mut Rng, id: &str, version: usize) -> String {
    let tabs: Vec<String> = (0..rng.range(1, 6))
        .map(|t| {
            format!(
                "{{\"title\":\"tab {t}\",\"cwd\":\"/home/user/p{}\",\"panes\":[{{\"cmd\":\"{}\",\"rows\":{},\"cols\":{}}}]}}",
                rng.range(0, 50),
                WORDS[rng.range(0, WORDS.len())],
                rng.range(20, 80),
                rng.range(80, 240)
            )
        })
        .collect();
    format!(
        "{{\"schema\":1,\"id\":\"{id}\",\"version\":{version},\"tabs\":[{}],\"active_tab\":0}}\n",
        tabs.join(",")
    )
}

/// Writes a state into `config_dir` and `state_dir`; returns total bytes written.
///
/// # Errors
/// I/O errors.
pub fn generate(config_dir: &Path, state_dir: &Path, spec: &DemoSpec) -> std::io::Result<u64> {
    let mut rng = Rng::new(spec.seed);
    let mut total = 0u64;
    fs::create_dir_all(config_dir.join("themes"))?;
    let cfg = "# shelldone preferences\nfont = \"JetBrains Mono\"\nfont_size = 13\ntheme = \"themes/night.toml\"\nscrollback_lines = 100000\n";
    fs::write(config_dir.join("config.toml"), cfg)?;
    fs::write(
        config_dir.join("themes/night.toml"),
        "background = \"#0b0e14\"\nforeground = \"#bfbdb6\"\n",
    )?;
    fs::write(
        config_dir.join("keymap.json"),
        "{\"ctrl+shift+t\":\"new_tab\",\"ctrl+shift+w\":\"close_tab\"}\n",
    )?;
    total += cfg.len() as u64 + 80;
    for s in 0..spec.sessions {
        let id = format!("s{s:03}");
        let dir = state_dir.join("sessions").join(&id);
        fs::create_dir_all(&dir)?;
        let d = descriptor(&mut rng, &id, 1);
        fs::write(dir.join("session.json"), &d)?;
        // Uniform sizes between min and max (about 1 MB on average at the default spec).
        let len = rng.range(spec.min_scrollback, spec.max_scrollback + 1);
        let sb = scrollback(&mut rng, len);
        fs::write(dir.join("scrollback.bin"), &sb)?;
        total += (d.len() + sb.len()) as u64;
    }
    fs::create_dir_all(state_dir.join("journal"))?;
    for j in 0..spec.journals {
        let mut text = String::new();
        for i in 0..spec.journal_lines {
            text.push_str(&journal_line(&mut rng, i));
        }
        fs::write(
            state_dir.join("journal").join(format!("{j:04}.jsonl")),
            &text,
        )?;
        total += text.len() as u64;
    }
    // Never snapshotted: the restore and save must leave these alone.
    fs::create_dir_all(state_dir.join("cache"))?;
    fs::write(state_dir.join("cache/glyphs.bin"), vec![7u8; 1000])?;
    fs::create_dir_all(state_dir.join("logs"))?;
    fs::write(state_dir.join("logs/shelldone.log"), "started\n")?;
    Ok(total)
}

/// The "small change" of the benchmark: 200 journal lines appended, 2 descriptors rewritten,
/// one scrollback grown by 100 KB. Returns the bytes of new content.
///
/// # Errors
/// I/O errors.
pub fn small_change(config_dir: &Path, state_dir: &Path, round: u64) -> std::io::Result<u64> {
    let _ = config_dir;
    let mut rng = Rng::new(1000 + round);
    let mut added = 0u64;
    let j = state_dir.join("journal/0000.jsonl");
    fs::create_dir_all(state_dir.join("journal"))?;
    let mut f = fs::OpenOptions::new().create(true).append(true).open(&j)?;
    for i in 0..200 {
        let l = journal_line(&mut rng, 100_000 + i);
        f.write_all(l.as_bytes())?;
        added += l.len() as u64;
    }
    for s in [1usize, 2] {
        let id = format!("s{s:03}");
        let d = descriptor(&mut rng, &id, 2 + round as usize);
        fs::create_dir_all(state_dir.join("sessions").join(&id))?;
        fs::write(
            state_dir.join("sessions").join(&id).join("session.json"),
            &d,
        )?;
        added += d.len() as u64;
    }
    let sb = scrollback(&mut rng, 100_000);
    fs::create_dir_all(state_dir.join("sessions/s003"))?;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("sessions/s003/scrollback.bin"))?;
    f.write_all(&sb)?;
    added += sb.len() as u64;
    Ok(added)
}
