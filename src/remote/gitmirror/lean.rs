//! A lean mirror (ADR 0007): the mirror keeps commits and trees; the blobs, whose bytes the
//! store already holds, are dropped once they are on the remote (after a push) or in the store
//! (after an import), so a git remote no longer doubles the store on disk.
//!
//! Three things make that safe:
//! * fetches never ask for a *thin* pack ([`NoThin`]): a thin pack may hold deltas against
//!   objects the client has (by the server's reckoning) and this mirror dropped;
//! * pushes run `git push --no-thin` (the same, the other way) and first restore from the store
//!   every blob the remote lacks ([`missing_for_push`]);
//! * a blob is dropped only when whoever needs it later can have it again: the remote holds it
//!   after a push, and the store holds it (checked) after an import.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gix::ObjectId as GitId;
use gix::bstr::BStr;
use gix::protocol::transport::client::blocking_io::{RequestWriter, SetServiceResponse, Transport};
use gix::protocol::transport::client::{
    Error as TransportError, MessageKind, TransportWithoutIO, WriteMode,
};

use super::process::{run_with_timeout, supervised_git};
use super::{GitError, GitResult, gix_err, io_err};

/// Whether a remote at `url` can have a lean mirror: its fetches go through gix (`git://`,
/// `ssh://`, `file://`, a path), whose requests `NoThin` rewrites. An http(s) remote is
/// fetched by the `git` binary, which always asks for a thin pack, so its mirror keeps every
/// object (this build links no HTTP stack for gix).
#[must_use]
pub fn lean_capable(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    !(lower.starts_with("http://") || lower.starts_with("https://"))
}

/// A gix transport whose fetch requests never ask for a thin pack: the `thin-pack` argument
/// (protocol v2) and capability (v0/v1, on the first `want` line) are taken out of the packet
/// lines on their way to the server. Everything else passes unchanged.
pub(super) struct NoThin<T>(pub(super) T);

impl<T: TransportWithoutIO> TransportWithoutIO for NoThin<T> {
    fn set_identity(
        &mut self,
        identity: gix::protocol::transport::client::Account,
    ) -> Result<(), TransportError> {
        self.0.set_identity(identity)
    }

    fn to_url(&self) -> Cow<'_, BStr> {
        self.0.to_url()
    }

    fn supported_protocol_versions(&self) -> &[gix::protocol::transport::Protocol] {
        self.0.supported_protocol_versions()
    }

    fn connection_persists_across_multiple_requests(&self) -> bool {
        self.0.connection_persists_across_multiple_requests()
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::Result {
        self.0.configure(config)
    }
}

impl<T: Transport> Transport for NoThin<T> {
    fn handshake<'a>(
        &mut self,
        service: gix::protocol::transport::Service,
        extra_parameters: &'a [(&'a str, Option<&'a str>)],
    ) -> Result<SetServiceResponse<'_>, TransportError> {
        self.0.handshake(service, extra_parameters)
    }

    fn request(
        &mut self,
        write_mode: WriteMode,
        on_into_read: MessageKind,
        trace: bool,
    ) -> Result<RequestWriter<'_>, TransportError> {
        let (raw, read) = self
            .0
            .request(write_mode, on_into_read, trace)?
            .into_parts();
        Ok(RequestWriter::new_from_bufread(
            PacketFilter::new(raw),
            read,
            write_mode,
            on_into_read,
            trace,
        ))
    }
}

/// Re-frames the packet lines written through it, dropping `thin-pack`. A stream that does not
/// parse as packet lines is passed through untouched from that point on.
struct PacketFilter<W> {
    inner: W,
    pending: Vec<u8>,
    verbatim: bool,
}

