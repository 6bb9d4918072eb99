//! Dot-stuffing and the TOP cut on arbitrary message bytes in arbitrary pieces: the stuffed
//! output unstuffs to exactly the input (plus a final CRLF when it lacked one), ends with the
//! terminator and holds no other terminator line; the output does not depend on the pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::dot_stuffing::check(data));
