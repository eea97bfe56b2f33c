#![no_main]
//! The block parser must never panic; every member it returns must pass the reader's member
//! check, and the members must rebuild the block exactly.
use libfuzzer_sys::fuzz_target;
use objects_format::pack::{block_member, block_push, parse_block};

fuzz_target!(|data: &[u8]| {
    if let Ok(members) = parse_block(data) {
        let mut again = Vec::new();
        for m in members {
            let bytes = block_member(data, m).expect("a parsed member passes the member check");
            assert_eq!(block_push(&mut again, bytes), m);
        }
        assert_eq!(again, data);
    }
});
