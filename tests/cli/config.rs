//! The config file (docs/config.md), excludes, the lock message, `-q`/`-v`, completions and
//! the man page.

use std::process::Command;

use crate::support::Sandbox;

fn write_config(sb: &Sandbox, text: &str) {
    std::fs::create_dir_all(sb.config()).unwrap();
    std::fs::write(sb.config().join("shelldone.toml"), text).unwrap();
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every key the loader reads is in docs/config.md's table, and every key there is read.
#[test]
fn the_reference_page_lists_exactly_the_keys_the_loader_reads() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")).unwrap();
    let keys_section = doc
        .split("\n## Keys\n")
        .nth(1)
        .expect("a Keys section")
        .split("\n## ")
        .next()
        .unwrap();
    let documented: std::collections::BTreeSet<String> = keys_section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap().to_owned())
        .collect();
    let read: std::collections::BTreeSet<String> = shelldone::config::KEYS
        .iter()
        .map(|(k, _)| (*k).to_owned())
        .collect();
    assert_eq!(
        documented, read,
        "docs/config.md's key table vs src/config.rs KEYS"
    );
    // The tables the page names as shelldone's are the loader's.
    for t in shelldone::config::TABLES {
        assert!(
            doc.contains(&format!("`[{t}]`")),
            "docs/config.md does not name [{t}]"
        );
    }
    // Each documented type is the loader's.
    for (k, kind) in shelldone::config::KEYS {
        let row = keys_section
            .lines()
            .find(|l| l.starts_with(&format!("| `{k}` |")))
            .unwrap();
        let ty = row.split('|').nth(2).unwrap().trim();
        let want = match kind {
            shelldone::config::ValueKind::Integer => "integer",
            shelldone::config::ValueKind::Seconds => "seconds",
            shelldone::config::ValueKind::String => "string",
            shelldone::config::ValueKind::Strings => "array of strings",
            shelldone::config::ValueKind::StringTable => "table of strings",
            shelldone::config::ValueKind::Boolean => "boolean",
        };
        assert_eq!(ty, want, "type of {k} in docs/config.md");
    }
}

