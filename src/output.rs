//! Small helpers for what commands print: durations and times as people read them.

pub use palisade_identity::rfc3339;

/// `2d 3h`, `45m`, `12s`: the two largest units, enough to judge a remaining lifetime.
pub fn human_seconds(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let text = match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    };
    if seconds < 0 {
        format!("-{text}")
    } else {
        text
    }
}
