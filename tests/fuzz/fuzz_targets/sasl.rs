//! The SASL decoders on arbitrary client responses: never a panic, and PLAIN credentials that
//! decode hold no NUL in the user name or password (RFC 4616 separators).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::sasl::check(data));
