#![no_main]
//! The pack index parser must never panic, and whatever it accepts (version 1 or 2) must
//! re-encode to the same bytes.
use libfuzzer_sys::fuzz_target;
use objects_format::pack::{IDX_MAGIC_V1, build_index, build_index_v1, parse_index};

fuzz_target!(|data: &[u8]| {
    let pack_len = data.first().map_or(0, |&b| u64::from(b) << 12);
    if let Ok((hash, mut entries)) = parse_index(data, pack_len) {
        let again = if data.starts_with(IDX_MAGIC_V1) {
            build_index_v1(&hash, &mut entries)
        } else {
            build_index(&hash, &mut entries)
        };
        assert_eq!(again, data);
    }
});
