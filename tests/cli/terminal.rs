//! A real terminal: `tmux` runs a shell, the test types a save, a push and a pull (send-keys)
//! and reads the screen (capture-pane). While a command runs, the screen must show its progress
//! bar; when all are done, the screen (ids, sizes, times and temp paths filtered) is the
//! committed snapshot `snapshots/cli__terminal__save_push_pull_screen.snap`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::Sandbox;

use crate::support::ci;

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(rc: &Path) -> Tmux {
        let socket = format!("shelldone-test-{}", std::process::id());
        let st = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", "150", "-y", "50"])
            .arg(format!("bash --noprofile --rcfile {} -i", rc.display()))
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session failed");
        Tmux { socket }
    }

    fn keys(&self, line: &str) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "-l", line])
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t", "Enter"])
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Types `cmd` followed by a marker, and watches the screen until the marker is printed
    /// (bounded): returns every distinct screen seen meanwhile.
    fn run(&self, cmd: &str, n: usize) -> Vec<String> {
        let marker = format!("__done_{n}__");
        self.keys(&format!("{cmd}; echo {marker}"));
        let started = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let s = self.screen();
            let done = s.lines().any(|l| l.trim() == marker);
            if seen.last() != Some(&s) {
                seen.push(s);
            }
            if done {
                return seen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{cmd} did not finish in 120 s; screen:\n{}",
                seen.last().map_or("", String::as_str)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The first line of `screens` that shows a bar of `phase`: `phase [====>   ] …`.
fn bar_line(screens: &[String], phase: &str) -> Option<String> {
    screens.iter().find_map(|s| {
        s.lines()
            .find(|l| {
                let l = l.trim_start();
                // A whole frame (a capture may fall between two writes of a redraw).
                l.starts_with(&format!("{phase} ["))
                    && l.contains("] ")
                    && l.contains(", ETA ")
                    && l.trim_end().ends_with(')')
            })
            .map(str::to_owned)
    })
}

fn showed_bar(screens: &[String], phase: &str) -> bool {
    bar_line(screens, phase).is_some()
}

#[test]
fn save_push_and_pull_show_progress_on_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        ci::cannot_run("the terminal test", "tmux is not installed");
        return;
    }
    let a = Sandbox::new();
    // scale 1: 64 MB in 139 files, so each step takes long enough to draw a bar.
    a.ok(&["generate", a.dir.path().to_str().expect("utf-8")]);
    let b = a.dir.path().join("b");
    let remote = a.dir.path().join("remote");
    let bin = env!("CARGO_BIN_EXE_shelldone");
    let rc = a.dir.path().join("rc");
    std::fs::write(
        &rc,
        format!(
            "PS1='$ '\nunset PROMPT_COMMAND\nexport SHELLDONE_STATE_DIR={0} SHELLDONE_CONFIG_DIR={1} SHELLDONE_LOCK_TIMEOUT=20 NO_COLOR=1\nalias shelldone={bin}\nalias device-b='SHELLDONE_STATE_DIR={2}/state SHELLDONE_CONFIG_DIR={2}/config {bin}'\ncd {3}\n",
            a.state().display(),
            a.config().display(),
            b.display(),
            a.dir.path().display()
        ),
    )
    .expect("rc");
    let t = Tmux::start(&rc);
    // Type only once the shell's prompt is up (bounded), so that nothing is echoed early.
    let started = Instant::now();
    while !t.screen().lines().any(|l| l.starts_with('$')) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no prompt: {}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    a.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().expect("utf-8"),
        "--init",
    ]);
    let mut all: Vec<String> = Vec::new();
    let save = t.run("shelldone state save -m first", 1);
    assert!(
        showed_bar(&save, "save"),
        "no save bar in:\n{}",
        save.join("\n~~~\n")
    );
    all.extend(save);
    let push = t.run("shelldone sync push", 2);
    assert!(
        showed_bar(&push, "push"),
        "no push bar in:\n{}",
        push.join("\n~~~\n")
    );
    all.extend(push);
    let pull = t.run("device-b remote add origin remote && device-b sync pull", 3);
    assert!(
        showed_bar(&pull, "pull") || showed_bar(&pull, "restore"),
        "no pull bar in:\n{}",
        pull.join("\n~~~\n")
    );
    let last = pull.last().cloned().expect("a screen");
    // `log` on a terminal goes through the pager, as git's does; `--no-pager` prints directly.
    t.run("SHELLDONE_PAGER='cat > paged.txt' shelldone log -n 1", 4);
    let paged = std::fs::read_to_string(a.dir.path().join("paged.txt")).expect("the pager ran");
    assert!(paged.starts_with("snapshot "), "{paged}");
    t.run(
        "SHELLDONE_PAGER='cat > nopager.txt' shelldone log -n 1 --no-pager",
        5,
    );
    assert!(!a.dir.path().join("nopager.txt").exists());
    // Device B has A's files.
    assert_eq!(
        crate::support::tree(&b.join("config"), "config"),
        crate::support::tree(&a.config(), "config")
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_omit_expression(true);
    settings.add_filter(
        &crate::outputs::literal(a.dir.path().to_str().expect("utf-8")),
        "[SANDBOX]",
    );
    settings.add_filter(&crate::outputs::literal(bin), "[BIN]");
    let dev = std::fs::read_to_string(a.state().join("snapshots/device")).expect("device");
    settings.add_filter(&crate::outputs::literal(dev.trim()), "[DEVICE-A]");
    let dev_b = std::fs::read_to_string(b.join("state/snapshots/device")).expect("device");
    settings.add_filter(&crate::outputs::literal(dev_b.trim()), "[DEVICE-B]");
    settings.add_filter(r"\b[0-9a-f]{64}\b", "[ID]");
    settings.add_filter(r"\b[0-9a-f]{12}\b", "[ID12]");
    settings.add_filter(r"\d+(\.\d)? (B|KiB|MiB|GiB)", "[SIZE]");
    // From the first command on, without the pane's trailing blank lines.
    let from = last
        .find("$ shelldone state save")
        .expect("the save on screen");
    let screen = last[from..].trim_end().to_owned() + "\n";
    settings.bind(|| insta::assert_snapshot!("save_push_pull_screen", screen));
    // One frame of each bar, with what moves (the fill, counts, sizes, rates, times) filtered:
    // the layout a person sees is held to the committed one.
    let frames = format!(
        "{}\n{}\n",
        bar_line(&all, "save").expect("save bar"),
        bar_line(&all, "push").expect("push bar")
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_omit_expression(true);
    settings.add_filter(r"\[[=> ]+\]", "[BAR]");
    settings.add_filter(r"\d+(\.\d+)? ?(B|KiB|MiB|GiB)", "[SIZE]");
    settings.add_filter(r"[\d,]+(\.\d+)?/s", "[N]/s");
    settings.add_filter(r"ETA \d+\w+", "ETA [T]");
    settings.add_filter(r"\b\d+/", "[N]/");
    settings.bind(|| insta::assert_snapshot!("progress_bars", frames));
}
