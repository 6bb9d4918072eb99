//! Line-ending normalisation and the header check on arbitrary input in arbitrary pieces: the
//! output has only CRLF line endings and ends with one, is the same whatever the pieces, and
//! normalising it again changes nothing; the header check's verdict does not depend on pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::crlf_and_headers::check(data));
