//! Deterministic mutations of text inputs, for the stable fuzz smoke tests (nft/tests/fuzz_smoke.rs
//! includes this file by path; the root tests through `common`): bit flips, structural
//! characters, truncations, deletions, copied chunks, dictionary tokens, edge-value numbers,
//! splices at line starts and indentation changes.

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
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
