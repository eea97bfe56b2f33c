//! A real S3 server on 127.0.0.1 for the S3 remote's tests: moto's server mode (`pip install
//! 'moto[server]'`, which `.ci/run` installs). Each test starts its own server (moto keeps
//! everything in memory) and creates an IAM user with a key and a bucket. [`Moto::enforce_auth`]
//! turns request signing checks on, so a wrong key is refused as AWS refuses it. It is off
//! otherwise because moto 5.2 computes a wrong signature for a query holding an encoded `/`
//! (`ListObjectsV2` with `prefix=a%2F`: boto3 is refused the same way), which every listing of a
//! prefix has. Shared by the test binaries (`#[path]` include).
//!
//! Tests may put a [`Proxy`] in front of it: a TCP relay that can drop every connection and
//! stop listening at a chosen point, which is what a client sees when the server dies.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running moto server with a bucket and a key that may use it.
pub struct Moto {
    child: Child,
    /// Its port.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket the setup created.
    pub bucket: String,
    /// The IAM user's key id and secret.
    pub key_id: String,
    pub secret: String,
    _log: tempfile::NamedTempFile,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SETUP: &str = r#"
import json, sys
import boto3
ep, bucket = sys.argv[1], sys.argv[2]
iam = boto3.client("iam", endpoint_url=ep, aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
iam.create_user(UserName="shelldone")
pol = iam.create_policy(PolicyName="all", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
iam.attach_user_policy(UserName="shelldone", PolicyArn=pol["Policy"]["Arn"])
k = iam.create_access_key(UserName="shelldone")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"], region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
print(k["AccessKeyId"])
print(k["SecretAccessKey"])
"#;

impl Moto {
    /// The AWS settings a client of this server reads (as from the environment): the server's
    /// key id, `secret`, the region and, when given, `AWS_ENDPOINT_URL`.
    pub fn aws_env(&self, secret: &str, endpoint: Option<&str>) -> shelldone::remote::s3::AwsEnv {
        let vars: std::collections::HashMap<&str, String> = [
            ("AWS_ACCESS_KEY_ID", Some(self.key_id.clone())),
            ("AWS_SECRET_ACCESS_KEY", Some(secret.to_owned())),
            ("AWS_REGION", Some("us-east-1".to_owned())),
            ("AWS_ENDPOINT_URL", endpoint.map(str::to_owned)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
        shelldone::remote::s3::AwsEnv::from_vars(|k| vars.get(k).cloned())
    }

    /// Starts moto on a free port, or returns None (after `ci::cannot_run`, which fails the
    /// test under CI) when `moto_server` is not installed.
    pub fn start(test: &str) -> Option<Moto> {
        let found = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0") {
                panic!(
                    "{test}: moto_server is not installed and CI is set: .ci/run installs it (pip install 'moto[server]')"
                );
            }
            super::ci::cannot_run(
                test,
                "moto_server is not installed (pip install 'moto[server]')",
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut m = Moto {
            child,
            port,
            endpoint,
            bucket: "shelldone-test".to_owned(),
            key_id: String::new(),
            secret: String::new(),
            _log: log,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto_server did not listen on {port} within 60 s: {}",
                std::fs::read_to_string(m._log.path()).unwrap_or_default()
            );
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!(
                    "moto_server exited ({st}): {}",
                    std::fs::read_to_string(m._log.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let o = Command::new("python3")
            .args(["-c", SETUP, &m.endpoint, &m.bucket])
            .output()
            .expect("python3");
        assert!(
            o.status.success(),
            "moto setup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8(o.stdout).expect("utf8");
        let mut lines = out.lines();
        m.key_id = lines.next().expect("key id").to_owned();
        m.secret = lines.next().expect("secret").to_owned();
        Some(m)
    }

    /// With `on`, every request must be signed with a key IAM knows (moto's `reset-auth`).
    pub fn enforce_auth(&self, on: bool) {
        let o = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + '/moto-api/reset-auth', data=sys.argv[2].encode(), method='POST', headers={'Content-Type': 'text/plain'})).read()",
                &self.endpoint,
                if on { "0" } else { "inf" },
            ])
            .output()
            .expect("python3");
        assert!(
            o.status.success(),
            "moto reset-auth: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The AWS variables that reach this server with the good key (and nothing from the
    /// environment the tests run in).
    pub fn env(&self, c: &mut Command, endpoint: &str) {
        for v in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "AWS_DEFAULT_REGION",
        ] {
            c.env_remove(v);
        }
        c.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("AWS_CONFIG_FILE", "/nonexistent/config");
    }

    /// The requests the server logged so far, one line each (`GET /bucket/key?query`), in
    /// the order it answered them: what a test or a bench counts round trips with.
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self._log.path()).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let q = l.split_once('"')?.1;
                let (method, rest) = q.split_once(' ')?;
                let path = rest.split_once(' ')?.0;
                ["GET", "PUT", "HEAD", "POST", "DELETE"]
                    .contains(&method)
                    .then(|| format!("{method} {path}"))
            })
            .collect()
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

/// A TCP relay on 127.0.0.1 in front of a server, counting the bytes clients send. It "dies"
/// (drops every connection and stops listening) once clients have sent `die_after` bytes, or
/// when [`Proxy::kill`] is called; [`Proxy::revive`] listens again on the same port.
pub struct Proxy {
    pub port: u16,
    target: u16,
    /// Bytes clients sent through it.
    pub sent: Arc<AtomicU64>,
    /// Bytes the server sent back.
    pub received: Arc<AtomicU64>,
    die_after: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let mut p = Proxy {
            port,
            target,
            sent: Arc::default(),
            received: Arc::default(),
            die_after: Arc::new(AtomicU64::new(u64::MAX)),
            dead: Arc::default(),
            conns: Arc::default(),
            accept: None,
        };
        p.serve(l);
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Dies once `bytes` more have been sent through it.
    pub fn die_after(&self, bytes: u64) {
        self.die_after
            .store(self.sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
    }

    fn serve(&mut self, l: TcpListener) {
        l.set_nonblocking(true).expect("nonblocking");
        self.dead.store(false, Ordering::SeqCst);
        let received = Arc::clone(&self.received);
        let (target, sent, die_after, dead, conns) = (
            self.target,
            Arc::clone(&self.sent),
            Arc::clone(&self.die_after),
            Arc::clone(&self.dead),
            Arc::clone(&self.conns),
        );
        self.accept = Some(std::thread::spawn(move || {
            while !dead.load(Ordering::SeqCst) {
                let c = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                c.set_nonblocking(false).expect("blocking");
                let Ok(s) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut all = conns.lock().expect("lock");
                    all.push(c.try_clone().expect("clone"));
                    all.push(s.try_clone().expect("clone"));
                }
                let up = (
                    c.try_clone().expect("clone"),
                    s.try_clone().expect("clone"),
                    Arc::clone(&sent),
                    Arc::clone(&die_after),
                    Arc::clone(&dead),
                    Arc::clone(&conns),
                );
                std::thread::spawn(move || {
                    let (mut from, mut to, sent, die_after, dead, conns) = up;
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                        if total >= die_after.load(Ordering::SeqCst) {
                            dead.store(true, Ordering::SeqCst);
                            for c in conns.lock().expect("lock").drain(..) {
                                let _ = c.shutdown(std::net::Shutdown::Both);
                            }
                            break;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
                let received = Arc::clone(&received);
                std::thread::spawn(move || {
                    let (mut s, mut c) = (s, c);
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        received.fetch_add(n as u64, Ordering::SeqCst);
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c.shutdown(std::net::Shutdown::Write);
                });
            }
            // Dead: the listener is dropped here, so new connections are refused.
        }));
    }

    /// Drops every connection and stops listening.
    pub fn kill(&mut self) {
        self.dead.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            t.join().expect("accept thread");
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Listens again on the same port.
    pub fn revive(&mut self) {
        self.kill();
        self.die_after.store(u64::MAX, Ordering::SeqCst);
        let t0 = Instant::now();
        let l = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(10), "rebind: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        self.serve(l);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}
