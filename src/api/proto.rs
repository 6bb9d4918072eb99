//! Code generated from `proto/` (package `cloudpop.v1`), kept apart from hand-written code.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("cloudpop.v1");

/// The encoded descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloudpop_descriptor.bin"));
