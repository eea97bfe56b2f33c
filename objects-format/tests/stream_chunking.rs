//! A stream cut a window at a time (`chunk::ready_lengths`) gives exactly the chunks of the
//! whole buffer (`chunk::chunk_lengths`, SPEC §5), whatever the content, the window and the
//! sizes the reads happen to return.

use objects_format::chunk::{MAX_CHUNK, chunk_lengths, ready_lengths, zeros_never_cut};
use proptest::collection::vec;
use proptest::prelude::*;

/// A stretch of the test data: noise, zeros (a sparse file's hole) or a repeated short pattern.
#[derive(Debug, Clone)]
enum Part {
    Noise(u64, usize),
    Zeros(usize),
    Pattern(Vec<u8>, usize),
}

fn expand(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Noise(seed, n) => {
                let mut x = seed | 1;
                out.extend((0..*n).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                }));
            }
            Part::Zeros(n) => out.resize(out.len() + n, 0),
            Part::Pattern(pat, n) => out.extend(pat.iter().cycle().take(*n)),
        }
    }
    out
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        (any::<u64>(), 0usize..400_000).prop_map(|(s, n)| Part::Noise(s, n)),
        (0usize..700_000).prop_map(Part::Zeros),
        (vec(any::<u8>(), 1..9), 0usize..300_000).prop_map(|(p, n)| Part::Pattern(p, n)),
    ]
}

/// Cuts `data` the way a reader with a fixed window of `window` bytes does, the reads
/// returning the sizes `reads` in turn (a short read is normal for a file that grows, a pipe or
/// a network filesystem).
fn streamed(data: &[u8], window: usize, reads: &[usize]) -> Vec<usize> {
    let mut held: Vec<u8> = Vec::with_capacity(window);
    let mut next = 0;
    let mut out = Vec::new();
    for r in reads.iter().cycle() {
        let n = (*r).min(window - held.len()).min(data.len() - next);
        held.extend_from_slice(&data[next..next + n]);
        next += n;
        let at_end = next == data.len();
        let cut = ready_lengths(&held, at_end);
        let used: usize = cut.iter().sum();
        out.extend(cut);
        held.drain(..used);
        assert!(held.len() < window, "a full window always cuts");
        if at_end {
            assert!(held.is_empty(), "the end cuts everything held");
            break;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stream_cuts_where_the_whole_buffer_is_cut(
        parts in vec(part(), 0..7),
        window in MAX_CHUNK..=(4 << 20),
        reads in vec(1usize..=(1 << 20), 1..6),
    ) {
        let data = expand(&parts);
        let whole = chunk_lengths(&data);
        prop_assert_eq!(whole.iter().sum::<usize>(), data.len());
        prop_assert_eq!(streamed(&data, window, &reads), whole);
    }
}

#[test]
fn smallest_window_and_one_byte_reads_agree() {
    let data = expand(&[
        Part::Noise(5, 300_000),
        Part::Zeros(600_000),
        Part::Noise(9, 100_000),
    ]);
    assert_eq!(streamed(&data, MAX_CHUNK, &[1]), chunk_lengths(&data));
}

#[test]
fn zeros_are_cut_at_max_chunk() {
    // The gear table of SPEC §5 has no boundary in a run of zeros, so a hole is cut every
    // MAX_CHUNK bytes; a reader may rely on it only through `zeros_never_cut`.
    assert!(zeros_never_cut());
    let lens = chunk_lengths(&vec![0u8; 3 * MAX_CHUNK + 5]);
    assert_eq!(lens, [MAX_CHUNK, MAX_CHUNK, MAX_CHUNK, 5]);
}
