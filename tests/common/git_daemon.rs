//! A real `git daemon` on 127.0.0.1 for tests, shared by the test binaries (`#[path]` include).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A real `git daemon` on 127.0.0.1 (receive-pack enabled), killed on drop.
pub struct GitDaemon {
    child: std::process::Child,
    port: u16,
    base: PathBuf,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        use std::time::{Duration, Instant};
        let exec = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git is installed");
        let exec = PathBuf::from(String::from_utf8(exec.stdout).expect("utf8").trim());
        std::fs::create_dir_all(base).expect("mkdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        // git-daemon itself (not the `git daemon` wrapper), so that killing it ends the server.
        let child = Command::new(exec.join("git-daemon"))
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .args([
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn git-daemon");
        let d = GitDaemon {
            child,
            port,
            base: base.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// Creates a bare repo; returns its git:// URL and path.
    pub fn repo(&self, name: &str) -> (String, PathBuf) {
        let p = self.base.join(name);
        assert!(
            Command::new("git")
                .args(["init", "-q", "--bare"])
                .arg(&p)
                .status()
                .expect("git")
                .success()
        );
        (format!("git://127.0.0.1:{}/{name}", self.port), p)
    }
}
