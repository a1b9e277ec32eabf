//! Address arithmetic for segments: CIDRs parsed strictly, and sets of addresses as sorted,
//! disjoint ranges, so that `except` lists, overlaps and "outside every segment" are exact.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address family: each has its own address space, sets and tuples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: addresses are integers up to 2^32 - 1.
    V4,
    /// IPv6: addresses are integers up to 2^128 - 1.
    V6,
}

impl Family {
    fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An address or network as written in a policy: `10.1.0.0/16`, `fd00::/64`, `10.1.2.3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address; its host bits are zero ([`Cidr::parse`] checks).
    pub addr: IpAddr,
    /// The prefix length: up to 32 for IPv4, up to 128 for IPv6.
    pub len: u8,
}

/// Why a text is not a CIDR, one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before any `/` is not an IPv4 or IPv6 address.
    #[error("\"{0}\" is not an IPv4 or IPv6 address or network")]
    NotAnAddress(String),
    /// The part after `/` is not a number from 0 to the family's address length.
    #[error("\"{text}\": the prefix length must be a number from 0 to {max}")]
    BadPrefixLength {
        /// The text as given.
        text: String,
        /// The family's address length in bits (32 or 128).
        max: u8,
    },
    /// Bits past the prefix are set (`10.0.0.1/24`), which usually means a mistyped network.
    #[error("\"{text}\" has host bits set; the network is {network}")]
    HostBitsSet {
        /// The text as given.
        text: String,
        /// The network it probably means, as `address/length`.
        network: String,
    },
}

impl Cidr {
    /// Parses a CIDR or a single address. Host bits must be zero: `10.0.0.1/24` is refused with
    /// a hint, since it usually means a mistyped network.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::NotAnAddress(s.to_owned()))?;
        let family = family_of(addr);
        let len = match len_text {
            None => family.bits(),
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= family.bits())
                .ok_or_else(|| CidrError::BadPrefixLength {
                    text: s.to_owned(),
                    max: family.bits(),
                })?,
        };
        let cidr = Cidr { addr, len };
        let network = cidr.first();
        if network != to_u128(addr) {
            return Err(CidrError::HostBitsSet {
                text: s.to_owned(),
                network: format!("{}/{len}", from_u128(family, network)),
            });
        }
        Ok(cidr)
    }

    /// The family of the address.
    pub fn family(&self) -> Family {
        family_of(self.addr)
    }

    fn mask(&self) -> u128 {
        let bits = self.family().bits();
        if self.len == 0 {
            0
        } else {
            (self.family().max() >> (bits - self.len)) << (bits - self.len)
        }
    }

    /// The block's first address as an integer (an IPv4 address in the low 32 bits).
    pub fn first(&self) -> u128 {
        to_u128(self.addr) & self.mask()
    }

    /// The block's last address as an integer, inclusive.
    pub fn last(&self) -> u128 {
        self.first() | (!self.mask() & self.family().max())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The family of an address.
pub fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` whose integer form is `value` (IPv4 takes the low 32 bits).
pub fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// A set of addresses of one family: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddrSet {
    ranges: Vec<(u128, u128)>,
}

impl AddrSet {
    /// The addresses of `ranges` (inclusive; any order, overlapping or not).
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> AddrSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        AddrSet { ranges: merged }
    }

    /// Every address of `family`.
    pub fn full(family: Family) -> AddrSet {
        AddrSet {
            ranges: vec![(0, family.max())],
        }
    }

    /// The ranges: sorted, disjoint, non-adjacent, each inclusive.
    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether the address with integer form `value` is in the set.
    pub fn contains(&self, value: u128) -> bool {
        match self.ranges.binary_search_by(|(a, _)| a.cmp(&value)) {
            Ok(_) => true,
            Err(0) => false,
            Err(i) => self.ranges[i - 1].1 >= value,
        }
    }

    /// The addresses in either set.
    pub fn union(&self, other: &AddrSet) -> AddrSet {
        AddrSet::from_ranges(self.ranges.iter().chain(&other.ranges).copied().collect())
    }

    /// The addresses in both sets.
    pub fn intersection(&self, other: &AddrSet) -> AddrSet {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a1, b1) = self.ranges[i];
            let (a2, b2) = other.ranges[j];
            let (a, b) = (a1.max(a2), b1.min(b2));
            if a <= b {
                out.push((a, b));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        AddrSet { ranges: out }
    }

    /// The addresses of `self` that are not in `other`.
    pub fn difference(&self, other: &AddrSet) -> AddrSet {
        let mut out = Vec::new();
        let mut j = 0;
        for &(mut a, b) in &self.ranges {
            while j < other.ranges.len() && other.ranges[j].1 < a {
                j += 1;
            }
            let mut k = j;
            let mut open = true;
            while k < other.ranges.len() && other.ranges[k].0 <= b {
                let (ca, cb) = other.ranges[k];
                if ca > a {
                    out.push((a, ca - 1));
                }
                if cb >= b {
                    open = false;
                    break;
                }
                a = cb + 1;
                k += 1;
            }
            if open {
                out.push((a, b));
            }
        }
        AddrSet { ranges: out }
    }
}

/// Addresses of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Addrs {
    /// The IPv4 addresses.
    pub v4: AddrSet,
    /// The IPv6 addresses.
    pub v6: AddrSet,
}

impl Addrs {
    /// The addresses of `cidrs`, of both families.
    pub fn of(cidrs: &[Cidr]) -> Addrs {
        let pick = |family| {
            AddrSet::from_ranges(
                cidrs
                    .iter()
                    .filter(|c| c.family() == family)
                    .map(|c| (c.first(), c.last()))
                    .collect(),
            )
        };
        Addrs {
            v4: pick(Family::V4),
            v6: pick(Family::V6),
        }
    }