impl<W: Write> PacketFilter<W> {
    fn new(inner: W) -> Self {
        PacketFilter {
            inner,
            pending: Vec::new(),
            verbatim: false,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        loop {
            if self.verbatim {
                self.inner.write_all(&self.pending)?;
                self.pending.clear();
                return Ok(());
            }
            if self.pending.len() < 4 {
                return Ok(());
            }
            let Some(len) = std::str::from_utf8(&self.pending[..4])
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
            else {
                self.verbatim = true;
                continue;
            };
            if len < 4 {
                // flush-pkt, delim-pkt, response-end-pkt
                self.inner.write_all(&self.pending[..4])?;
                self.pending.drain(..4);
                continue;
            }
            if self.pending.len() < len {
                return Ok(());
            }
            if let Some(line) = without_thin(&self.pending[4..len]) {
                write!(self.inner, "{:04x}", line.len() + 4)?;
                self.inner.write_all(&line)?;
            }
            self.pending.drain(..len);
        }
    }
}

impl<W: Write> Write for PacketFilter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.drain()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

/// One packet line's payload without `thin-pack`: `None` for the v2 argument itself, the first
/// `want` line without the v1 capability, any other line as it is.
fn without_thin(payload: &[u8]) -> Option<Cow<'_, [u8]>> {
    let (body, lf) = match payload.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (payload, false),
    };
    if body == b"thin-pack" {
        return None;
    }
    if body.starts_with(b"want ") && body.split(|b| *b == b' ').any(|t| t == b"thin-pack") {
        let mut out: Vec<u8> = body
            .split(|b| *b == b' ')
            .filter(|t| *t != b"thin-pack")
            .collect::<Vec<_>>()
            .join(&b' ');
        if lf {
            out.push(b'\n');
        }
        return Some(Cow::Owned(out));
    }
    Some(Cow::Borrowed(payload))
}

/// The objects a push of `tips` needs that the mirror lacks: `git rev-list --objects
/// --missing=print TIPS --not REMOTE_HAS` — what the remote does not have (by the commits its refs
/// named when last fetched) and this mirror dropped. Trees and commits are never dropped, so the
/// answer is blobs.
///
/// # Errors
/// `git` cannot run, or fails (a missing tree or commit).
pub fn missing_for_push(
    mirror: &Path,
    tips: &[GitId],
    remote_has: &[GitId],
    timeout: Duration,
) -> GitResult<Vec<GitId>> {
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = supervised_git();
    cmd.arg("--git-dir")
        .arg(mirror)
        .args([
            "rev-list",
            "--objects",
            "--missing=print",
            "--no-object-names",
        ])
        .args(tips.iter().map(ToString::to_string))
        .args(remote_has.iter().map(|g| format!("^{g}")))
        .arg("--")
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, stdout, stderr) = run_with_timeout(cmd, timeout, "git rev-list")?;
    if !status.success() {
        return Err(GitError::Io {
            context: format!("listing the objects a push needs: {}", stderr.trim()),
            source: io::Error::other(status.to_string()),
        });
    }
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix('?'))
        .map(|h| {
            GitId::from_hex(h.trim().as_bytes())
                .map_err(|e| GitError::InvalidInput(format!("git rev-list printed {h:?}: {e}")))
        })
        .collect()
}

/// Deletes the loose copies of `ids` (blobs that are on the remote or in the store). An id
/// that is not loose (packed, or gone already) is skipped.
///
/// # Errors
/// A loose object cannot be removed.
pub fn drop_loose(repo: &gix::Repository, ids: &[GitId]) -> GitResult<()> {
    let objects = repo.objects.store_ref().path().to_owned();
    for id in ids {
        let hex = id.to_string();
        let path = objects.join(&hex[..2]).join(&hex[2..]);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", path.display()))(e)),
        }
    }
    Ok(())
}

