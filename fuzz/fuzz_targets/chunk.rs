//! Content-defined chunking: lengths are positive, sum to the input length, no chunk exceeds
//! MAX_CHUNK, every chunk but the last is at least MIN_CHUNK, and the result equals the spec's
//! naive boundary rule. Short fuzz inputs are also stretched (repeated up to a length taken from
//! their first two bytes) so the min/max paths are reached without huge inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use objects_format::chunk::{MASK_BITS, MAX_CHUNK, MIN_CHUNK, chunk_lengths, gear};

fn naive(data: &[u8]) -> Vec<usize> {
    let g = gear();
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (data.len() - start).min(MAX_CHUNK);
        let mut cut = end;
        let mut h = 0u64;
        for (i, &b) in data[start..start + end].iter().enumerate() {
            h = (h << 1).wrapping_add(g[usize::from(b)]);
            if i + 1 >= MIN_CHUNK && h >> (64 - MASK_BITS) == 0 {
                cut = i + 1;
                break;
            }
        }
        out.push(cut);
        start += cut;
    }
    out
}

fn check(data: &[u8]) {
    let lens = chunk_lengths(data);
    assert_eq!(lens.iter().sum::<usize>(), data.len());
    assert!(lens.iter().all(|&n| n > 0 && n <= MAX_CHUNK));
    if let Some((_, init)) = lens.split_last() {
        assert!(init.iter().all(|&n| n >= MIN_CHUNK));
    }
    assert_eq!(lens, naive(data));
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() > 2 {
        let target = usize::from(u16::from_le_bytes([data[0], data[1]])) * 8; // up to ~512 KiB
        let pattern = &data[2..];
        let mut stretched = Vec::with_capacity(target);
        let mut round = 0u8;
        while stretched.len() < target {
            // Vary each repetition a little so the data is not purely periodic.
            stretched.extend(pattern.iter().map(|&b| b.wrapping_add(round)));
            round = round.wrapping_add(1);
        }
        stretched.truncate(target);
        check(&stretched);
    }
});
