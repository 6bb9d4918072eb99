//! The PROXY protocol parser on arbitrary bytes: a header it accepts lies within the input, and
//! the same bytes fed with anything appended give the same header (it never reads past its
//! end); a proper prefix of an accepted header is "need more" or an error, never another header.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::proxy_header::check(data));
