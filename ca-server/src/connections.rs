//! Who may hold a connection to the CA, and for how long: the slots every connection takes at
//! accept, so that no client, authenticated or not, can keep renewals out.
//!
//! Two classes of slot, as an overload manager would keep them:
//!
//! - **general** (`max_connections - reserved_connections`): every connection starts here at
//!   accept, before its handshake. A client ([`client_key`]: an IPv4 address or an IPv6 /64)
//!   holds at most `max_connections_per_client` of them. A general connection that is *idle*
//!   (in its handshake, waiting for a request head, or reading a request body: everything a
//!   client controls the pace of) can be shed to make room: a client at its cap replaces its own
//!   oldest idle connection, and when the pool is full the client holding the most idle
//!   connections loses its oldest one (the way nginx reuses idle keep-alive connections when it
//!   runs out). A general connection is *busy*, and never shed, only while the service works on
//!   a request whose body has arrived (credential, signing slot, signature): time the client
//!   cannot stretch. Only when nothing can be shed is a new connection refused.
//! - **authenticated** (`reserved_connections`): after the handshake, a connection whose client
//!   certificate verifies to the trust bundle moves here (within the per-client cap, and at most
//!   `reserved_connections_per_id` for one SPIFFE ID), and leaves the general pool. It gets the
//!   long header timeout. An ID at its cap replaces its own oldest idle reserved connection, and
//!   a full reserve its oldest idle one of any ID; a reserved connection in a request (from its
//!   head to its answer) is never shed. So one workload, or a few, cannot hold the reserve with
//!   cheap kept-alive connections.
//!
//! A renewal therefore always reaches its handshake (its connection can always take a general
//! slot, from the most crowded client if need be, since a flood's connections are idle or reading
//! a body and so sheddable), and once its certificate has verified no flood of unauthenticated
//! connections can take it away. Unauthenticated connections are also short: the handshake
//! timeout, then `request_timeout` for each request, head and body together.

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
    /// The SPIFFE ID holds its cap of reserved connections (the newcomer stays general; none
    /// is shed for it).
    #[error("the SPIFFE ID holds its cap of reserved connections")]
    IdCap,
    /// Every reserved slot is taken.
    #[error("every reserved connection slot is taken")]
    ReserveFull,
}

impl Crowding {
    /// The `reason` label of the metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Crowding::ClientCap => "client_cap",
            Crowding::PoolFull => "pool_full",
            Crowding::IdCap => "id_cap",
            Crowding::ReserveFull => "reserve_full",
        }
    }
}

/// The connection slots of one service.
pub(crate) struct Admission {
    general_cap: usize,
    reserved_cap: usize,
    per_client: usize,
    per_id: usize,
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
    /// Reserved connections that may be shed (not in a request), oldest first, with their ID.
    reserved_idle: BTreeMap<u64, (Arc<str>, CancellationToken)>,
    /// Reserved connections held by each SPIFFE ID.
    ids: HashMap<Arc<str>, usize>,
}

#[derive(Default)]
struct Client {
    general: usize,
    authenticated: usize,
    /// Its general connections that may be shed, oldest first (ids grow).
    idle: BTreeMap<u64, CancellationToken>,
}

#[derive(Clone, PartialEq, Eq)]
enum Class {
    General,
    /// With the SPIFFE ID its client certificate verified to.
    Authenticated(Arc<str>),
}

