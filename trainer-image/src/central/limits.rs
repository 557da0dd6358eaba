//! What connections may cost the centralized coordinator.
//!
//! Anyone can open a TCP connection, and keys are free, so nothing a stranger does may grow the
//! server without bound: connections are capped in total and per IP address, a client's frames
//! are capped at the size of its largest message (before and after the handshake), a key holds
//! at most a few sessions (a newer one closes the oldest, so a client whose old connection is
//! half-open gets back in at once), and a session that sends nothing for a long while is closed
//! (clients reconnect when they next need to).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Bounds on connections; [`ConnectionLimits::default`] suits a run of up to 256 members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections at once, authenticated or not.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_ip: usize,
    /// Sessions at once per key; a newer session closes the oldest.
    pub max_sessions_per_key: usize,
    /// The largest frame a client may send: its messages are under 1 KiB (a witness report is
    /// about 600 bytes), so a bigger declared length closes the connection before it is read.
    pub max_client_frame: usize,
    /// An authenticated session that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_ip: 64,
            max_sessions_per_key: 2,
            max_client_frame: 4096,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// The live connections and sessions, shared by the accept loop and every connection.
pub(crate) struct Connections {
    limits: ConnectionLimits,
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    /// Each key's sessions, oldest first, with the way to close each.
    sessions: HashMap<[u8; 32], VecDeque<(u64, oneshot::Sender<()>)>>,
    next_session: u64,
}

/// An admitted connection; its place is given back when it is dropped.
pub(crate) struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

/// An authenticated session; `replaced` completes when a newer session of the same key closes
/// this one.
pub(crate) struct Session {
    connections: Arc<Connections>,
    key: [u8; 32],
    id: u64,
    pub replaced: oneshot::Receiver<()>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            live: Mutex::default(),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // Every change below is a few counter updates that cannot panic halfway.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a new connection from `ip`, or `None` when the server or that address is at
    /// its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut live = self.live();
        let from_ip = live.by_ip.get(&ip).copied().unwrap_or(0);
        if live.total >= self.limits.max_connections || from_ip >= self.limits.max_per_ip {
            return None;
        }
        live.total += 1;
        live.by_ip.insert(ip, from_ip + 1);
        Some(Admitted {
            connections: self.clone(),
            ip,
        })
    }

    /// Registers a session of `key`, closing its oldest sessions beyond the limit.
    pub fn session(self: &Arc<Self>, key: [u8; 32]) -> Session {
        let mut live = self.live();
        let id = live.next_session;
        live.next_session += 1;
        let (close, replaced) = oneshot::channel();
        let sessions = live.sessions.entry(key).or_default();
        sessions.push_back((id, close));
        while sessions.len() > self.limits.max_sessions_per_key.max(1) {
            if let Some((_, close)) = sessions.pop_front() {
                let _ = close.send(());
            }
        }
        Session {
            connections: self.clone(),
            key,
            id,
            replaced,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.live().total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut live = self.connections.live();
        live.total = live.total.saturating_sub(1);
        if let Some(count) = live.by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                live.by_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut live = self.connections.live();
        if let Some(sessions) = live.sessions.get_mut(&self.key) {
            sessions.retain(|(id, _)| *id != self.id);
            if sessions.is_empty() {
                live.sessions.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 3,
            max_per_ip: 2,
            max_sessions_per_key: 2,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn connections_are_capped_in_total_and_per_address_and_given_back() {
        let connections = Connections::new(limits());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = connections.admit(a).unwrap();
        let _second = connections.admit(a).unwrap();
        assert!(connections.admit(a).is_none(), "two per address");
        let _third = connections.admit(b).unwrap();
        assert!(connections.admit(b).is_none(), "three in all");
        drop(first);
        assert_eq!(connections.open(), 2);
        assert!(connections.admit(a).is_some(), "a place was given back");
    }

    #[test]
    fn a_newer_session_of_a_key_closes_the_oldest() {
        let connections = Connections::new(limits());
        let mut first = connections.session([1; 32]);
        let mut second = connections.session([1; 32]);
        let _other_key = connections.session([2; 32]);
        assert!(first.replaced.try_recv().is_err(), "two sessions fit");
        let mut third = connections.session([1; 32]);
        assert!(first.replaced.try_recv().is_ok(), "the oldest is closed");
        assert!(second.replaced.try_recv().is_err());
        drop(second);
        let _fourth = connections.session([1; 32]);
        assert!(
            third.replaced.try_recv().is_err(),
            "the ended session made room"
        );
    }
}
