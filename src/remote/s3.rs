//! An S3 bucket, or any S3-compatible service, as a remote (`s3://bucket/prefix`), through the
//! `object_store` crate (ADR 0011).
//!
//! Layout under `<prefix>/` (the directory remote's, key for file):
//! * `shelldone-remote` — marker, `shelldone-s3-remote 1\n`, written by `remote add --init`;
//! * `objects/ab/cdef…` — the stored frames (zstd of the canonical bytes, SPEC §7);
//! * `refs/<device>/head`, `refs/<device>/sessions/<x>` — hex id + `\n`.
//!
//! Objects are content-addressed and an S3 PUT is all or nothing, so a push cut off half-way
//! leaves only extra objects; the refs move after every object is stored. Each device writes
//! refs only under its own `refs/<device>/`, and each ref write is conditional: `If-None-Match:
//! *` for a ref that should be absent, `If-Match: <etag>` for one that should hold the value
//! this handle read, so two writers of one namespace (two copies of one store) cannot overwrite
//! each other unseen — the second gets [`Error::RefConflict`]. A service that answers a
//! conditional write with `501 Not Implemented` gets a compare-then-write instead (see
//! docs/sync.md); one that ignores the headers keeps only the namespaces.
//!
//! The backend is blocking ([`Backend`]); it owns a current-thread tokio runtime and blocks on
//! the `object_store` futures, several requests at a time where the order does not matter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as KeyPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore as _, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};
use objects_format::ObjectId;

use super::dir::check_remote_ref;
use super::{Backend, Outgoing, RefUpdate, ref_conflict, verify};
use crate::error::{Error, Result};

/// The URL scheme of an S3 remote.
pub const SCHEME: &str = "s3://";
/// Name of the marker object under the prefix.
pub const MARKER: &str = "shelldone-remote";
/// Content of the marker object (format version 1, what a new remote is created at).
pub const MARKER_LINE: &str = "shelldone-s3-remote 1";
/// The marker line without its version (`<prefix> <N>`, see [`super::format`]).
pub const MARKER_PREFIX: &str = "shelldone-s3-remote";

/// Requests in flight at once for puts, ref reads and gets of several objects.
const CONCURRENCY: usize = 16;
/// A put sends its objects in rounds of at most this many bytes (memory stays bounded).
const ROUND_BYTES: usize = 32 << 20;

/// True for a URL that names an S3 remote.
#[must_use]
pub fn is_s3_url(url: &str) -> bool {
    url.starts_with(SCHEME)
}