/// Rewrites every pack of the mirror as loose objects without the blobs `droppable` accepts,
/// then deletes the pack: what a fetch received, once imported. Commits, trees and any blob
/// not accepted are kept (written loose before the pack goes, so a crash in between leaves both
/// copies, never neither). Returns the number of blobs dropped.
///
/// # Errors
/// A pack cannot be read, an object cannot be written, a file cannot be removed.
pub fn drop_packed_blobs(
    repo: &gix::Repository,
    droppable: &dyn Fn(&GitId) -> bool,
) -> GitResult<u64> {
    let pack_dir = repo.objects.store_ref().path().join("pack");
    let entries = match std::fs::read_dir(&pack_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(format!("reading {}", pack_dir.display()))(e)),
    };
    let mut indexes = Vec::new();
    for e in entries {
        let p = e
            .map_err(io_err(format!("reading {}", pack_dir.display())))?
            .path();
        if p.extension().is_some_and(|x| x == "idx") {
            indexes.push(p);
        }
    }
    indexes.sort();
    let loose = gix::odb::loose::Store::at(repo.objects.store_ref().path(), repo.object_hash());
    let mut dropped = 0;
    for idx_path in indexes {
        let index = gix::odb::pack::index::File::at(&idx_path, gix::hash::Kind::Sha1).map_err(
            gix_err(format!("reading pack index {}", idx_path.display())),
        )?;
        for entry in index.iter() {
            let id = entry.oid;
            let header = repo
                .find_header(id)
                .map_err(gix_err(format!("reading object {id}")))?;
            if header.kind() == gix::objs::Kind::Blob && droppable(&id) {
                dropped += 1;
                continue;
            }
            let object = repo
                .find_object(id)
                .map_err(gix_err(format!("reading object {id}")))?;
            // Straight to the loose store: the repository's own write skips what it already has.
            let written = gix::objs::Write::write_buf(&loose, object.kind, &object.data)
                .map_err(gix_err(format!("writing object {id}")))?;
            if written != id {
                return Err(GitError::InvalidInput(format!(
                    "object {id} rewrote as {written}"
                )));
            }
        }
        for ext in ["keep", "pack", "rev", "bitmap", "mtimes", "promisor", "idx"] {
            let p = idx_path.with_extension(ext);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", p.display()))(e)),
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &[u8]) -> Vec<u8> {
        let mut v = format!("{:04x}", s.len() + 4).into_bytes();
        v.extend_from_slice(s);
        v
    }

    fn filtered(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = PacketFilter::new(Vec::new());
        for c in chunks {
            f.write_all(c).unwrap();
        }
        f.flush().unwrap();
        f.inner
    }

    #[test]
    fn the_v2_argument_is_dropped_and_the_rest_passes() {
        let mut stream = pkt(b"command=fetch\n");
        stream.extend_from_slice(b"0001");
        stream.extend(pkt(b"thin-pack\n"));
        stream.extend(pkt(b"ofs-delta\n"));
        stream.extend(pkt(b"want 0123456789012345678901234567890123456789\n"));
        stream.extend_from_slice(b"0000");
        let mut want = pkt(b"command=fetch\n");
        want.extend_from_slice(b"0001");
        want.extend(pkt(b"ofs-delta\n"));
        want.extend(pkt(b"want 0123456789012345678901234567890123456789\n"));
        want.extend_from_slice(b"0000");
        assert_eq!(filtered(&[&stream]), want);
        // The same stream written a byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(filtered(&bytes), want);
    }

    #[test]
    fn the_v1_capability_leaves_the_first_want_line() {
        let line = b"want 0123456789012345678901234567890123456789 multi_ack_detailed thin-pack side-band-64k ofs-delta\n";
        let out = filtered(&[&pkt(line), b"0000"]);
        let mut want = pkt(
            b"want 0123456789012345678901234567890123456789 multi_ack_detailed side-band-64k ofs-delta\n",
        );
        want.extend_from_slice(b"0000");
        assert_eq!(out, want);
        // A want line that merely ends with it, without a newline.
        let out = filtered(&[&pkt(
            b"want 0123456789012345678901234567890123456789 thin-pack",
        )]);
        assert_eq!(out, pkt(b"want 0123456789012345678901234567890123456789"));
    }

    #[test]
    fn a_stream_that_is_not_packet_lines_passes_untouched() {
        let raw = b"PACK\x00\x00\x00\x02thin-pack";
        assert_eq!(filtered(&[raw]), raw.to_vec());
    }

    #[test]
    fn http_remotes_keep_a_full_mirror() {
        assert!(!lean_capable("https://example.com/x.git"));
        assert!(!lean_capable("HTTP://example.com/x.git"));
        assert!(lean_capable("git://127.0.0.1/x.git"));
        assert!(lean_capable("/srv/x.git"));
        assert!(lean_capable("ssh://host/x.git"));
    }
}
