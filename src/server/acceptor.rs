//! The accept loop every TCP listener shares (POP3 on both ports, LMTP): who is admitted,
//! what a turned-away client is told, and one task per admitted connection.
//!
//! Refusals cost nothing that lasts: the reply (if any) is written without waiting (a fresh
//! socket's send buffer always has room for one line), no task is spawned, and each refusal
//! is counted by reason.

use crate::limits::{AddressSlot, AddressSlots};
use crate::metrics::{GaugeGuard, ListenerLabels, RefusedLabels, metrics};
use ipnet::IpNet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Who a listener admits, and what it tells those it turns away.
pub struct Gate {
    /// The listener's name in metrics and logs.
    pub listener: &'static str,
    /// Connections open at once through every gate sharing these slots.
    pub slots: Arc<Semaphore>,
    /// Connections per client address (IPv6: per /64), taken at accept; `None` where the
    /// client's address is not known yet (behind a PROXY-protocol balancer) or not limited.
    pub per_address: Option<Arc<AddressSlots>>,
    /// Only peers in these networks are served; others are refused as `untrusted_reason`.
    pub only_from: Option<Arc<Vec<IpNet>>>,
    pub untrusted_reason: &'static str,
    /// The line a refused client gets, by reason (`None`: the connection is just closed).
    pub refusal: fn(&'static str) -> Option<&'static [u8]>,
}

/// What an admitted connection holds: its process slot until it ends, and its address slot,
/// which the protocol may give back earlier (POP3 at login).
pub struct Admission {
    slot: OwnedSemaphorePermit,
    address: Option<AddressSlot>,
}

impl Gate {
    /// Admits `peer`, or turns it away (counted, told why if the gate says so).
    fn admit(&self, stream: &TcpStream, peer: SocketAddr) -> Option<Admission> {
        if let Some(trusted) = &self.only_from
            && !trusted.iter().any(|net| net.contains(&peer.ip().to_canonical()))
        {
            self.refuse(stream, peer, self.untrusted_reason);
            return None;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.refuse(stream, peer, "limit");
            return None;
        };
        let address = match &self.per_address {
            None => None,
            Some(slots) => match slots.try_acquire(peer.ip()) {
                Some(held) => Some(held),
                None => {
                    self.refuse(stream, peer, "address_limit");
                    return None;
                }
            },
        };
        Some(Admission { slot, address })
    }

    /// Turns a connection away as `reason`.
    pub fn refuse(&self, stream: &TcpStream, peer: SocketAddr, reason: &'static str) {
        metrics().connections_refused.get_or_create(&RefusedLabels { listener: self.listener, reason }).inc();
        debug!(%peer, reason, listener = self.listener, "connection refused");
        if let Some(reply) = (self.refusal)(reason) {
            let _ = stream.try_write(reply);
        }
    }
}

/// Accepts connections on `listener` until `stop`, serving each admitted one with `serve` (given
/// the connection's address slot, if the gate takes one) as a task on `tasks`.
pub async fn run<H, F>(listener: TcpListener, gate: Arc<Gate>, tasks: TaskTracker, stop: CancellationToken, serve: H)
where
    H: Fn(TcpStream, SocketAddr, Option<AddressSlot>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let labels = ListenerLabels { listener: gate.listener };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                warn!(error = %e, listener = gate.listener, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        metrics().connections_accepted.get_or_create(&labels).inc();
        let _ = stream.set_nodelay(true);
        let Some(Admission { slot, address }) = gate.admit(&stream, peer) else { continue };
        let connection = serve(stream, peer, address);
        tasks.spawn(async move {
            let _open = GaugeGuard::hold(&metrics().connections_open.get_or_create(&labels));
            connection.await;
            drop(slot);
        });
    }
}
