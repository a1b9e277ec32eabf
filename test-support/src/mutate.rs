//! The stable fuzz smoke tests' parts: deterministic mutations of text and bytes (bit flips,
//! structural characters, truncations, deletions, copied chunks, dictionary tokens, edge-value
//! numbers, splices at line starts and indentation changes), the check of one input with its
//! panic reported ([`caught`]), and the loop bounded in count and time ([`smoke`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// An input as a failure names it, so that it can be kept as a seed: text quoted, bytes in hex.
pub trait Shown {
    /// The input, printable.
    fn shown(&self) -> String;
}

impl Shown for str {
    fn shown(&self) -> String {
        format!("{self:?}")
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        self.as_str().shown()
    }
}

impl Shown for [u8] {
    fn shown(&self) -> String {
        format!("{self:02x?}")
    }
}

impl Shown for Vec<u8> {
    fn shown(&self) -> String {
        self.as_slice().shown()
    }
}

/// Runs `check` on `input`; a panic fails the test naming the input, so that it can be kept as a
/// seed.
pub fn caught<I: Shown + ?Sized, T>(input: &I, check: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(check))
        .unwrap_or_else(|_| panic!("panicked on this input:\n{}", input.shown()))
}

/// How long a smoke loop runs: at most `max` inputs or `budget`, whichever ends first; fewer
/// than `min` inputs in the budget fails the test (the machine was too slow to mean anything).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The most inputs to try.
    pub max: usize,
    /// The fewest that must have run.
    pub min: usize,
    /// The time budget.
    pub budget: Duration,
}

/// What a smoke loop did.
#[derive(Debug, Clone, Copy)]
pub struct Smoked {
    /// Inputs tried.
    pub inputs: usize,
    /// The sum of what `check` returned (inputs accepted, certificates issued...).
    pub counted: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// The loop of every fuzz smoke test: `make` draws an input from `rng`, `check` tries it and
/// says how much to count (a panic in it fails the test with the input, see [`caught`]).
pub fn smoke<I: Shown>(
    bounds: Bounds,
    rng: &mut Rng,
    mut make: impl FnMut(&mut Rng) -> I,
    mut check: impl FnMut(&I) -> usize,
) -> Smoked {
    let started = Instant::now();
    let (mut inputs, mut counted) = (0usize, 0usize);
    while inputs < bounds.max && started.elapsed() < bounds.budget {
        let input = make(rng);
        counted += caught(&input, || check(&input));
        inputs += 1;
    }
    assert!(
        inputs >= bounds.min,
        "only {inputs} inputs ran in {:?}",
        bounds.budget
    );
    Smoked {
        inputs,
        counted,
        elapsed: started.elapsed(),
    }
}

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "8",
    "24",
    "32",
    "33",
    "64",
    "128",
    "129",
    "255",
    "256",
    "65535",
    "65536",
    "-1",
    "99999999999999999999",
];

/// One input of `inputs`, changed one to four times; `tokens` is the dictionary.
pub fn mutate(rng: &mut Rng, inputs: &[String], tokens: &[&str]) -> String {
    let mut bytes = rng.pick(inputs).as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            // Flip a bit, or put a structural character in place of a byte.
            0 if len > 0 => {
                let i = rng.below(len);
                if rng.below(2) == 0 {
                    bytes[i] ^= 1 << rng.below(7);
                } else {
                    bytes[i] = *rng.pick(b"-:[]{},\"'&*!#|> \n\t0123456789./");
                }
            }
            1 => bytes.truncate(at),
            2 => {
                let end = (at + 1 + rng.below(40)).min(len);
                bytes.drain(at.min(end)..end);
            }
            3 => {
                // Copy a chunk (often a line) elsewhere.
                let start = rng.below(len + 1);
                let end = (start + rng.below(80)).min(len);
                let chunk = bytes[start..end].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, chunk);
            }
            4 => {
                let token = rng.pick(tokens).as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            5 => {
                // Swap a number for an edge value.
                if let Some(start) = (at..len).find(|&i| bytes[i].is_ascii_digit()) {
                    let end = (start..len)
                        .find(|&i| !bytes[i].is_ascii_digit())
                        .unwrap_or(len);
                    let n = rng.pick(NUMBERS).as_bytes();
                    bytes.splice(start..end, n.iter().copied());
                }
            }
            6 => {
                // Splice: this one's head, another's tail, cut at line starts.
                let other = rng.pick(inputs).as_bytes();
                let cut_here = line_start(&bytes, at);
                let cut_there = line_start(other, rng.below(other.len() + 1));
                bytes.truncate(cut_here);
                bytes.extend_from_slice(&other[cut_there..]);
            }
            _ => {
                // Indent or unindent a line.
                let start = line_start(&bytes, at);
                if rng.below(2) == 0 {
                    bytes.splice(start..start, *b"  ");
                } else if bytes[start..].starts_with(b"  ") {
                    bytes.drain(start..start + 2);
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn line_start(bytes: &[u8], at: usize) -> usize {
    bytes[..at.min(bytes.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

/// Bytes that matter in DER: tags (SEQUENCE, SET, INTEGER, BIT STRING, OCTET STRING, NULL, OID,
/// the string and time types, context tags), long-form length prefixes, and the edges of a byte.
const DER_BYTES: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x17, 0x18, 0x30, 0x31, 0x7f, 0x80,
    0x81, 0x82, 0x83, 0x84, 0x86, 0xa0, 0xa3, 0xff,
];

/// One input of `inputs`, changed one to four times at the byte level, for binary formats such
/// as DER, where a text mutation mostly breaks the outer length and stops the parser at once:
/// bit flips, DER tag and length bytes put in place of a byte, a length nudged by a little,
/// truncations, deletions, copied chunks, and splices of two inputs. Uses its own choices of
/// `rng`, so the text mutator's sequences stay as they were.
pub fn mutate_bytes(rng: &mut Rng, inputs: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = rng.pick(inputs).clone();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if len > 0 => bytes[rng.below(len)] ^= 1 << rng.below(8),
            1 if len > 0 => bytes[rng.below(len)] = *rng.pick(DER_BYTES),
            // Nudge a byte (often a length) up or down by up to 4.
            2 if len > 0 => {
                let i = rng.below(len);
                let delta = 1 + rng.below(4) as u8;
                bytes[i] = if rng.below(2) == 0 {
                    bytes[i].wrapping_add(delta)
                } else {
                    bytes[i].wrapping_sub(delta)
                };
            }
            3 => bytes.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(16)).min(len);
                bytes.drain(at.min(end)..end);
            }
            5 => {
                let start = rng.below(len + 1);
                let end = (start + rng.below(64)).min(len);
                let chunk = bytes[start..end].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, chunk);
            }
            _ => {
                // This one's head, another's tail: certificates share their structure, so the
                // tail often lands where a field of the same kind was.
                let other = rng.pick(inputs);
                let cut_there = rng.below(other.len() + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(&other[cut_there..]);
            }
        }
    }
    bytes
}
