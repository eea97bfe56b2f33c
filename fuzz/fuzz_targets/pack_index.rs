#![no_main]
//! The pack index parser must never panic, and whatever it accepts must re-encode to the same bytes.
use libfuzzer_sys::fuzz_target;
use objects_format::pack::{build_index, parse_index};

fuzz_target!(|data: &[u8]| {
    let pack_len = data.first().map_or(0, |&b| u64::from(b) << 12);
    if let Ok((hash, mut entries)) = parse_index(data, pack_len) {
        assert_eq!(build_index(&hash, &mut entries), data);
    }
});
