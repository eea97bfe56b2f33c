//! Content-defined chunking (SPEC.md §5): a gear rolling hash whose table is derived from BLAKE3,
//! so the boundaries are fully specified by the spec and never depend on a third-party crate.
//!
//! A chunk boundary depends only on the 64 bytes before it, so appending to a file leaves every
//! boundary before the old end in place: a save after an append stores the old last chunk and the
//! new chunks, nothing else.

use std::sync::OnceLock;

/// Files strictly larger than this are stored as a chunk list; smaller ones as one blob.
pub const CHUNK_THRESHOLD: u64 = 64 * 1024;
/// No chunk is shorter than this (except the last of a file).
pub const MIN_CHUNK: usize = 24 * 1024;
/// No chunk is longer than this.
pub const MAX_CHUNK: usize = 256 * 1024;
/// A boundary is declared when the top `MASK_BITS` bits of the rolling hash are zero
/// (average chunk ≈ `MIN_CHUNK` + 2^`MASK_BITS` = 56 KiB). The sizes balance two costs measured by
/// `cargo bench --bench state`: per-chunk zstd frames lose compression against one stream over
/// the whole state (9 % here), and an append re-stores the file's old last chunk (1.7× the
/// change); see docs/performance.md.
pub const MASK_BITS: u32 = 15;

/// BLAKE3 `derive_key` context of the gear table.
pub const GEAR_CONTEXT: &str = "shelldone cdc gear table v1";

/// The 256-entry gear table: the first 2048 bytes of the BLAKE3 XOF in derive-key mode with
/// [`GEAR_CONTEXT`] over empty input, read as 256 little-endian u64.
pub fn gear() -> &'static [u64; 256] {
    static GEAR: OnceLock<[u64; 256]> = OnceLock::new();
    GEAR.get_or_init(|| {
        let mut bytes = [0u8; 2048];
        blake3::Hasher::new_derive_key(GEAR_CONTEXT)
            .finalize_xof()
            .fill(&mut bytes);
        let mut t = [0u64; 256];
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            t[i] = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        }
        t
    })
}

/// Length of the first chunk of `data` (which is the start of a chunk).
#[must_use]
pub fn next_boundary(data: &[u8]) -> usize {
    let g = gear();
    let end = data.len().min(MAX_CHUNK);
    if end <= MIN_CHUNK {
        return end;
    }
    let mut h: u64 = 0;
    // Bytes before MIN_CHUNK - 64 cannot influence the hash at MIN_CHUNK (64-bit shift
    // register), so skip them; the result equals hashing from the chunk start.
    let start = MIN_CHUNK - 64;
    for (i, &b) in data[start..end].iter().enumerate() {
        h = (h << 1).wrapping_add(g[usize::from(b)]);
        let len = start + i + 1;
        if len >= MIN_CHUNK && (h >> (64 - MASK_BITS)) == 0 {
            return len;
        }
    }
    end
}

/// Splits `data` into chunk lengths (all > 0, summing to `data.len()`; empty input → none).
#[must_use]
pub fn chunk_lengths(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::with_capacity(data.len() / (MIN_CHUNK + (1 << MASK_BITS)) + 1);
    let mut pos = 0;
    while pos < data.len() {
        let n = next_boundary(&data[pos..]);
        out.push(n);
        pos += n;
    }
    out
}

/// Lengths of the chunks that can be cut from the front of `held`, a stretch of a stream that
/// begins at a chunk boundary: exactly the chunks [`chunk_lengths`] gives the whole stream there.
/// A chunk is decided by at most [`MAX_CHUNK`] bytes from its start, so while more bytes may
/// follow (`at_end` false) only chunks with that many bytes held are cut; the rest (fewer than
/// `MAX_CHUNK` bytes) waits for the next read. With `at_end`, everything held is cut.
///
/// A reader holding a fixed window of at least `MAX_CHUNK` bytes can so chunk a stream of any
/// length: cut, keep the uncut tail, refill, repeat.
#[must_use]
pub fn ready_lengths(held: &[u8], at_end: bool) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < held.len() && (at_end || held.len() - pos >= MAX_CHUNK) {
        let n = next_boundary(&held[pos..]);
        out.push(n);
        pos += n;
    }
    out
}

/// True when a run of zero bytes never holds a boundary: a chunk that starts at least
/// [`MAX_CHUNK`] bytes before the end of a run of zeros is then exactly `MAX_CHUNK` zeros,
/// which lets a reader step over a sparse file's holes without reading them. (It holds for the
/// gear table of [`GEAR_CONTEXT`]; computed rather than assumed.)
#[must_use]
pub fn zeros_never_cut() -> bool {
    static NEVER: OnceLock<bool> = OnceLock::new();
    *NEVER.get_or_init(|| next_boundary(&vec![0u8; MAX_CHUNK]) == MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn lengths_cover_input_within_bounds() {
        let d = pseudo(1_000_000, 7);
        let l = chunk_lengths(&d);
        assert_eq!(l.iter().sum::<usize>(), d.len());
        for &n in &l[..l.len() - 1] {
            assert!((MIN_CHUNK..=MAX_CHUNK).contains(&n), "chunk of {n}");
        }
        assert!(
            l.len() > 5,
            "a megabyte of noise should cut many times, got {}",
            l.len()
        );
    }

    #[test]
    fn append_keeps_earlier_boundaries() {
        let d = pseudo(600_000, 3);
        let a = chunk_lengths(&d[..500_000]);
        let b = chunk_lengths(&d);
        // All but the last chunk of the shorter input are shared.
        assert_eq!(a[..a.len() - 1], b[..a.len() - 1]);
    }

    #[test]
    fn skipping_prefix_equals_full_hash() {
        // The shortcut in next_boundary must match hashing from the chunk start.
        let d = pseudo(300_000, 11);
        let g = gear();
        let mut h = 0u64;
        let mut naive = MAX_CHUNK;
        for (i, &b) in d.iter().enumerate().take(MAX_CHUNK) {
            h = (h << 1).wrapping_add(g[usize::from(b)]);
            if i + 1 >= MIN_CHUNK && (h >> (64 - MASK_BITS)) == 0 {
                naive = i + 1;
                break;
            }
        }
        assert_eq!(next_boundary(&d), naive);
    }
}
