//! The framer and the command parser on arbitrary input, split at an arbitrary point: the same
//! frames whatever the split, no line longer than the limit, no line with CR or LF in it, and
//! the parser answers every line without panicking.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::command_line::check(data));
