//! Who may hold a connection to the CA, and for how long: the slots every connection takes at
//! accept, so that no client, authenticated or not, can keep renewals out.
//!
//! Two classes of slot, as an overload manager would keep them:
//!
//! - **general** (`max_connections - reserved_connections`): every connection starts here at
//!   accept, before its handshake. A client ([`client_key`]: an IPv4 address or an IPv6 /64)
//!   holds at most `max_connections_per_client` of them. A general connection that is *idle*
//!   (in its handshake, or waiting for a request head) can be shed to make room: a client at its
//!   cap replaces its own oldest idle connection, and when the pool is full the client holding
//!   the most idle connections loses its oldest one (the way nginx reuses idle keep-alive
//!   connections when it runs out). A connection is never shed while a request is in progress.
//!   Only when nothing can be shed is a new connection refused.
//! - **authenticated** (`reserved_connections`): after the handshake, a connection whose client
//!   certificate verifies to the trust bundle moves here (within the same per-client cap), and
//!   leaves the general pool. It is never shed, and it gets the long header timeout.
//!
//! A renewal therefore always reaches its handshake (its connection can always take a general
//! slot, from the most crowded client if need be), and once its certificate has verified no flood
//! of unauthenticated connections can take it away. Unauthenticated connections are also short:
//! the handshake timeout, then `request_timeout` for each request head.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::limits::client_key;

/// Why a connection was refused at accept, or an idle one shed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Crowding {
    /// The client holds its cap of connections.
    #[error("the client holds its cap of connections")]
    ClientCap,
    /// Every general slot is taken.
    #[error("every connection slot is taken")]
    PoolFull,
}

impl Crowding {
    /// The `reason` label of the metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Crowding::ClientCap => "client_cap",
            Crowding::PoolFull => "pool_full",
        }
    }
}

/// The connection slots of one service.
pub(crate) struct Admission {
    general_cap: usize,
    reserved_cap: usize,
    per_client: usize,
    inner: Mutex<Inner>,
    general_gauge: Gauge,
    authenticated_gauge: Gauge,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    general: usize,
    authenticated: usize,
    clients: HashMap<IpAddr, Client>,
    /// Class and client of every slot not yet released or shed.
    slots: HashMap<u64, (IpAddr, Class)>,
}

#[derive(Default)]
struct Client {
    general: usize,
    authenticated: usize,
    /// Its general connections that may be shed, oldest first (ids grow).
    idle: BTreeMap<u64, CancellationToken>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    General,
    Authenticated,
}