#[test]
fn an_unknown_key_or_bad_value_names_the_file_and_line_with_exit_2() {
    let sb = Sandbox::new();
    sb.generate();
    write_config(
        &sb,
        "font_size = 14\n[theme]\nx = 1\n\n[sync]\npush_timout = 3\n",
    );
    let o = sb.run(&["state", "save"]);
    assert_eq!(o.status.code(), Some(2));
    let file = sb.config().join("shelldone.toml");
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}:6: unknown key 'sync.push_timout'",
            file.display()
        )),
        "{err}"
    );
    write_config(&sb, "[state]\nlock_timeout = \"soon\"\n");
    let o = sb.run(&["state", "save"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(":2: 'state.lock_timeout' must be a number of seconds"),
        "{}",
        stderr(&o)
    );
    write_config(&sb, "[state]\nversion = 9\n");
    let o = sb.run(&["state", "save"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("written for a newer shelldone"),
        "{}",
        stderr(&o)
    );
    // With --json, the error is the JSON error document.
    let o = sb.run(&["--json", "state", "save"]);
    let doc: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(doc["exit_code"], 2);
    // Nothing was saved by any of these.
    assert!(sb.ok(&["log", "--json"]).trim() == "[]");
}

#[test]
fn a_bad_environment_variable_is_an_error_not_the_default() {
    let sb = Sandbox::new();
    sb.generate();
    let o = sb
        .cmd(&["state", "save"])
        .env("SHELLDONE_LOCK_TIMEOUT", "abc")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("SHELLDONE_LOCK_TIMEOUT=abc: expected a number of seconds"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_broken_config_file_can_be_restored_and_read_only_commands_go_on() {
    let sb = Sandbox::new();
    sb.generate();
    write_config(&sb, "[state]\nexclude = [\"cache/\"]\n");
    sb.save("good config");
    write_config(&sb, "[state]\nexclude = [\"cache/\"\n");
    // Read-only commands warn and go on.
    let o = sb.run(&["log"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: ") && stderr(&o).contains("not valid TOML"),
        "{}",
        stderr(&o)
    );
    // Writing commands refuse.
    assert_eq!(sb.run(&["state", "save"]).status.code(), Some(2));
    assert_eq!(sb.run(&["state", "restore"]).status.code(), Some(2));
    // Restoring the file itself is allowed.
    sb.ok(&["state", "restore", "--path", "config/shelldone.toml"]);
    assert_eq!(
        std::fs::read_to_string(sb.config().join("shelldone.toml")).unwrap(),
        "[state]\nexclude = [\"cache/\"]\n"
    );
    sb.ok(&["state", "save"]);
}

#[test]
fn excludes_from_the_config_and_shelldoneignore_are_never_saved_nor_deleted() {
    let sb = Sandbox::new();
    sb.generate();
    write_config(
        &sb,
        "[state]\nexclude = [\"cache/\", \"config/themes/*.bak\"]\n",
    );
    let cache = sb.config().join("plugins/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("blob.bin"), vec![7u8; 10_000]).unwrap();
    std::fs::create_dir_all(sb.config().join("themes")).unwrap();
    std::fs::write(sb.config().join("themes/old.bak"), "x").unwrap();
    std::fs::write(
        sb.state().join("journal/.shelldoneignore"),
        "*.tmp\n!keep.tmp\n",
    )
    .unwrap();
    std::fs::write(sb.state().join("journal/scratch.tmp"), "t").unwrap();
    std::fs::write(sb.state().join("journal/keep.tmp"), "k").unwrap();

    // --dry-run lists what would be saved and what is left out, and writes nothing.
    let plan = sb.ok(&["state", "save", "--dry-run"]);
    for want in [
        "excluded: config/plugins/cache/",
        "excluded: config/themes/old.bak",
        "excluded: state/journal/scratch.tmp",
        "A state/journal/keep.tmp",
        "A state/journal/.shelldoneignore",
    ] {
        assert!(plan.contains(want), "{want} missing from:\n{plan}");
    }
    assert!(!plan.contains("blob.bin"), "{plan}");
    let j: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "state", "save", "--dry-run"])).unwrap();
    assert_eq!(
        j["exclude_patterns"],
        serde_json::json!(["cache/", "config/themes/*.bak"])
    );
    assert_eq!(
        sb.ok(&["log", "--json"]).trim(),
        "[]",
        "dry run saved nothing"
    );

    let id = sb.save("with excludes");
    let listed = sb.ok(&["show", &id]);
    assert!(
        !listed.contains("cache") && !listed.contains("old.bak") && !listed.contains("scratch.tmp"),
        "{listed}"
    );
    assert!(listed.contains("keep.tmp"), "{listed}");

    // A change to an excluded file is not a change.
    std::fs::write(cache.join("blob.bin"), vec![8u8; 20_000]).unwrap();
    let out = sb.ok(&["state", "save"]);
    assert!(out.contains("nothing changed"), "{out}");

    // Restore never deletes what is excluded, even to a snapshot from before it existed.
    std::fs::write(sb.config().join("extra.toml"), "e = 1").unwrap();
    sb.save("extra");
    sb.ok(&["state", "restore", &id]);
    assert!(!sb.config().join("extra.toml").exists());
    assert_eq!(
        std::fs::read(cache.join("blob.bin")).unwrap(),
        vec![8u8; 20_000]
    );
    assert!(sb.state().join("journal/scratch.tmp").exists());
}

#[test]
fn sync_remote_and_device_names_come_from_the_config() {
    let sb = Sandbox::new();
    sb.generate();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    write_config(
        &sb,
        &format!(
            "[sync]\nremote = \"home\"\n\n[device.names]\n\"{}\" = \"my-laptop\"\n",
            host.trim()
        ),
    );
    // A new store takes the name the config gives this host.
    assert_eq!(sb.ok(&["device", "show"]).trim(), "my-laptop");
    let remote = sb.dir.path().join("remote");
    sb.ok(&["remote", "add", "home", remote.to_str().unwrap(), "--init"]);
    sb.save("one");
    // No remote named: sync.remote.
    let out = sb.ok(&["sync", "push"]);
    assert!(out.contains("home"), "{out}");
    assert!(remote.join("refs").exists() || std::fs::read_dir(&remote).unwrap().count() > 0);
    let status = sb.ok(&["--json", "sync", "status"]);
    assert!(status.contains("my-laptop"), "{status}");
}

#[test]
fn the_lock_timeout_comes_from_the_config_and_the_message_names_a_flock_holder() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("first");
    write_config(&sb, "[state]\nlock_timeout = 0.2\n");
    let lock = sb.state().join("snapshots/lock");
    // -o: the lock is flock's own, not inherited by `sleep`, so killing flock frees it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    // Bounded wait until flock holds it.
    let held = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        std::fs::read_to_string("/proc/locks")
            .is_ok_and(|l| l.lines().any(|x| x.contains(&format!(" {} ", holder.id()))))
    });
    assert!(held, "flock did not take the lock");
    let started = std::time::Instant::now();
    // The variable the sandbox sets for every command would win over the file: drop it.
    let o = sb
        .cmd(&["state", "save"])
        .env_remove("SHELLDONE_LOCK_TIMEOUT")
        .output()
        .unwrap();
    let waited = started.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        waited < std::time::Duration::from_secs(10),
        "waited {waited:?}: the config's 0.2 s was not used"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "locked by pid {} (flock), which is not shelldone",
            holder.id()
        )),
        "{err}"
    );
    sb.ok(&["state", "save"]);
}

