//! A seeded generator for the generated-case tests.

/// A small deterministic generator: the seed is printed, and PALISADE_TEST_SEED replays one.
pub struct Rng(u64);

impl Rng {
    pub fn from_env(default: u64) -> Rng {
        let seed = std::env::var("PALISADE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        println!("seed {seed} (PALISADE_TEST_SEED={seed} replays it)");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