impl Admission {
    /// `max` connections, `reserved` of them only for authenticated ones, `per_client` for each
    /// client in each class. `general` and `authenticated` are the gauges kept up to date.
    pub(crate) fn new(
        max: usize,
        reserved: usize,
        per_client: usize,
        general: Gauge,
        authenticated: Gauge,
    ) -> Self {
        let max = max.max(2);
        let reserved = reserved.min(max - 1);
        Admission {
            general_cap: max - reserved,
            reserved_cap: reserved,
            per_client: per_client.max(1),
            inner: Mutex::new(Inner::default()),
            general_gauge: general,
            authenticated_gauge: authenticated,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.general_gauge.set(inner.general as i64);
        self.authenticated_gauge.set(inner.authenticated as i64);
    }

    /// A general slot for a new connection from `ip`, and the idle connections shed to make
    /// room for it (each already told to close); or why there is none.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Slot, Vec<Crowding>), Crowding> {
        let key = client_key(ip);
        let mut inner = self.lock();
        let mut shed = Vec::new();
        let at_cap = inner
            .clients
            .get(&key)
            .is_some_and(|c| c.general >= self.per_client);
        if at_cap {
            if !inner.shed_oldest_of(key) {
                return Err(Crowding::ClientCap);
            }
            shed.push(Crowding::ClientCap);
        }
        if inner.general >= self.general_cap {
            let crowded = inner
                .clients
                .iter()
                .filter(|(_, c)| !c.idle.is_empty())
                .max_by_key(|(_, c)| c.idle.len())
                .map(|(k, _)| *k);
            match crowded {
                Some(victim) => {
                    inner.shed_oldest_of(victim);
                    shed.push(Crowding::PoolFull);
                }
                None => return Err(Crowding::PoolFull),
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let token = CancellationToken::new();
        inner.general += 1;
        let client = inner.clients.entry(key).or_default();
        client.general += 1;
        client.idle.insert(id, token.clone());
        inner.slots.insert(id, (key, Class::General));
        self.publish(&inner);
        Ok((
            Slot {
                admission: self.clone(),
                id,
                shed: token,
            },
            shed,
        ))
    }
}

impl Inner {
    /// Sheds the oldest idle general connection of `key`; false if it has none.
    fn shed_oldest_of(&mut self, key: IpAddr) -> bool {
        let Some(client) = self.clients.get_mut(&key) else {
            return false;
        };
        let Some((id, token)) = client.idle.pop_first() else {
            return false;
        };
        token.cancel();
        self.slots.remove(&id);
        self.release(key, Class::General);
        true
    }

    fn release(&mut self, key: IpAddr, class: Class) {
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        match class {
            Class::General => {
                client.general -= 1;
                self.general -= 1;
            }
            Class::Authenticated => {
                client.authenticated -= 1;
                self.authenticated -= 1;
            }
        }
        if client.general == 0 && client.authenticated == 0 && client.idle.is_empty() {
            self.clients.remove(&key);
        }
    }
}

/// One connection's slot, released when dropped.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    id: u64,
    shed: CancellationToken,
}

impl Slot {
    /// Cancelled when the connection is shed to make room: close it now.
    pub(crate) fn shed(&self) -> &CancellationToken {
        &self.shed
    }

    /// Moves the connection, whose client certificate has verified, into the authenticated
    /// class; false (it stays general) when that class is full for it, or it was shed.
    pub(crate) fn authenticate(&self) -> bool {
        let admission = &self.admission;
        let mut inner = admission.lock();
        let Some(&(key, Class::General)) = inner.slots.get(&self.id) else {
            return false;
        };
        if inner.authenticated >= admission.reserved_cap {
            return false;
        }
        let Some(client) = inner.clients.get_mut(&key) else {
            return false;
        };
        if client.authenticated >= admission.per_client {
            return false;
        }
        client.idle.remove(&self.id);
        client.general -= 1;
        client.authenticated += 1;
        inner.general -= 1;
        inner.authenticated += 1;
        inner.slots.insert(self.id, (key, Class::Authenticated));
        admission.publish(&inner);
        true
    }