#[test]
fn quiet_says_nothing_on_success_and_verbose_names_the_config() {
    let sb = Sandbox::new();
    sb.generate();
    write_config(&sb, "[state]\nexclude = [\"cache/\"]\n");
    sb.ok(&["state", "save"]);
    std::fs::write(sb.config().join("new.toml"), "n = 1").unwrap();
    let o = sb.run(&["-q", "state", "save"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    std::fs::write(sb.config().join("new.toml"), "n = 2").unwrap();
    let o = sb.run(&["state", "save", "-v"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("note: config: ") && stderr(&o).contains("(1 exclude pattern(s))"),
        "{}",
        stderr(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("M config/new.toml"), "{out}");
    // -q and -v are accepted by every command.
    for args in [
        &["-q", "log"][..],
        &["log", "-q"],
        &["remote", "list", "-v"],
        &["device", "show", "-q"],
    ] {
        let o = sb.run(args);
        assert_ne!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn completion_scripts_load_in_bash_and_name_the_commands() {
    let sb = Sandbox::new();
    let script = sb.ok(&["completions", "bash"]);
    let file = sb.dir.path().join("shelldone.bash");
    std::fs::write(&file, &script).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p shelldone",
            file.display()
        ))
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("-F _shelldone shelldone"),
        "{o:?}"
    );
    // Completing `shelldone sta` offers `state`.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(shelldone sta) COMP_CWORD=1 COMP_LINE='shelldone sta' COMP_POINT=13 && _shelldone shelldone sta shelldone && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .expect("bash");
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == "state"),
        "{o:?}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = sb.ok(&["completions", shell]);
        assert!(s.contains("restore") && s.contains("push"), "{shell}: {s}");
    }
}

#[test]
fn the_man_page_renders() {
    let sb = Sandbox::new();
    let page = sb.dir.path().join("shelldone.1");
    std::fs::write(&page, sb.ok(&["man"])).unwrap();
    let o = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (man-db)");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("SYNOPSIS") && text.contains("state"),
        "{text}"
    );
    // One page per command, too.
    let dir = sb.dir.path().join("man");
    sb.ok(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(dir.join("shelldone-state-save.1").is_file());
    assert!(dir.join("shelldone-sync-push.1").is_file());
}

fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("progress").is_some())
        .collect()
}

#[test]
fn progress_events_with_json_tell_the_truth() {
    let sb = Sandbox::new();
    sb.generate();
    let remote = sb.dir.path().join("remote");
    sb.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().unwrap(),
        "--init",
    ]);
    for args in [
        &["--json", "--progress", "always", "state", "save"][..],
        &["--json", "--progress", "always", "state", "check"],
        &["--json", "--progress", "always", "sync", "push"],
    ] {
        let o = sb
            .cmd(args)
            .env("SHELLDONE_PROGRESS_INTERVAL", "0")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        // stdout stays one document.
        let _: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ev = events(&stderr(&o));
        assert!(ev.len() >= 2, "{args:?}: {}", stderr(&o));
        let keys: std::collections::BTreeSet<&str> = ev[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "bytes",
                "bytes_per_second",
                "bytes_total",
                "done",
                "elapsed_ms",
                "eta_ms",
                "objects",
                "objects_total",
                "progress"
            ]
            .into(),
        );
        let mut last_objects = 0;
        for e in &ev {
            let n = e["objects"].as_u64().unwrap();
            assert!(n >= last_objects, "counts only grow: {ev:?}");
            last_objects = n;
            // Never `148/0`: a total is either unknown (null) or at least what was done.
            if let Some(t) = e["objects_total"].as_u64() {
                assert!(t >= n && t > 0, "{e}");
            }
            if let Some(t) = e["bytes_total"].as_u64() {
                assert!(t >= e["bytes"].as_u64().unwrap(), "{e}");
            }
        }
        for e in &ev {
            crate::documented::check("progress", e).unwrap_or_else(|err| panic!("{err}"));
        }
        let end = ev.last().unwrap();
        assert_eq!(end["done"], true, "{args:?}: {ev:?}");
        if let Some(t) = end["objects_total"].as_u64() {
            assert_eq!(
                end["objects"].as_u64(),
                Some(t),
                "a finished phase did it all: {end}"
            );
        }
    }
    // A quick command with --json and the default --progress auto prints no event, and -q
    // none ever.
    let o = sb.run(&["--json", "state", "save"]);
    assert!(events(&stderr(&o)).is_empty(), "{}", stderr(&o));
    std::fs::write(sb.config().join("p.toml"), "p = 1").unwrap();
    let o = sb
        .cmd(&["-q", "--json", "--progress", "always", "state", "save"])
        .output()
        .unwrap();
    assert!(events(&stderr(&o)).is_empty(), "{}", stderr(&o));
}

