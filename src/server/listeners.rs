//! What each protocol's listener admits: POP3 on both ports (with or without a PROXY-protocol
//! balancer in front) and LMTP (only the MTAs' networks).

use super::ServerSettings;
use super::acceptor::{self, Gate};
use crate::limits::{AddressSlot, AddressSlots};
use crate::metrics::{RefusedLabels, metrics};
use crate::protocol::response::{self, Code};
use crate::session::{self, Context, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Starts accept loops on the session task tracker.
pub(super) struct Spawner<'a> {
    pub ctx: &'a Arc<Context>,
    pub tasks: &'a TaskTracker,
    pub stop: &'a CancellationToken,
    pub settings: &'a ServerSettings,
}

/// What a POP3 client over a limit is told on the plain port; on the implicit-TLS port a
/// plaintext reply would be noise.
fn pop3_refusal(reason: &'static str) -> Option<&'static [u8]> {
    static BUSY: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| response::err(Some(Code::SysTemp), "Too many connections, try again later"));
    matches!(reason, "limit" | "address_limit").then(|| BUSY.as_slice())
}

fn silent(_: &'static str) -> Option<&'static [u8]> {
    None
}

fn lmtp_refusal(reason: &'static str) -> Option<&'static [u8]> {
    Some(match reason {
        "untrusted" => b"554 5.7.1 Not authorised to deliver here\r\n",
        _ => b"421 4.3.2 Too many connections, try again later\r\n",
    })
}

impl Spawner<'_> {
    /// The POP3 listeners; both share the process's connection slots and per-address limits.
    pub fn pop3(&self, plain: Option<TcpListener>, implicit_tls: Option<TcpListener>) {
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        let per_address = AddressSlots::new(self.settings.max_connections_per_address);
        let proxied = self.settings.proxy_protocol;
        for (listener, role) in [(plain, Listener::Plain), (implicit_tls, Listener::ImplicitTls)] {
            let Some(listener) = listener else { continue };
            let gate = Arc::new(Gate {
                listener: role.name(),
                slots: slots.clone(),
                // Behind a load balancer the client's address is known only from its header.
                per_address: (!proxied).then(|| per_address.clone()),
                // Only a trusted balancer may name the client: anyone else could claim to be
                // 127.0.0.1 or dodge throttles by inventing addresses.
                only_from: proxied.then(|| Arc::new(self.settings.proxy_trusted.clone())),
                untrusted_reason: "proxy_untrusted",
                refusal: if role == Listener::Plain { pop3_refusal } else { silent },
            });
            let (ctx, per_address, refuser) = (self.ctx.clone(), per_address.clone(), gate.clone());
            let serve = move |stream: TcpStream, peer: SocketAddr, slot: Option<AddressSlot>| {
                let (ctx, per_address, refuser) = (ctx.clone(), per_address.clone(), refuser.clone());
                async move {
                    if proxied {
                        serve_proxied(stream, peer, role, ctx, &per_address, &refuser).await;
                    } else {
                        Box::pin(session::serve(stream, peer, role, ctx, slot)).await;
                    }
                }
            };
            self.tasks.spawn(acceptor::run(listener, gate, self.tasks.clone(), self.stop.clone(), serve));
        }
    }

    /// The LMTP listener: only the trusted networks, `lmtp_max_connections` at once.
    pub fn lmtp(&self, listener: TcpListener, settings: Arc<crate::lmtp::Settings>) {
        let gate = Arc::new(Gate {
            listener: "lmtp",
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            per_address: None,
            only_from: Some(Arc::new(settings.trusted.clone())),
            untrusted_reason: "untrusted",
            refusal: lmtp_refusal,
        });
        let ctx = self.ctx.clone();
        let serve = move |stream: TcpStream, peer: SocketAddr, _: Option<AddressSlot>| {
            crate::lmtp::serve(stream, peer, ctx.clone(), settings.clone())
        };
        self.tasks.spawn(acceptor::run(listener, gate, self.tasks.clone(), self.stop.clone(), serve));
    }
}

/// A connection from a trusted balancer: its PROXY header names the client, whose address
/// then takes a per-address slot. A garbled or missing header gets no reply: it is not a
/// client of ours.
async fn serve_proxied(
    stream: TcpStream,
    peer: SocketAddr,
    role: Listener,
    ctx: Arc<Context>,
    per_address: &Arc<AddressSlots>,
    gate: &Gate,
) {
    match Box::pin(session::proxied::accept(stream, peer, ctx.settings.login_timeout)).await {
        Ok((stream, client)) => match per_address.try_acquire(client.ip()) {
            Some(slot) => Box::pin(session::serve(stream, client, role, ctx, Some(slot))).await,
            None => gate.refuse(stream.get_ref(), client, "address_limit"),
        },
        Err(e) => {
            let reason = RefusedLabels { listener: role.name(), reason: "proxy_invalid" };
            metrics().connections_refused.get_or_create(&reason).inc();
            warn!(%peer, error = %e, "connection without a valid PROXY header dropped");
        }
    }
}