    /// A request is in progress until the guard is dropped: the connection may not be shed
    /// meanwhile. `None` if it has already been shed (the request should not start).
    pub(crate) fn busy(self: &Arc<Self>) -> Option<Busy> {
        let mut inner = self.admission.lock();
        let &(key, class) = inner.slots.get(&self.id)?;
        if class == Class::General {
            if let Some(client) = inner.clients.get_mut(&key) {
                client.idle.remove(&self.id);
            }
        }
        Some(Busy { slot: self.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let admission = &self.admission;
        let mut inner = admission.lock();
        if let Some((key, class)) = inner.slots.remove(&self.id) {
            if let Some(client) = inner.clients.get_mut(&key) {
                client.idle.remove(&self.id);
            }
            inner.release(key, class);
            admission.publish(&inner);
        }
    }
}

/// A request in progress on a connection (see [`Slot::busy`]).
pub(crate) struct Busy {
    slot: Arc<Slot>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let slot = &self.slot;
        let mut inner = slot.admission.lock();
        if let Some(&(key, Class::General)) = inner.slots.get(&slot.id) {
            if let Some(client) = inner.clients.get_mut(&key) {
                client.idle.insert(slot.id, slot.shed.clone());
            }
        }
    }
}

/// At most one log line per `every` for one kind of event, with the count of those left out
/// since the last line: a flood of refusals costs a bounded log.
pub(crate) struct LogBudget {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogBudget {
    pub(crate) fn new(every: Duration) -> Self {
        LogBudget {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)`: log now, mentioning the `n` events left out before; `None`: leave it out.
    pub(crate) fn take(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let left_out = state.1;
                *state = (Some(now), 0);
                Some(left_out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, reserved: usize, per_client: usize) -> Arc<Admission> {
        Arc::new(Admission::new(
            max,
            reserved,
            per_client,
            Gauge::default(),
            Gauge::default(),
        ))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_at_its_cap_replaces_its_own_oldest_idle_connection() {
        let a = admission(100, 10, 3);
        let held: Vec<_> = (0..3).map(|_| a.admit(ip("10.0.0.1")).unwrap().0).collect();
        let (fourth, shed) = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(shed, [Crowding::ClientCap]);
        assert!(held[0].shed().is_cancelled());
        assert!(!held[1].shed().is_cancelled() && !fourth.shed().is_cancelled());
        // Other clients are not affected; the /64 is one client.
        a.admit(ip("10.0.0.2")).unwrap();
        let v6: Vec<_> = (0..3)
            .map(|i| a.admit(ip(&format!("2001:db8::{i}"))).unwrap())
            .collect();
        assert!(v6.iter().all(|(_, shed)| shed.is_empty()));
        assert_eq!(
            a.admit(ip("2001:db8::ffff")).unwrap().1,
            [Crowding::ClientCap]
        );
    }

    #[test]
    fn busy_connections_are_never_shed_and_the_excess_is_refused() {
        let a = admission(100, 10, 2);
        let held: Vec<_> = (0..2)
            .map(|_| Arc::new(a.admit(ip("10.0.0.1")).unwrap().0))
            .collect();
        let busy: Vec<_> = held.iter().map(|s| s.busy().unwrap()).collect();
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Crowding::ClientCap));
        drop(busy);
        assert!(a.admit(ip("10.0.0.1")).is_ok());
        assert!(held[0].shed().is_cancelled());
        assert!(
            held[0].busy().is_none(),
            "a shed connection takes no request"
        );
    }

    #[test]
    fn a_full_pool_sheds_the_most_crowded_clients_oldest_idle_connection() {
        // 10 slots, 4 reserved: 6 general.
        let a = admission(10, 4, 5);
        let flood: Vec<_> = (0..5).map(|_| a.admit(ip("10.0.0.1")).unwrap().0).collect();
        let other = a.admit(ip("10.0.0.2")).unwrap().0;
        let (_, shed) = a.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(shed, [Crowding::PoolFull]);
        assert!(flood[0].shed().is_cancelled());
        assert!(!other.shed().is_cancelled());
    }

    #[test]
    fn authenticated_connections_leave_the_general_pool_and_are_never_shed() {
        let a = admission(4, 2, 4);
        let renewal = Arc::new(a.admit(ip("10.0.0.9")).unwrap().0);
        assert!(renewal.authenticate());
        // The general pool (2) is the flood's, and the renewal is not in it.
        let flood: Vec<_> = (0..6).map(|_| a.admit(ip("10.0.0.1")).unwrap().0).collect();
        assert!(!renewal.shed().is_cancelled());
        assert_eq!(flood.iter().filter(|s| !s.shed().is_cancelled()).count(), 2);
        // A second renewal gets through its handshake (shedding an idle one) into the reserve.
        let second = a.admit(ip("10.0.0.1")).unwrap().0;
        assert!(second.authenticate());
        // The reserve is full: a third stays general.
        let third = a.admit(ip("10.0.0.8")).unwrap().0;
        assert!(!third.authenticate());
        drop(flood);
        drop(second);
        drop(third);
        drop(renewal);
        let inner = a.lock();
        assert_eq!((inner.general, inner.authenticated), (0, 0));
        assert!(inner.clients.is_empty() && inner.slots.is_empty());
    }

    #[test]
    fn a_log_budget_leaves_out_and_counts() {
        let budget = LogBudget::new(Duration::from_secs(3600));
        assert_eq!(budget.take(), Some(0));
        assert_eq!(budget.take(), None);
        assert_eq!(budget.take(), None);
        let zero = LogBudget::new(Duration::ZERO);
        assert_eq!(zero.take(), Some(0));
        assert_eq!(zero.take(), Some(0));
    }
}
