//! LMTP's DATA reader and command parser on arbitrary bytes in arbitrary pieces: the message
//! and its end do not depend on the pieces, only CR LF . CR LF ends it, and CRLF text stuffed by
//! the POP3 encoder reads back exactly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::lmtp::check(data));
