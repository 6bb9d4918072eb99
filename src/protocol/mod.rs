//! The wire protocols as pure logic, no tokio, no sockets, no clock: POP3 (the files here) and
//! LMTP ([`lmtp`]).
//!
//! Layout:
//! - [`framing`]: bytes -> command lines, with the line-length cap; [`lines`]: the input buffer
//!   a connection reads into and takes lines (or raw data) from
//! - [`command`]: a line -> [`command::Command`]
//! - [`machine`]: the state machine; says what IO the driver must do next
//! - [`maildrop`]: the snapshot taken at login and its DELE marks
//! - [`sasl`]: PLAIN and LOGIN client responses; [`scram`]: SCRAM-SHA-256 (RFC 5802, 7677)
//! - [`dotstuff`]: streaming dot-stuffing and the `TOP` cut
//! - [`response`]: response lines and codes
//! - [`proxy`]: the PROXY protocol header of load balancers

pub mod command;
pub mod dotstuff;
pub mod framing;
pub mod lines;
pub mod lmtp;
pub mod machine;
pub mod maildrop;
pub mod proxy;
pub mod response;
pub mod sasl;
pub mod scram;
