//! Secrets kept out of snapshots (`[snapshot] redact = true`, docs/keys.md): the scrollback and
//! journal content a save stores has the vault's secret values and common token shapes replaced
//! by a marker naming what was there. The live files are never changed; a restore shows the
//! marker.
//!
//! The CLI installs a [`Redactor`] for the commands that save ([`install`]); the save reads it
//! ([`active`]) for each file under `state/sessions/` and `state/journal/`. A redacted file is
//! never paired with its stat in the stat cache (its blob is not the live bytes), and while
//! redaction is on these files are always read, so turning it on takes effect at once. The
//! same bytes always redact to the same blob, so a save with nothing changed still finds
//! nothing changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Values shorter than this are not redacted (they would match everywhere).
pub const MIN_SECRET_LEN: usize = 6;

/// Replaces secrets in file content.
#[derive(Debug, Default)]
pub struct Redactor {
    /// (name, value) of the vault's secrets, longest value first.
    secrets: Vec<(String, Vec<u8>)>,
    /// Replacements made since the redactor was made.
    count: AtomicU64,
}

static ACTIVE: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// Makes `r` the redactor every save of this process uses (None: no redaction).
pub fn install(r: Option<Arc<Redactor>>) {
    *ACTIVE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = r;
}

/// The installed redactor, if any.
#[must_use]
pub fn active() -> Option<Arc<Redactor>> {
    ACTIVE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl Redactor {
    /// A redactor for these secrets (name, value) and the token shapes.
    #[must_use]
    pub fn new(secrets: impl IntoIterator<Item = (String, Vec<u8>)>) -> Redactor {
        let mut secrets: Vec<(String, Vec<u8>)> = secrets
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        Redactor {
            secrets,
            count: AtomicU64::new(0),
        }
    }

    /// True for the snapshot paths redaction covers: the scrollback and journal content.
    #[must_use]
    pub fn applies(rel: &[u8]) -> bool {
        rel.starts_with(b"state/sessions/") || rel.starts_with(b"state/journal/")
    }

    /// Replacements made so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `data` with every secret replaced, or None when it holds none.
    #[must_use]
    pub fn redact(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut cur: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(data);
        let mut n = 0u64;
        for (name, value) in &self.secrets {
            if let Some(out) = replace_all(
                &cur,
                value,
                format!("[redacted: vault secret {name}]").as_bytes(),
            ) {
                n += out.1;
                cur = std::borrow::Cow::Owned(out.0);
            }
        }
        if let Some((out, k)) = shapes(&cur) {
            n += k;
            cur = std::borrow::Cow::Owned(out);
        }
        if n == 0 {
            return None;
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        Some(cur.into_owned())
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| hay[i..].starts_with(needle))
}

fn replace_all(data: &[u8], needle: &[u8], with: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut at = find(data, needle, 0)?;
    let mut out = Vec::with_capacity(data.len());
    let mut last = 0;
    let mut n = 0;
    loop {
        out.extend_from_slice(&data[last..at]);
        out.extend_from_slice(with);
        n += 1;
        last = at + needle.len();
        match find(data, needle, last) {
            Some(a) => at = a,
            None => break,
        }
    }
    out.extend_from_slice(&data[last..]);
    Some((out, n))
}

/// A token shape: its prefix, the characters its body may have, the body's least length, and
/// the marker.
struct Shape {
    prefix: &'static [u8],
    body: fn(u8) -> bool,
    min: usize,
    max: usize,
    marker: &'static str,
}

fn upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}
fn alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

const SHAPES: &[Shape] = &[
    Shape {
        prefix: b"AKIA",
        body: upper_digit,
        min: 16,
        max: 16,
        marker: "[redacted: aws access key]",
    },
    Shape {
        prefix: b"ASIA",
        body: upper_digit,
        min: 16,
        max: 16,
        marker: "[redacted: aws access key]",
    },
    Shape {
        prefix: b"ghp_",
        body: alnum,
        min: 36,
        max: 255,
        marker: "[redacted: github token]",
    },
    Shape {
        prefix: b"gho_",
        body: alnum,
        min: 36,
        max: 255,
        marker: "[redacted: github token]",
    },
    Shape {
        prefix: b"ghu_",
        body: alnum,
        min: 36,
        max: 255,
        marker: "[redacted: github token]",
    },
    Shape {
        prefix: b"ghs_",
        body: alnum,
        min: 36,
        max: 255,
        marker: "[redacted: github token]",
    },
    Shape {
        prefix: b"github_pat_",
        body: alnum_dash,
        min: 22,
        max: 255,
        marker: "[redacted: github token]",
    },
    Shape {
        prefix: b"glpat-",
        body: alnum_dash,
        min: 20,
        max: 255,
        marker: "[redacted: gitlab token]",
    },
];

/// Replaces the token shapes, PEM private-key blocks and `Authorization:` header values.
fn shapes(data: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(data.len());
    let mut n = 0u64;
    let mut i = 0;
    while i < data.len() {
        if let Some((len, marker)) = token_at(data, i) {
            out.extend_from_slice(marker);
            n += 1;
            i += len;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    (n > 0).then_some((out, n))
}

/// The length and marker of a secret starting at `i`.
fn token_at(data: &[u8], i: usize) -> Option<(usize, &'static [u8])> {
    let rest = &data[i..];
    let boundary = i == 0 || !alnum_dash(data[i - 1]);
    if boundary {
        for s in SHAPES {
            if let Some(body) = rest.strip_prefix(s.prefix) {
                let len = body
                    .iter()
                    .take(s.max + 1)
                    .take_while(|&&c| (s.body)(c))
                    .count();
                if len >= s.min && len <= s.max {
                    return Some((s.prefix.len() + len, s.marker.as_bytes()));
                }
            }
        }
    }
    if rest.starts_with(b"-----BEGIN ") {
        let line_end = find(rest, b"-----", 11)?;
        if rest[..line_end].ends_with(b"PRIVATE KEY") {
            let end = find(rest, b"-----END ", line_end)?;
            let close = find(rest, b"-----", end + 9)? + 5;
            return Some((close, b"[redacted: private key]"));
        }
    }
    const AUTH: &[u8] = b"authorization:";
    if rest.len() > AUTH.len() && rest[..AUTH.len()].eq_ignore_ascii_case(AUTH) {
        let mut v = AUTH.len();
        while rest.get(v) == Some(&b' ') {
            v += 1;
        }
        let end = rest[v..]
            .iter()
            .position(|&c| matches!(c, b'\n' | b'\r' | b'"' | b'\'' | b'\\'))
            .map_or(rest.len(), |p| v + p);
        let value = &rest[v..end];
        if !value.is_empty() && find(value, b"[redacted", 0).is_none() {
            // Keep the header's name; only its value is replaced.
            return Some((end, b"Authorization: [redacted: authorization header]"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_values_and_token_shapes_are_replaced_and_counted() {
        let r = Redactor::new([("db".to_owned(), b"hunter2hunter2".to_vec())]);
        let input = b"pw=hunter2hunter2 key=AKIAABCDEFGHIJKLMNOP gl=glpat-abcdefghij0123456789 \
Authorization: Bearer xyz\n-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\nok";
        let out = r.redact(input).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "pw=[redacted: vault secret db] key=[redacted: aws access key] gl=[redacted: gitlab token] \
Authorization: [redacted: authorization header]\n[redacted: private key]\nok"
        );
        assert_eq!(r.count(), 5);
        assert!(r.redact(b"nothing secret here; AKIA short").is_none());
        assert_eq!(r.count(), 5);
    }

    #[test]
    fn redacting_is_deterministic_and_idempotent() {
        let r = Redactor::new([("t".to_owned(), b"abcdefgh".to_vec())]);
        let once = r.redact(b"x abcdefgh y").unwrap();
        assert_eq!(r.redact(b"x abcdefgh y").unwrap(), once);
        assert!(r.redact(&once).is_none(), "a marker is not redacted again");
    }
}
