//! What one client, and all of them together, may ask of the CA: a token bucket per client
//! address and a cap on signings in progress. Both act before any signature is made.
//!
//! A "client" is [`client_key`] of its address: an IPv4 address, or an IPv6 /64 (one host
//! usually holds a whole /64, and would otherwise get a fresh bucket for each of its 2^64
//! addresses). The connection caps (`connections.rs`) and the audit trail's rate limit use the
//! same key.
//!
//! A /64 is cheap too, though: a site is usually given a /48, 65,536 of them. So an IPv6 request
//! also draws from a second, coarser bucket for its /48 ([`site_key`]), with `site_multiple`
//! (16 by default) times the client's rate and burst, and must pass both: one site gets at most
//! 16 clients' worth of requests however many /64s it spreads them over, and a few busy hosts
//! of one site do not limit each other. IPv4 has no such bucket (an IPv4 address is scarce
//! already, and one NAT may hide a whole site).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Client addresses remembered at most; beyond it, clients with a full bucket (idle ones) are
/// forgotten first, so a flood of addresses costs bounded memory.
const MAX_CLIENTS: usize = 65_536;

/// The key one client is counted under: an IPv4 address as it is (also when it comes as an
/// IPv4-mapped IPv6 address, as on a dual-stack listener), an IPv6 address cut to its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// A client key as it is written in logs and the audit trail: `10.0.0.7`, `2001:db8:1:2::/64`.
pub fn client_label(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The key of an IPv6 address's site: its /48; `None` for IPv4 (also IPv4-mapped).
pub fn site_key(ip: IpAddr) -> Option<IpAddr> {
    match client_key(ip) {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 80) - 1);
            Some(IpAddr::V6(Ipv6Addr::from(bits)))
        }
    }
}

/// Which bucket: a client's, or an IPv6 site's.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKey {
    Client(IpAddr),
    Site(IpAddr),
}

/// A token bucket per client ([`client_key`]): `per_second` requests on average, bursts of
/// `burst`; and one per IPv6 site ([`site_key`]) with `site_multiple` times both.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    site_multiple: f64,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` = 0 turns the limit off. IPv6 sites get 16 times the rate and burst (see
    /// [`RateLimiter::with_site_multiple`]).
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            site_multiple: 16.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// An IPv6 /48 gets `multiple` (at least 1) times the client's rate and burst.
    pub fn with_site_multiple(mut self, multiple: u32) -> Self {
        self.site_multiple = f64::from(multiple.max(1));
        self
    }

    fn rate_of(&self, key: BucketKey) -> (f64, f64) {
        match key {
            BucketKey::Client(_) => (self.per_second, self.burst),
            BucketKey::Site(_) => (
                self.per_second * self.site_multiple,
                self.burst * self.site_multiple,
            ),
        }
    }

    /// Takes one token for `client` (any of its addresses: the bucket is its [`client_key`]'s)
    /// and, for IPv6, one from its site's; `false`, taking none, when either bucket is empty.
    pub fn allow(&self, client: IpAddr) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let keys = [
            Some(BucketKey::Client(client_key(client))),
            site_key(client).map(BucketKey::Site),
        ];
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys.iter().flatten() {
            if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(key) {
                buckets.retain(|k, b| {
                    let (rate, burst) = self.rate_of(*k);
                    refill(b, now, rate, burst) < burst
                });
            }
        }
        let mut allowed = true;
        for key in keys.iter().flatten() {
            let (rate, burst) = self.rate_of(*key);
            let bucket = buckets.entry(*key).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            allowed &= refill(bucket, now, rate, burst) >= 1.0;
        }
        if allowed {
            for key in keys.iter().flatten() {
                if let Some(bucket) = buckets.get_mut(key) {
                    bucket.tokens -= 1.0;
                }
            }
        }
        allowed
    }
}

fn refill(bucket: &mut Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
    bucket.at = now;
    bucket.tokens
}

/// Signings in progress, capped; a request waits a little for a slot, then is told to retry.
pub struct SigningSlots {
    slots: Semaphore,
    wait: Duration,
}

impl SigningSlots {
    /// `max` signings at once; a request waits at most `wait` for one.
    pub fn new(max: usize, wait: Duration) -> Self {
        SigningSlots {
            slots: Semaphore::new(max.max(1)),
            wait,
        }
    }

    /// A slot, or `None` when none freed up within the wait.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(self.wait, self.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_is_limited_and_others_are_not() {
        let limiter = RateLimiter::new(0.001, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
    }

    #[test]
    fn an_ipv6_client_has_one_bucket_for_its_whole_slash_64() {
        let limiter = RateLimiter::new(0.001, 3);
        // Three addresses of one /64: one bucket, used up by the three.
        for a in [
            "2001:db8:1:2::1",
            "2001:db8:1:2:ffff::9",
            "2001:db8:1:2:1:2:3:4",
        ] {
            assert!(limiter.allow(a.parse().unwrap()), "{a}");
        }
        assert!(!limiter.allow("2001:db8:1:2:dead:beef::1".parse().unwrap()));
        // The next /64 is another client.
        assert!(limiter.allow("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_client() {
        let limiter = RateLimiter::new(0.001, 2);
        assert!(limiter.allow("10.0.0.7".parse().unwrap()));
        assert!(limiter.allow("::ffff:10.0.0.7".parse().unwrap()));
        assert!(!limiter.allow("10.0.0.7".parse().unwrap()));
        assert!(!limiter.allow("::ffff:10.0.0.7".parse().unwrap()));
        assert!(limiter.allow("::ffff:10.0.0.8".parse().unwrap()));
    }

    #[test]
    fn client_keys_and_their_labels() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("10.0.0.7"), key("::ffff:10.0.0.7"));
        assert_eq!(client_label(key("::ffff:10.0.0.7")), "10.0.0.7");
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:ffff:ffff:ffff"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(client_label(key("2001:db8:0:0:5::1")), "2001:db8::/64");
        assert_eq!(client_label(key("::1")), "::/64");
    }

    #[test]
    fn the_slash_64s_of_one_slash_48_share_a_site_bucket_of_a_multiple_of_the_client_one() {
        // Clients get 2 each; a /48 gets 3 × 2 = 6, however many /64s it spreads them over.
        let limiter = RateLimiter::new(0.001, 2).with_site_multiple(3);
        let allowed = (0..100u32)
            .filter(|i| {
                let ip: IpAddr = format!("2001:db8:1:{:x}::1", i / 2).parse().unwrap();
                limiter.allow(ip)
            })
            .count();
        assert_eq!(allowed, 6);
        // A fresh /64 of the spent site is refused too.
        assert!(!limiter.allow("2001:db8:1:ffff::1".parse().unwrap()));
        // Another /48 has its own site bucket; IPv4 clients have none.
        assert!(limiter.allow("2001:db8:2::1".parse().unwrap()));
        let v4: Vec<_> = (0..50u8)
            .map(|i| limiter.allow(IpAddr::from([10, 0, 1, i])))
            .collect();
        assert!(v4.iter().all(|&ok| ok));
        assert_eq!(
            site_key("2001:db8:1:ffff::1".parse().unwrap()),
            site_key("2001:db8:1::".parse().unwrap())
        );
        assert_eq!(site_key("::ffff:10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = RateLimiter::new(0.0, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| limiter.allow(a)));
    }

    #[test]
    fn remembered_clients_are_bounded() {
        let limiter = RateLimiter::new(1000.0, 1);
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            limiter.allow(IpAddr::from(i.to_be_bytes()));
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