#[test]
fn tour_honours_json_and_removes_its_temp_dir() {
    let sb = Sandbox::new();
    let tmp = sb.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let o = sb
        .cmd(&["tour", "--json"])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::documented::check("tour", &doc).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["kept"], false);
    assert!(doc["steps"].as_array().unwrap().len() >= 8, "{doc}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temp dir is removed"
    );
    let kept = sb.dir.path().join("kept");
    let out = sb.ok(&["tour", "--dir", kept.to_str().unwrap()]);
    assert!(out.contains("Try: shelldone"), "{out}");
    assert!(kept.join("state/snapshots").is_dir());
}

#[test]
fn the_daemon_takes_its_settings_from_the_config() {
    let sb = Sandbox::new();
    sb.generate();
    let remote = sb.dir.path().join("remote");
    sb.ok(&["remote", "add", "home", remote.to_str().unwrap(), "--init"]);
    write_config(
        &sb,
        "[sync]\nremote = \"home\"\n[sync.daemon]\npoll = 0.1\ndebounce = 0\npull_interval = 0\n",
    );
    let o = sb
        .cmd(&[
            "--json",
            "--progress",
            "always",
            "sync",
            "daemon",
            "--max-runtime",
            "2",
        ])
        .env("SHELLDONE_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"remote\":\"home\""), "{out}");
    assert!(out.contains("\"event\":\"pushed\""), "{out}");
    assert!(!out.contains("\"event\":\"pulled\""), "{out}");
    // The daemon's saves and pushes report progress as NDJSON on stderr too.
    let phases: Vec<String> = events(&stderr(&o))
        .iter()
        .map(|e| e["progress"].as_str().unwrap().to_owned())
        .collect();
    assert!(phases.iter().any(|p| p == "save"), "{phases:?}");
    assert!(phases.iter().any(|p| p == "push"), "{phases:?}");
}

#[test]
fn restoring_across_versions_of_the_config_file_deletes_nothing_either_excludes() {
    let sb = Sandbox::new();
    sb.generate();
    let before = sb.save("no config file yet");
    write_config(&sb, "[state]\nexclude = [\"*.local\"]\n");
    std::fs::write(sb.config().join("secrets.local"), "mine").unwrap();
    let with = sb.save("config with excludes");
    // To a snapshot without the config file: the file goes, what it excluded stays.
    sb.ok(&["state", "restore", &before]);
    assert!(!sb.config().join("shelldone.toml").exists());
    assert_eq!(
        std::fs::read_to_string(sb.config().join("secrets.local")).unwrap(),
        "mine"
    );
    // And back, while no config file is live: the target's own excludes protect it.
    sb.ok(&["state", "restore", &with]);
    assert_eq!(
        std::fs::read_to_string(sb.config().join("secrets.local")).unwrap(),
        "mine"
    );
    assert!(sb.config().join("shelldone.toml").exists());
}

#[test]
fn a_stalled_git_remote_is_stopped_after_the_configs_push_timeout() {
    use std::io::Read;
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    // A server that accepts and then says nothing (bounded: it lives as long as the test).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(4).flatten() {
            let mut s2 = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while s2.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
            held.push(s);
        }
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    sb.ok(&[
        "remote",
        "add",
        "stalled",
        &format!("git://127.0.0.1:{port}/x.git"),
    ]);
    write_config(
        &sb,
        "[sync]\nremote = \"stalled\"\npush_timeout = 1\npull_timeout = 1\n",
    );
    for args in [&["sync", "push"][..], &["sync", "pull"]] {
        let started = std::time::Instant::now();
        let o = sb
            .cmd(args)
            .env_remove("SHELLDONE_GIT_IDLE_TIMEOUT")
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", stderr(&o));
        assert!(
            took < std::time::Duration::from_secs(30),
            "{args:?} took {took:?}"
        );
        assert!(
            stderr(&o).contains("no data moved for 1 s") || stderr(&o).contains("idle"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn colour_only_when_asked_or_on_a_terminal_and_never_in_json() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    // Not a terminal: no escape codes, whatever NO_COLOR says.
    assert!(!sb.ok(&["log"]).contains('\u{1b}'));
    let coloured = sb.ok(&["--color", "always", "log"]);
    assert!(coloured.contains("\u{1b}["), "{coloured}");
    assert!(
        !sb.ok(&["--color", "always", "--json", "log"])
            .contains('\u{1b}')
    );
    // CLICOLOR_FORCE asks for colour off a terminal; NO_COLOR wins over it.
    let o = sb
        .cmd(&["log"])
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("\u{1b}["));
    let o = sb
        .cmd(&["log"])
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains('\u{1b}'));
}
