//! The parsers of `cloudpop import` (password fields, UIDL formats, passwd files, mbox) on
//! arbitrary input: no panic, and mbox UIDLs are valid and distinct.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudpop_fuzz::import_parsers::check(data));
