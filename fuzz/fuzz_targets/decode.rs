//! Any bytes: `decode` must not panic; if it accepts them, they are the object's one canonical
//! encoding and verify under their own id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use objects_format::{ObjectId, decode, decode_as, encode, verify};

fuzz_target!(|data: &[u8]| {
    if let Ok(obj) = decode(data) {
        let again = encode(&obj).expect("a decoded object must re-encode");
        assert_eq!(again, data, "decode accepted a non-canonical encoding");
        let id = ObjectId::compute(obj.kind(), data);
        assert_eq!(verify(&id, data).as_ref(), Ok(&obj));
        assert_eq!(decode_as(data, obj.kind()).as_ref(), Ok(&obj));
    }
});
