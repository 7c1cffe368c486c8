//! A 402 with no `PAYMENT-REQUIRED` header: the requirements are the (v1) JSON body.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::run(None, data);
});
