//! The whole POP3 state machine driven by arbitrary client bytes in arbitrary pieces, with a
//! stand-in for the IO it asks for (alice/secret logs in to two messages): every reply is a
//! well-formed line or multi-line block, and the transcript does not depend on the pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::protocol_machine::check(data));