impl Admission {
    /// `max` connections, `reserved` of them only for authenticated ones, `per_client` for each
    /// client in each class, `per_id` reserved ones for each SPIFFE ID. `general` and
    /// `authenticated` are the gauges kept up to date.
    pub(crate) fn new(
        max: usize,
        reserved: usize,
        per_client: usize,
        per_id: usize,
        general: Gauge,
        authenticated: Gauge,
    ) -> Self {
        let max = max.max(2);
        let reserved = reserved.min(max - 1);
        Admission {
            general_cap: max - reserved,
            reserved_cap: reserved,
            per_client: per_client.max(1),
            per_id: per_id.max(1),
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

    /// Sheds the oldest idle reserved connection; false if there is none.
    fn shed_oldest_reserved(&mut self) -> bool {
        let found = self.reserved_idle.keys().next().copied();
        let Some(slot) = found else {
            return false;
        };
        let Some((_, token)) = self.reserved_idle.remove(&slot) else {
            return false;
        };
        token.cancel();
        if let Some((key, class)) = self.slots.remove(&slot) {
            self.release(key, class);
        }
        true
    }

    fn release(&mut self, key: IpAddr, class: Class) {
        if let Class::Authenticated(id) = &class {
            if let Some(held) = self.ids.get_mut(id) {
                *held -= 1;
                if *held == 0 {
                    self.ids.remove(id);
                }
            }
        }
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        match class {
            Class::General => {
                client.general -= 1;
                self.general -= 1;
            }
            Class::Authenticated(_) => {
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

    /// Moves the connection, whose client certificate has verified to `id`, into the
    /// authenticated class, with the reserved connections shed to make room for it (each already
    /// told to close); or why it stays general (its client or its ID at its cap with nothing
    /// idle to replace, the reserve full of connections in requests, or it was shed).
    pub(crate) fn authenticate(&self, id: &str) -> Result<Vec<Crowding>, Crowding> {
        let admission = &self.admission;
        let mut inner = admission.lock();
        let Some((key, Class::General)) = inner.slots.get(&self.id).cloned() else {
            return Err(Crowding::PoolFull);
        };
        if inner
            .clients
            .get(&key)
            .is_none_or(|c| c.authenticated >= admission.per_client)
        {
            return Err(Crowding::ClientCap);
        }
        // An ID at its cap keeps what it holds and the newcomer stays general. Replacing its oldest idle one instead would close
        // connections of the same ID's other replicas between their handshake and their request
        // (they count as idle then) whenever many renew at once, as after a rollout.
        if inner.ids.get(id).copied().unwrap_or(0) >= admission.per_id {
            return Err(Crowding::IdCap);
        }
        let mut shed = Vec::new();
        if inner.authenticated >= admission.reserved_cap {
            if !inner.shed_oldest_reserved() {
                admission.publish(&inner);
                return Err(Crowding::ReserveFull);
            }
            shed.push(Crowding::ReserveFull);
        }
        // Shedding may have emptied the client's entry (when the shed connection was its last).
        let Some(client) = inner.clients.get_mut(&key) else {
            admission.publish(&inner);
            return Err(Crowding::PoolFull);
        };
        client.idle.remove(&self.id);
        client.general -= 1;
        client.authenticated += 1;
        inner.general -= 1;
        inner.authenticated += 1;
        let id: Arc<str> = Arc::from(id);
        *inner.ids.entry(id.clone()).or_default() += 1;
        inner
            .reserved_idle
            .insert(self.id, (id.clone(), self.shed.clone()));
        inner.slots.insert(self.id, (key, Class::Authenticated(id)));
        admission.publish(&inner);
        Ok(shed)
    }

    /// The service works on a request until the guard is dropped: the connection may not be shed
    /// meanwhile. `None` if it has already been shed (the request should not go on).
    pub(crate) fn busy(self: &Arc<Self>) -> Option<Busy> {
        let mut inner = self.admission.lock();
        let (key, class) = inner.slots.get(&self.id).cloned()?;
        match class {
            Class::General => {
                if let Some(client) = inner.clients.get_mut(&key) {
                    client.idle.remove(&self.id);
                }
            }
            Class::Authenticated(_) => {
                inner.reserved_idle.remove(&self.id);
            }
        }
        Some(Busy { slot: self.clone() })
    }

    /// Whether the connection holds a reserved slot.
    #[cfg(test)]
    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(
            self.admission.lock().slots.get(&self.id),
            Some((_, Class::Authenticated(_)))
        )
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
            inner.reserved_idle.remove(&self.id);
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
        match inner.slots.get(&slot.id).cloned() {
            Some((key, Class::General)) => {
                if let Some(client) = inner.clients.get_mut(&key) {
                    client.idle.insert(slot.id, slot.shed.clone());
                }
            }
            Some((_, Class::Authenticated(id))) => {
                inner.reserved_idle.insert(slot.id, (id, slot.shed.clone()));
            }
            None => {}
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
        admission_per_id(max, reserved, per_client, usize::MAX)
    }

    fn admission_per_id(
        max: usize,
        reserved: usize,
        per_client: usize,
        per_id: usize,
    ) -> Arc<Admission> {
        Arc::new(Admission::new(
            max,
            reserved,
            per_client,
            per_id,
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
        assert_eq!(renewal.authenticate("spiffe://td/a"), Ok(vec![]));
        // The general pool (2) is the flood's, and the renewal is not in it.
        let flood: Vec<_> = (0..6).map(|_| a.admit(ip("10.0.0.1")).unwrap().0).collect();
        assert!(!renewal.shed().is_cancelled());
        assert_eq!(flood.iter().filter(|s| !s.shed().is_cancelled()).count(), 2);
        // A second renewal gets through its handshake (shedding an idle one) into the reserve.
        let second = a.admit(ip("10.0.0.1")).unwrap().0;
        let second = Arc::new(second);
        assert_eq!(second.authenticate("spiffe://td/b"), Ok(vec![]));
        // The reserve is full, and both are in requests: a third stays general.
        let busy = [renewal.busy().unwrap(), second.busy().unwrap()];
        let third = a.admit(ip("10.0.0.8")).unwrap().0;
        assert_eq!(
            third.authenticate("spiffe://td/c"),
            Err(Crowding::ReserveFull)
        );
        assert!(!renewal.shed().is_cancelled() && !second.shed().is_cancelled());
        drop(busy);
        drop(flood);
        drop(second);
        drop(third);
        drop(renewal);
        let inner = a.lock();
        assert_eq!((inner.general, inner.authenticated), (0, 0));
        assert!(inner.clients.is_empty() && inner.slots.is_empty());
        assert!(inner.ids.is_empty() && inner.reserved_idle.is_empty());
    }

    #[test]
    fn one_spiffe_id_holds_at_most_its_cap_of_reserved_slots_and_keeps_them() {
        let a = admission_per_id(100, 50, 50, 2);
        let id = "spiffe://td/ns/a/sa/x";
        let reserved = |from: &str| {
            let slot = Arc::new(a.admit(ip(from)).unwrap().0);
            let outcome = slot.authenticate(id);
            (slot, outcome)
        };
        let (first, ok1) = reserved("10.0.0.1");
        let (second, ok2) = reserved("10.0.0.2");
        assert_eq!((ok1, ok2), (Ok(vec![]), Ok(vec![])));
        // A third from the same ID, from another address, stays general; the two idle ones keep
        // their slots (another replica of the ID may be about to send its request on them).
        let (third, ok3) = reserved("10.0.0.3");
        assert_eq!(ok3, Err(Crowding::IdCap));
        assert!(!first.shed().is_cancelled() && !second.shed().is_cancelled());
        assert!(!third.shed().is_cancelled() && !third.is_authenticated());
        assert_eq!(a.lock().authenticated, 2);
        // One closes: the ID may hold another.
        drop(first);
        let (fourth, ok4) = reserved("10.0.0.4");
        assert_eq!(ok4, Ok(vec![]));
        assert!(fourth.is_authenticated());
        // Another ID is not affected.
        let other = a.admit(ip("10.0.0.4")).unwrap().0;
        assert_eq!(other.authenticate("spiffe://td/ns/a/sa/y"), Ok(vec![]));
    }

    #[test]
    fn a_full_reserve_sheds_its_oldest_idle_connection_never_one_in_a_request() {
        let a = admission_per_id(100, 3, 50, 4);
        let slots: Vec<_> = (0..3)
            .map(|i| {
                let slot = Arc::new(a.admit(ip(&format!("10.0.0.{i}"))).unwrap().0);
                assert_eq!(slot.authenticate(&format!("spiffe://td/{i}")), Ok(vec![]));
                slot
            })
            .collect();
        // The oldest is in a request: the next oldest idle one makes room.
        let busy = slots[0].busy().unwrap();
        let newcomer = a.admit(ip("10.0.0.9")).unwrap().0;
        assert_eq!(
            newcomer.authenticate("spiffe://td/9"),
            Ok(vec![Crowding::ReserveFull])
        );
        assert!(!slots[0].shed().is_cancelled());
        assert!(slots[1].shed().is_cancelled() && !slots[2].shed().is_cancelled());
        // Once its request is over, the oldest is idle again and goes first.
        drop(busy);
        let later = a.admit(ip("10.0.0.10")).unwrap().0;
        assert_eq!(
            later.authenticate("spiffe://td/10"),
            Ok(vec![Crowding::ReserveFull])
        );
        assert!(slots[0].shed().is_cancelled() && !slots[2].shed().is_cancelled());
        let inner = a.lock();
        assert_eq!(inner.authenticated, 3);
        assert_eq!(inner.ids.len(), 3);
    }

    #[test]
    fn a_general_connection_reading_a_body_is_sheddable_until_its_work_starts() {
        // A request on a general connection takes `busy` only once its body has arrived
        // (`handler::Conn::work`): until then a full pool can take the connection back.
        let a = admission(4, 2, 2);
        let trickling: Vec<_> = (0..2)
            .map(|i| Arc::new(a.admit(ip(&format!("10.0.0.{i}"))).unwrap().0))
            .collect();
        let (_renewal, shed) = a.admit(ip("10.0.0.9")).unwrap();
        assert_eq!(shed, [Crowding::PoolFull]);
        let shed_one = trickling.iter().find(|s| s.shed().is_cancelled()).unwrap();
        assert!(
            shed_one.busy().is_none(),
            "its work is refused, nothing spent"
        );
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
