//! gRPC clients for the API tests, built from the same `proto/` files.
#![allow(dead_code)]

use cloudpop::api::proto::admin_client::AdminClient;
use cloudpop::api::proto::ingest_client::IngestClient;
use cloudpop::api::proto::{DeliverRequest, DeliverResponse, End, Envelope, deliver_request::Frame};
use std::net::SocketAddr;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const INGEST_TOKEN: &str = "ingest-token-for-tests";

/// Environment that gives a test server both tokens.
pub fn token_env() -> [(&'static str, &'static str); 2] {
    [("CLOUDPOP_API_ADMIN_TOKENS", ADMIN_TOKEN), ("CLOUDPOP_API_INGEST_TOKENS", INGEST_TOKEN)]
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call (or nothing, for `None`).
#[derive(Clone)]
pub struct Bearer(Option<String>);

impl Bearer {
    pub fn admin() -> Self {
        Self(Some(ADMIN_TOKEN.into()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(req)
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

pub async fn admin(addr: SocketAddr, token: Option<&str>) -> AdminClient<Authed> {
    AdminClient::with_interceptor(channel(addr).await, Bearer(token.map(str::to_owned)))
}

pub async fn ingest(addr: SocketAddr, token: Option<&str>) -> IngestClient<Authed> {
    IngestClient::with_interceptor(channel(addr).await, Bearer(token.map(str::to_owned)))
}

/// The frames of one delivery: the envelope, the message in `chunk`-byte pieces, the end.
pub fn frames(recipients: &[&str], key: &str, message: &[u8], chunk: usize) -> Vec<DeliverRequest> {
    let envelope = Envelope {
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        idempotency_key: key.into(),
        ..Envelope::default()
    };
    std::iter::once(Frame::Envelope(envelope))
        .chain(message.chunks(chunk).map(|c| Frame::Chunk(c.to_vec())))
        .chain(std::iter::once(Frame::End(End { size: message.len() as u64 })))
        .map(|f| DeliverRequest { frame: Some(f) })
        .collect()
}

pub async fn deliver(
    client: &mut IngestClient<Authed>,
    recipients: &[&str],
    key: &str,
    message: &[u8],
) -> Result<DeliverResponse, tonic::Status> {
    let frames = frames(recipients, key, message, 1000);
    client.deliver(tokio_stream::iter(frames)).await.map(tonic::Response::into_inner)
}
