//! A 402 whose requirements are in the `PAYMENT-REQUIRED` header. The first byte
//! picks the mode: even, the rest is the header as sent (exercises the base64
//! decoders); odd, the rest is JSON that is base64-encoded first (so mutations
//! explore the document rather than break the encoding).
#![no_main]

mod common;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        common::run(Some(rest), b"");
    } else {
        let h = base64::engine::general_purpose::STANDARD.encode(rest);
        common::run(Some(h.as_bytes()), b"");
    }
});
