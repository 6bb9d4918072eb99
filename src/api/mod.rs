//! The gRPC management and ingest API.

pub mod proto;