/// `s3://bucket/prefix`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`.
    ///
    /// # Errors
    /// [`Error::Usage`] for anything else.
    pub fn parse(url: &str) -> Result<S3Url> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "'{url}' is not an S3 remote URL ({why}); the form is s3://BUCKET/PREFIX"
            ))
        };
        let rest = url.strip_prefix(SCHEME).ok_or_else(|| bad("no s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !bucket_ok {
            return Err(bad(
                "a bucket name is 3-63 lower-case letters, digits, '.' and '-'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
        {
            return Err(bad("the prefix has an empty, '.' or '..' part"));
        }
        // Keys are compared as listed: characters a key would carry percent-encoded are out.
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'~'))
        {
            return Err(bad(
                "a prefix is letters, digits, '.', '_', '-', '~' and '/'",
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{SCHEME}{}", self.bucket)
        } else {
            write!(f, "{SCHEME}{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The AWS settings of the environment: the variables the AWS tools read, and the profile
/// files they name. The CLI fills it from the process environment ([`AwsEnv::from_vars`]); the
/// library itself never reads the environment.
#[derive(Clone, Default)]
pub struct AwsEnv {
    vars: BTreeMap<String, String>,
}

/// Secrets stay out of debug output.
impl std::fmt::Debug for AwsEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        f.debug_struct("AwsEnv").field("set", &names).finish()
    }
}

/// The variables [`AwsEnv`] takes.
pub const AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "HOME",
];

/// Where an S3 remote's settings came from, resolved: what the client is built with.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The region (`us-east-1` when nothing names one).
    pub region: String,
    /// The endpoint of an S3-compatible service (None: AWS).
    pub endpoint: Option<String>,
    /// Static credentials (key id, secret, session token), if any were found.
    pub credentials: Option<(String, String, Option<String>)>,
    /// Where the credentials came from, for messages (`AWS_ACCESS_KEY_ID`, `profile dev in …`).
    pub credentials_from: String,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials_from", &self.credentials_from)
            .finish_non_exhaustive()
    }
}

impl AwsEnv {
    /// The AWS variables ([`AWS_VARS`]) as `get` gives them (empty values are unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> AwsEnv {
        AwsEnv {
            vars: AWS_VARS
                .iter()
                .filter_map(|k| {
                    get(k)
                        .filter(|v| !v.is_empty())
                        .map(|v| ((*k).to_owned(), v))
                })
                .collect(),
        }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str)
    }

    fn home_file(&self, var: &str, default: &str) -> Option<PathBuf> {
        self.var(var)
            .map(PathBuf::from)
            .or_else(|| self.var("HOME").map(|h| PathBuf::from(h).join(default)))
    }

    /// Resolves the settings the way the AWS tools do: a remote's own `--endpoint`/`--region`
    /// first, then the variables (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`; `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`; `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`), then the profile (`AWS_PROFILE`, else `default`) in the
    /// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and the
    /// config file (`AWS_CONFIG_FILE`, else `~/.aws/config`).
    ///
    /// # Errors
    /// A named profile that no file holds, an unreadable profile file, a key id without its
    /// secret.
    pub fn resolve(&self, endpoint: Option<&str>, region: Option<&str>) -> Result<Resolved> {
        let profile_named = self
            .var("AWS_PROFILE")
            .or_else(|| self.var("AWS_DEFAULT_PROFILE"));
        let profile = profile_named.unwrap_or("default");
        let cred_file = self.home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        let conf_file = self.home_file("AWS_CONFIG_FILE", ".aws/config");
        let creds_section = read_ini_section(cred_file.as_deref(), profile, false)?;
        let conf_section = read_ini_section(conf_file.as_deref(), profile, true)?;
        if let Some(p) = profile_named
            && creds_section.is_none()
            && conf_section.is_none()
        {
            return Err(Error::Usage(format!(
                "AWS profile '{p}' is in neither {} nor {}",
                show(cred_file.as_deref()),
                show(conf_file.as_deref())
            )));
        }
        let from_profile = |k: &str| -> Option<String> {
            creds_section
                .as_ref()
                .and_then(|s| s.get(k))
                .or_else(|| conf_section.as_ref().and_then(|s| s.get(k)))
                .cloned()
        };
        let region = region
            .map(str::to_owned)
            .or_else(|| self.var("AWS_REGION").map(str::to_owned))
            .or_else(|| self.var("AWS_DEFAULT_REGION").map(str::to_owned))
            .or_else(|| from_profile("region"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| self.var("AWS_ENDPOINT_URL_S3").map(str::to_owned))
            .or_else(|| self.var("AWS_ENDPOINT_URL").map(str::to_owned))
            .or_else(|| from_profile("endpoint_url"));
        let (credentials, credentials_from) = match (
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(k), Some(s)) => (
                Some((
                    k.to_owned(),
                    s.to_owned(),
                    self.var("AWS_SESSION_TOKEN").map(str::to_owned),
                )),
                "AWS_ACCESS_KEY_ID".to_owned(),
            ),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Usage(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: one of them is not set"
                        .into(),
                ));
            }
            (None, None) => match (
                from_profile("aws_access_key_id"),
                from_profile("aws_secret_access_key"),
            ) {
                (Some(k), Some(s)) => (
                    Some((k, s, from_profile("aws_session_token"))),
                    format!("profile '{profile}'"),
                ),
                _ => (None, String::new()),
            },
        };
        Ok(Resolved {
            region,
            endpoint,
            credentials,
            credentials_from,
        })
    }

    /// True when the environment names a credential source `object_store` reads itself (web
    /// identity, a container's credentials endpoint).
    fn has_delegated_credentials(&self) -> bool {
        self.var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
            || self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    }
}

fn show(p: Option<&std::path::Path>) -> String {
    p.map_or_else(|| "(no HOME)".to_owned(), |p| p.display().to_string())
}

