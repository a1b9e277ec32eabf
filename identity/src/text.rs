//! How Palisade writes a certificate's serial number and a time, the same in every command's
//! output, every JSON document and every log line (docs/CLI.md, "Output").

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A certificate's serial number: lowercase hex without separators, as the DER integer's bytes
/// (`openssl x509 -serial` prints the same digits in uppercase).
pub fn serial_hex(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A time as RFC 3339 in UTC to the second (`2026-12-08T19:10:55Z`), never `time`'s own
/// display (`2026-12-08 19:10:55.0 +00:00:00`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// [`rfc3339`] of a system time (the epoch for one before it).
pub fn rfc3339_system(t: std::time::SystemTime) -> String {
    rfc3339(OffsetDateTime::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_to_the_second_and_serials_plain_lowercase_hex() {
        let t = OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap()
            + time::Duration::milliseconds(250);
        assert_eq!(rfc3339(t), "2026-11-30T00:53:20Z");
        let elsewhere = t.to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(rfc3339(elsewhere), "2026-11-30T00:53:20Z");
        assert_eq!(serial_hex(&[0x4a, 0x0b, 0xff]), "4a0bff");
    }
}
