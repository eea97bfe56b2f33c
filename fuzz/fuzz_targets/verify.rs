//! `verify(id, bytes)`: the first 32 input bytes are an id, the rest the object. Must not panic;
//! Ok only when the bytes decode and hash to that id. Also checks `verify` under the bytes' own id
//! agrees with `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use objects_format::encoding::split_header;
use objects_format::{ObjectId, decode, verify};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let (id, bytes) = data.split_at(32);
    let id = ObjectId(id.try_into().unwrap());
    if let Ok(obj) = verify(&id, bytes) {
        assert_eq!(ObjectId::compute(obj.kind(), bytes), id);
        assert_eq!(decode(bytes).as_ref(), Ok(&obj));
    }
    if let Ok((kind, _)) = split_header(bytes) {
        let own = ObjectId::compute(kind, bytes);
        assert_eq!(verify(&own, bytes).ok(), decode(bytes).ok());
    }
});