    /// The addresses of one family.
    pub fn get(&self, family: Family) -> &AddrSet {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.get(family_of(addr)).contains(to_u128(addr))
    }

    /// Whether neither family holds an address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn map2(&self, other: &Addrs, f: impl Fn(&AddrSet, &AddrSet) -> AddrSet) -> Addrs {
        Addrs {
            v4: f(&self.v4, &other.v4),
            v6: f(&self.v6, &other.v6),
        }
    }

    /// The addresses in either set, family by family.
    pub fn union(&self, other: &Addrs) -> Addrs {
        self.map2(other, AddrSet::union)
    }

    /// The addresses in any of `sets`: one sort of all their ranges, where folding with
    /// [`Addrs::union`] would sort the growing result again for every set.
    pub fn union_all<'a>(sets: impl IntoIterator<Item = &'a Addrs>) -> Addrs {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for set in sets {
            v4.extend_from_slice(set.v4.ranges());
            v6.extend_from_slice(set.v6.ranges());
        }
        Addrs {
            v4: AddrSet::from_ranges(v4),
            v6: AddrSet::from_ranges(v6),
        }
    }

    /// The addresses in both sets, family by family.
    pub fn intersection(&self, other: &Addrs) -> Addrs {
        self.map2(other, AddrSet::intersection)
    }

    /// The addresses of `self` that are not in `other`, family by family.
    pub fn difference(&self, other: &Addrs) -> Addrs {
        self.map2(other, AddrSet::difference)
    }
}

/// A range in its shortest notation: one address, a CIDR block, or first-last. Decided here once,
/// so that the lints' messages and both printers of palisade-nft (text and JSON) cannot choose
/// differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeForm {
    /// One address (a prefix of the family's full length).
    Address(IpAddr),
    /// A CIDR block: its first address and its prefix length.
    Prefix(IpAddr, u8),
    /// Any other range: its first and last addresses.
    Span(IpAddr, IpAddr),
}

impl fmt::Display for RangeForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeForm::Address(a) => write!(f, "{a}"),
            RangeForm::Prefix(a, len) => write!(f, "{a}/{len}"),
            RangeForm::Span(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// A range's notation: a prefix when it is one, `first-last` otherwise.
pub fn range_form(family: Family, (a, b): (u128, u128)) -> RangeForm {
    match prefix_len(family, a, b) {
        Some(len) if len == family.bits() => RangeForm::Address(from_u128(family, a)),
        Some(len) => RangeForm::Prefix(from_u128(family, a), len),
        None => RangeForm::Span(from_u128(family, a), from_u128(family, b)),
    }
}

/// A range as text, in [`range_form`]'s notation (nft's too).
pub fn range_text(family: Family, range: (u128, u128)) -> String {
    range_form(family, range).to_string()
}

/// The prefix length if `[a, b]` is exactly one CIDR block.
pub fn prefix_len(family: Family, a: u128, b: u128) -> Option<u8> {
    let size = b.checked_sub(a)?.checked_add(1);
    let bits = family.bits();
    match size {
        // The whole v6 space: size overflows u128.
        None => (a == 0).then_some(0),
        Some(size) if size.is_power_of_two() && a % size == 0 => {
            Some(bits - size.trailing_zeros() as u8)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidrs: &[&str]) -> AddrSet {
        Addrs::of(
            &cidrs
                .iter()
                .map(|c| Cidr::parse(c).unwrap())
                .collect::<Vec<_>>(),
        )
        .v4
    }

    #[test]
    fn parses_strictly() {
        assert_eq!(Cidr::parse("10.1.0.0/16").unwrap().len, 16);
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().len, 32);
        assert_eq!(Cidr::parse("fd00::/64").unwrap().len, 64);
        let e = Cidr::parse("10.1.2.3/16").unwrap_err().to_string();
        assert!(e.contains("host bits") && e.contains("10.1.0.0/16"), "{e}");
        assert!(Cidr::parse("10.1.0.0/33").is_err());
        assert!(Cidr::parse("10.1.0/16").is_err());
        assert!(Cidr::parse("fd00::/129").is_err());
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().last(), u32::MAX as u128);
        assert_eq!(Cidr::parse("::/0").unwrap().last(), u128::MAX);
    }

    #[test]
    fn set_algebra() {
        let a = set(&["10.0.0.0/24"]);
        let hole = set(&["10.0.0.128/25"]);
        let d = a.difference(&hole);
        assert_eq!(range_text(Family::V4, d.ranges()[0]), "10.0.0.0/25");
        assert!(d.contains(to_u128("10.0.0.5".parse().unwrap())));
        assert!(!d.contains(to_u128("10.0.0.200".parse().unwrap())));
        let middle = a.difference(&set(&["10.0.0.10"]));
        assert_eq!(middle.ranges().len(), 2);
        assert_eq!(
            range_text(Family::V4, middle.ranges()[0]),
            "10.0.0.0-10.0.0.9"
        );
        assert_eq!(
            a.union(&set(&["10.0.1.0/24"])).ranges().len(),
            1,
            "adjacent merge"
        );
        assert!(a.intersection(&set(&["10.0.1.0/24"])).is_empty());
        let everything_else = AddrSet::full(Family::V4).difference(&a);
        assert_eq!(everything_else.ranges().len(), 2);
        assert!(a.difference(&a).is_empty());
    }
}