/// The `key = value` pairs of one profile's section of an AWS ini file (`[name]` in the
/// credentials file; `[profile name]`, or `[default]`, in the config file). None when the file
/// or the section is absent.
fn read_ini_section(
    file: Option<&std::path::Path>,
    profile: &str,
    config: bool,
) -> Result<Option<HashMap<String, String>>> {
    let Some(file) = file else { return Ok(None) };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("{e} (reading {})", file.display()),
            )));
        }
    };
    Ok(parse_ini_section(&text, profile, config))
}

/// See [`read_ini_section`].
fn parse_ini_section(text: &str, profile: &str, config: bool) -> Option<HashMap<String, String>> {
    let wanted = |header: &str| {
        let h = header.trim();
        if config && profile != "default" {
            h.strip_prefix("profile")
                .is_some_and(|r| r.starts_with(char::is_whitespace) && r.trim() == profile)
        } else {
            h == profile
                || (config
                    && h.strip_prefix("profile")
                        .is_some_and(|r| r.trim() == profile))
        }
    };
    let mut out: Option<HashMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(h);
            if inside {
                out.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.get_or_insert_with(HashMap::new)
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

/// One ref as a GET answered it: its bytes and ETag, or None when absent.
type RefRead = std::result::Result<Option<(Vec<u8>, Option<String>)>, object_store::Error>;

/// What a ref read found: the value and the ETag the service gave with it.
#[derive(Debug, Clone)]
struct RefSeen {
    id: Option<ObjectId>,
    e_tag: Option<String>,
}

/// An S3 remote.
pub struct S3Remote {
    name: String,
    url: S3Url,
    store: Arc<AmazonS3>,
    rt: tokio::runtime::Runtime,
    /// The marker was read by this handle.
    opened: bool,
    /// The layout version its marker says (once read).
    format: u32,
    /// The objects the service holds, listed once per handle (and grown by our puts).
    known: Option<HashSet<ObjectId>>,
    /// Each ref as this handle last read or wrote it: the ETag a conditional write sends.
    refs_seen: HashMap<String, RefSeen>,
}

impl std::fmt::Debug for S3Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Remote")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How an `object_store` error reads to a person, and whether a later try may succeed.
fn classify(e: &object_store::Error) -> (String, bool) {
    use object_store::Error as E;
    let chain = crate::error::chain(e);
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => (
            format!(
                "access denied: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket's policy ({chain})"
            ),
            false,
        ),
        E::Generic { .. } => {
            // The credentials errors S3 sends with 400/403 (a wrong secret, an unknown key id)
            // end up here when the retry layer reports them with their body.
            let auth = [
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "ExpiredToken",
                "InvalidToken",
                "AccessDenied",
            ]
            .iter()
            .any(|c| chain.contains(c));
            if auth {
                (
                    format!(
                        "access denied: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket's policy ({chain})"
                    ),
                    false,
                )
            } else if chain.contains("NoSuchBucket") {
                (format!("the bucket does not exist ({chain})"), false)
            } else {
                // Connection refused or reset, timeouts, 5xx after the retries.
                (chain, true)
            }
        }
        _ => (chain, false),
    }
}

impl S3Remote {
    /// A remote named `name` (for messages) at `url`, with its own `endpoint` and `region`
    /// (`remote add --endpoint/--region`) over what `env` says.
    ///
    /// # Errors
    /// A bad URL, settings that do not resolve, no credentials, a client that cannot be built.
    pub fn open(
        name: impl Into<String>,
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        env: &AwsEnv,
    ) -> Result<S3Remote> {
        let name = name.into();
        let url = S3Url::parse(url)?;
        let r = env.resolve(endpoint, region)?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(&r.region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    // A frame is at most verify::MAX_RAW_OBJECT (64 MiB): minutes on a slow link.
                    .with_timeout(Duration::from_secs(600))
                    .with_allow_http(true),
            );
        if let Some(ep) = &r.endpoint {
            // S3-compatible services are addressed by path (`endpoint/bucket/key`).
            b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
        }
        match &r.credentials {
            Some((k, s, t)) => {
                b = b.with_access_key_id(k).with_secret_access_key(s);
                if let Some(t) = t {
                    b = b.with_token(t);
                }
            }
            None if env.has_delegated_credentials() => {
                for k in [
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_ROLE_ARN",
                    "AWS_ROLE_SESSION_NAME",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                ] {
                    if let (Some(v), Ok(key)) = (
                        env.var(k),
                        k.to_ascii_lowercase()
                            .parse::<object_store::aws::AmazonS3ConfigKey>(),
                    ) {
                        b = b.with_config(key, v);
                    }
                }
            }
            None => {
                return Err(Error::Usage(format!(
                    "no AWS credentials for remote '{name}' ({url}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in ~/.aws/credentials"
                )));
            }
        }
        let store = b
            .build()
            .map_err(|e| Error::remote(&name, format!("S3 client for {url}: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (tokio runtime)"),
                ))
            })?;
        Ok(S3Remote {
            name,
            url,
            store: Arc::new(store),
            rt,
            opened: false,
            format: super::format::CREATE_FORMAT,
            known: None,
            refs_seen: HashMap::new(),
        })
    }

    /// The URL.
    #[must_use]
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    fn key(&self, rel: &str) -> KeyPath {
        if self.url.prefix.is_empty() {
            KeyPath::from(rel)
        } else {
            KeyPath::from(format!("{}/{rel}", self.url.prefix))
        }
    }

    fn object_key(&self, id: &ObjectId) -> KeyPath {
        let hex = id.to_hex();
        self.key(&format!("objects/{}/{}", &hex[..2], &hex[2..]))
    }

    /// The part of `key` after the prefix.
    fn rel<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.url.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.url.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    fn err(&self, what: &str, e: &object_store::Error) -> Error {
        let (why, transient) = classify(e);
        Error::Remote {
            remote: self.name.clone(),
            why: format!("{what} ({}): {why}", self.url),
            transient,
            source: None,
        }
    }

    /// Reads the marker. False when there is none (a new prefix); with `create`, writes it then.
    fn open_marker(&mut self, create: bool) -> Result<bool> {
        let key = self.key(MARKER);
        let store = Arc::clone(&self.store);
        let got = self.rt.block_on(async {
            match store.get(&key).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        match got {
            Ok(Some(b)) => {
                let s = String::from_utf8_lossy(&b);
                let line = s.trim_end();
                return match super::format::parse_marker(line, MARKER_PREFIX) {
                    Some(v) if v <= super::format::supported() => {
                        self.format = v;
                        Ok(true)
                    }
                    Some(v) => Err(super::format::newer(&self.name, v)),
                    None => Err(Error::remote(
                        &self.name,
                        format!(
                            "{}/{MARKER} says {line:?}; this shelldone understands {MARKER_LINE:?} (upgrade shelldone?)",
                            self.url
                        ),
                    )),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(self.err("reading the marker", &e)),
        }
        // No marker: refuse a prefix that holds something else.
        let list_prefix =
            (!self.url.prefix.is_empty()).then(|| KeyPath::from(self.url.prefix.as_str()));
        let any = self.rt.block_on(async {
            let mut s = store.list(list_prefix.as_ref());
            s.next().await.transpose()
        });
        match any {
            Ok(Some(m)) => {
                return Err(Error::remote(
                    &self.name,
                    format!(
                        "{} holds objects ({} …) but is not a shelldone S3 remote (no {MARKER}); use an empty prefix",
                        self.url, m.location
                    ),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(self.err("listing the prefix", &e)),
        }
        if !create {
            return Ok(false);
        }
        let key = self.key(MARKER);
        let res = self.rt.block_on(store.put_opts(
            &key,
            PutPayload::from(format!("{MARKER_LINE}\n").into_bytes()),
            PutOptions::from(PutMode::Create),
        ));
        match res {
            // Another device created it at the same time: the same content.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
            Err(e) if unsupported(&e) => {
                let res = self.rt.block_on(store.put(
                    &key,
                    PutPayload::from(format!("{MARKER_LINE}\n").into_bytes()),
                ));
                res.map(|_| true)
                    .map_err(|e| self.err("writing the marker", &e))
            }
            Err(e) => Err(self.err("writing the marker", &e)),
        }
    }

    /// Creates the remote (its marker) on purpose (`remote add --init`); an existing one is
    /// left as it is.
    ///
    /// # Errors
    /// A prefix that holds other objects, an unreachable service, denied access.
    pub fn init(&mut self) -> Result<()> {
        self.opened = self.open_marker(true)?;
        Ok(())
    }

    /// Raises the remote's layout version to this binary's on purpose (`remote upgrade`):
    /// (version before, version after). See [`super::dir::DirRemote::upgrade`].
    ///
    /// # Errors
    /// A missing remote, one newer than this binary, an unreachable service.
    pub fn upgrade(&mut self) -> Result<(u32, u32)> {
        self.opened = self.open_marker(false)?;
        if !self.opened {
            return Err(Error::remote(
                &self.name,
                format!(
                    "{} is not a shelldone S3 remote (no {MARKER}); nothing to upgrade",
                    self.url
                ),
            ));
        }
        let found = self.format;
        let to = super::format::supported();
        if found < to {
            let key = self.key(MARKER);
            let store = Arc::clone(&self.store);
            self.rt
                .block_on(store.put(
                    &key,
                    PutPayload::from(super::format::marker_line(MARKER_PREFIX, to).into_bytes()),
                ))
                .map_err(|e| self.err("writing the marker", &e))?;
            self.format = to;
        }
        Ok((found, found.max(to)))
    }

    /// True when the prefix is an S3 remote (its marker is there).
    ///
    /// # Errors
    /// A prefix that holds other objects, an unreachable service, denied access.
    pub fn exists(&mut self) -> Result<bool> {
        if !self.opened {
            self.opened = self.open_marker(false)?;
        }
        Ok(self.opened)
    }

    fn ensure_open(&mut self) -> Result<()> {
        if self.exists()? {
            Ok(())
        } else {
            Err(Error::Remote {
                remote: self.name.clone(),
                why: format!(
                    "{} is not a shelldone S3 remote (no {MARKER}); create it with 'shelldone remote add {} {} --init'",
                    self.url, self.name, self.url
                ),
                transient: false,
                source: None,
            })
        }
    }

    /// Every key under `<prefix>/<under>/`, relative to it and decoded: `object_store` escapes
    /// characters S3 advises against (`%` becomes `%25`) in the keys it writes and lists them
    /// as written, so a listed name is unescaped to the name a later read or write is given.
    /// One listing serves both the refs and the objects.
    fn list_under(&mut self, under: &str, what: &str) -> Result<Vec<String>> {
        let prefix = self.key(under);
        let store = Arc::clone(&self.store);
        let keys: std::result::Result<Vec<String>, object_store::Error> = self.rt.block_on(async {
            store
                .list(Some(&prefix))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
        });
        let keys = keys.map_err(|e| self.err(&format!("listing {what}"), &e))?;
        Ok(keys
            .iter()
            .filter_map(|k| self.rel(k)?.strip_prefix(under)?.strip_prefix('/'))
            .filter_map(unescape_key)
            .collect())
    }

    /// Lists the objects the service holds, once per handle.
    fn known(&mut self) -> Result<&mut HashSet<ObjectId>> {
        if self.known.is_none() {
            let names = self.list_under("objects", "objects")?;
            let mut set = HashSet::with_capacity(names.len());
            for rest in names {
                let Some((fan, tail)) = rest.split_once('/') else {
                    continue;
                };
                if fan.len() == 2
                    && let Ok(id) = ObjectId::from_hex(&format!("{fan}{tail}"))
                {
                    set.insert(id);
                }
            }
            self.known = Some(set);
        }
        Ok(self.known.get_or_insert_with(HashSet::new))
    }

    /// Reads refs by name (several at a time): value and ETag; absent refs read as None.
    fn read_refs(&mut self, names: &[String]) -> Result<Vec<RefSeen>> {
        let keys: Vec<KeyPath> = names
            .iter()
            .map(|n| self.key(&format!("refs/{n}")))
            .collect();
        let store = Arc::clone(&self.store);
        let got: Vec<RefRead> = self.rt.block_on(
            futures::stream::iter(keys.iter().map(|k| {
                let store = Arc::clone(&store);
                async move {
                    match store.get(k).await {
                        Ok(g) => {
                            let tag = g.meta.e_tag.clone();
                            if g.meta.size > 200 {
                                return Ok(Some((vec![0; 201], tag)));
                            }
                            g.bytes().await.map(|b| Some((b.to_vec(), tag)))
                        }
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            }))
            .buffered(CONCURRENCY)
            .collect(),
        );
        let mut out = Vec::with_capacity(names.len());
        for (name, g) in names.iter().zip(got) {
            let seen = match g.map_err(|e| self.err(&format!("reading ref {name}"), &e))? {
                None => RefSeen {
                    id: None,
                    e_tag: None,
                },
                Some((bytes, e_tag)) => {
                    let id = parse_ref(&bytes).ok_or_else(|| {
                        Error::remote(
                            &self.name,
                            format!("ref {name} ({}) is malformed", self.url),
                        )
                    })?;
                    RefSeen {
                        id: Some(id),
                        e_tag,
                    }
                }
            };
            self.refs_seen.insert(name.clone(), seen.clone());
            out.push(seen);
        }
        Ok(out)
    }

    /// Writes one ref conditionally on what this handle saw (`seen`).
    fn write_ref(&mut self, u: &RefUpdate, seen: &RefSeen) -> Result<()> {
        let key = self.key(&format!("refs/{}", u.name));
        let store = Arc::clone(&self.store);
        let Some(new) = u.new else {
            // S3 has no conditional delete that every service offers; the compare above and
            // the device's own namespace are what protect it. Pushes never delete refs.
            let res = self.rt.block_on(store.delete(&key));
            return match res {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.refs_seen.insert(
                        u.name.clone(),
                        RefSeen {
                            id: None,
                            e_tag: None,
                        },
                    );
                    Ok(())
                }
                Err(e) => Err(self.err(&format!("deleting ref {}", u.name), &e)),
            };
        };
        let body = format!("{}\n", new.to_hex()).into_bytes();
        let mode = match &seen.e_tag {
            None if seen.id.is_none() => PutMode::Create,
            None => {
                // A service that gave no ETag: nothing to make the write conditional on.
                PutMode::Overwrite
            }
            Some(t) => PutMode::Update(UpdateVersion {
                e_tag: Some(t.clone()),
                version: None,
            }),
        };
        let res = self.rt.block_on(store.put_opts(
            &key,
            PutPayload::from(body.clone()),
            PutOptions::from(mode),
        ));
        let res = match res {
            Err(e) if unsupported(&e) => {
                // Fallback for services without conditional writes: compare again, then write.
                let now = self.read_refs(std::slice::from_ref(&u.name))?;
                if now[0].id != u.expected {
                    return Err(ref_conflict(u, now[0].id));
                }
                self.rt.block_on(store.put(&key, PutPayload::from(body)))
            }
            r => r,
        };
        match res {
            Ok(r) => {
                self.refs_seen.insert(
                    u.name.clone(),
                    RefSeen {
                        id: Some(new),
                        e_tag: r.e_tag,
                    },
                );
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotModified { .. },
            ) => {
                // Lost the race: say what is there now.
                self.refs_seen.remove(&u.name);
                let now = self.read_refs(std::slice::from_ref(&u.name))?;
                Err(ref_conflict(u, now[0].id))
            }
            Err(e) => Err(self.err(&format!("writing ref {}", u.name), &e)),
        }
    }
}

/// True for an error that says the service does not offer conditional writes.
fn unsupported(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }
    ) || crate::error::chain(e).contains("NotImplemented")
}

/// The name `object_store` escaped into a listed key, back: `%XX` is the byte XX (it escapes
/// `%` itself, so this is the exact inverse). None for a key it did not write (a stray `%`, or
/// bytes that are not UTF-8), which no read could reach either.
fn unescape_key(key: &str) -> Option<String> {
    let b = key.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a ref's content: 64 hex characters and a newline (a missing newline is accepted).
fn parse_ref(content: &[u8]) -> Option<ObjectId> {
    let s = std::str::from_utf8(content).ok()?;
    let s = s.strip_suffix('\n').unwrap_or(s);
    ObjectId::from_hex(s).ok()
}

impl Backend for S3Remote {
    fn name(&self) -> &str {
        &self.name
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        let mut out = BTreeMap::new();
        if !self.exists()? {
            return Ok(out);
        }
        let mut names = self.list_under("refs", "refs")?;
        names.retain(|n| check_remote_ref(n).is_ok());
        // What this handle saw before and is gone now is absent (for the next compare).
        self.refs_seen.clear();
        let seen = self.read_refs(&names)?;
        for (n, s) in names.into_iter().zip(seen) {
            if let Some(id) = s.id {
                out.insert(n, id);
            }
        }
        Ok(out)
    }

    /// One listing of `objects/` per handle answers every question (a push asks about the
    /// whole history); objects are never deleted from a remote, so it stays true.
    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        self.ensure_open()?;
        let known = self.known()?;
        Ok(ids.iter().map(|id| known.contains(id)).collect())
    }

    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_open()?;
        let keys: Vec<KeyPath> = ids.iter().map(|id| self.object_key(id)).collect();
        let store = Arc::clone(&self.store);
        let got: Vec<std::result::Result<Option<Vec<u8>>, GetError>> = self.rt.block_on(
            futures::stream::iter(keys.iter().map(|k| {
                let store = Arc::clone(&store);
                async move {
                    match store.get(k).await {
                        Ok(g) => {
                            if g.meta.size > verify::MAX_RAW_OBJECT {
                                return Err(GetError::TooBig(g.meta.size));
                            }
                            g.bytes()
                                .await
                                .map(|b| Some(b.to_vec()))
                                .map_err(GetError::Store)
                        }
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(GetError::Store(e)),
                    }
                }
            }))
            .buffered(CONCURRENCY)
            .collect(),
        );
        ids.iter()
            .zip(got)
            .map(|(id, g)| match g {
                Ok(v) => Ok(v),
                Err(GetError::TooBig(n)) => Err(Error::CorruptObject {
                    id: *id,
                    why: format!("stored object is {n} bytes, over the limit"),
                }),
                Err(GetError::Store(e)) => Err(self.err(&format!("reading object {id}"), &e)),
            })
            .collect()
    }

    /// Up to `CONCURRENCY` requests at a time; a body over its bound is not read.
    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        if wanted.is_empty() || self.ensure_open().is_err() {
            return vec![None; wanted.len()];
        }
        let keys: Vec<(KeyPath, u64)> = wanted
            .iter()
            .map(|(id, bound)| (self.object_key(id), (*bound).min(verify::MAX_RAW_OBJECT)))
            .collect();
        let store = Arc::clone(&self.store);
        self.rt.block_on(
            futures::stream::iter(keys.iter().map(|(k, bound)| {
                let store = Arc::clone(&store);
                async move {
                    let g = store.get(k).await.ok()?;
                    if g.meta.size > *bound {
                        return None;
                    }
                    g.bytes().await.ok().map(|b| b.to_vec())
                }
            }))
            .buffered(CONCURRENCY)
            .collect(),
        )
    }

    /// Sends the objects in rounds of at most `ROUND_BYTES`, `CONCURRENCY` requests at a
    /// time. Each PUT stores a whole object or nothing, and the refs move only after every
    /// object is stored, so the order inside a round does not matter: a push cut off leaves
    /// extra objects, which the next push finds and does not send again.
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        self.ensure_open()?;
        self.known()?;
        let store = Arc::clone(&self.store);
        let mut round: Vec<Outgoing> = Vec::new();
        let mut bytes = 0usize;
        let mut done = false;
        while !done {
            match objects.next() {
                Some(o) => {
                    let o = o?;
                    bytes += o.raw.len();
                    round.push(o);
                }
                None => done = true,
            }
            if round.is_empty() || (!done && bytes < ROUND_BYTES) {
                continue;
            }
            let batch = std::mem::take(&mut round);
            bytes = 0;
            let res: std::result::Result<Vec<ObjectId>, object_store::Error> = self.rt.block_on(
                futures::stream::iter(batch.into_iter().map(|o| {
                    let store = Arc::clone(&store);
                    let key = self.object_key(&o.id);
                    async move { store.put(&key, PutPayload::from(o.raw)).await.map(|_| o.id) }
                }))
                .buffer_unordered(CONCURRENCY)
                .try_collect(),
            );
            let stored = res.map_err(|e| self.err("storing objects", &e))?;
            self.known()?.extend(stored);
        }
        Ok(())
    }

    /// Compares every expected value with what this handle read last (or reads it now), then
    /// writes each ref conditionally on the ETag it read ([`PutMode::Create`] for an absent
    /// ref, [`PutMode::Update`] otherwise): a writer that moved it in between makes this one
    /// fail with [`Error::RefConflict`]. S3 has no multi-key transaction: a lost race on the
    /// second of several refs leaves the first moved (only another copy of this device's store
    /// can race it; the next push reads them again).
    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        for u in updates {
            check_remote_ref(&u.name)?;
        }
        self.ensure_open()?;
        let stale: Vec<String> = updates
            .iter()
            .filter(|u| {
                self.refs_seen
                    .get(&u.name)
                    .is_none_or(|s| s.id != u.expected)
            })
            .map(|u| u.name.clone())
            .collect();
        self.read_refs(&stale)?;
        let mut plan = Vec::with_capacity(updates.len());
        for u in updates {
            let seen = self.refs_seen.get(&u.name).cloned().unwrap_or(RefSeen {
                id: None,
                e_tag: None,
            });
            if seen.id != u.expected {
                return Err(ref_conflict(u, seen.id));
            }
            plan.push(seen);
        }
        for (u, seen) in updates.iter().zip(&plan) {
            self.write_ref(u, seen)?;
        }
        Ok(())
    }
}

enum GetError {
    TooBig(u64),
    Store(object_store::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "a/b");
        assert_eq!(u.to_string(), "s3://my-bucket/a/b");
        assert_eq!(S3Url::parse("s3://bkt").unwrap().prefix, "");
        for bad in [
            "s3://",
            "s3://B/x",
            "s3://ab",
            "s3://bucket/../y",
            "s3://bucket/a//b",
            "s3://bucket/a b",
            "http://b/x",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn profiles_and_precedence() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".aws")).unwrap();
        std::fs::write(
            d.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n[dev]\naws_access_key_id=DEV\naws_secret_access_key=devsecret\naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile dev]\nregion = eu-central-1\nendpoint_url = http://127.0.0.1:9\n",
        )
        .unwrap();
        let home = d.path().display().to_string();
        let env = |pairs: &[(&str, &str)]| {
            let mut m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            m.insert("HOME".into(), home.clone());
            AwsEnv::from_vars(|k| m.get(k).cloned())
        };
        let r = env(&[]).resolve(None, None).unwrap();
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(r.endpoint, None);
        assert_eq!(r.credentials.unwrap().0, "DEF");
        let r = env(&[("AWS_PROFILE", "dev")]).resolve(None, None).unwrap();
        assert_eq!(r.region, "eu-central-1");
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(
            r.credentials.unwrap(),
            ("DEV".into(), "devsecret".into(), Some("tok".into()))
        );
        let e = env(&[
            ("AWS_PROFILE", "dev"),
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "ap-south-1"),
            ("AWS_ENDPOINT_URL", "http://e"),
        ]);
        let r = e.resolve(None, None).unwrap();
        assert_eq!(r.credentials.unwrap().0, "ENV");
        assert_eq!(r.region, "ap-south-1");
        assert_eq!(r.endpoint.as_deref(), Some("http://e"));
        let r = e.resolve(Some("http://flag"), Some("flag-region")).unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://flag"));
        assert_eq!(r.region, "flag-region");
        assert!(env(&[("AWS_PROFILE", "nope")]).resolve(None, None).is_err());
        assert!(
            env(&[("AWS_ACCESS_KEY_ID", "x")])
                .resolve(None, None)
                .is_err()
        );
        // Secrets never show in debug output.
        assert!(!format!("{e:?}").contains("envsecret"));
    }

    #[test]
    fn listed_keys_unescape_to_the_names_written() {
        // What object_store writes for a name is what a listing gives back; unescaping it
        // gives the name again (the encrypted remote's `%keys/head`, a session ref's `%20`).
        for name in ["%keys/head", "laptop/sessions/s%201", "dev/head", "a%25b/c"] {
            let written = KeyPath::from(format!("refs/{name}")).to_string();
            let listed = written.strip_prefix("refs/").unwrap();
            assert_eq!(unescape_key(listed).as_deref(), Some(name), "{written}");
        }
        assert_eq!(unescape_key("bad%2"), None);
        assert_eq!(unescape_key("bad%zz"), None);
    }

    #[test]
    fn config_file_profile_headers() {
        let t = "[profile dev]\nregion=a\n[dev]\nregion=b\n[default]\nregion=c\n";
        assert_eq!(parse_ini_section(t, "dev", true).unwrap()["region"], "a");
        assert_eq!(parse_ini_section(t, "dev", false).unwrap()["region"], "b");
        assert_eq!(
            parse_ini_section(t, "default", true).unwrap()["region"],
            "c"
        );
        assert!(parse_ini_section(t, "x", true).is_none());
    }
}
