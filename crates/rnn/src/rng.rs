//! A small, seedable, portable random generator (xoshiro256**), and the global one that
//! [`manual_seed`] seeds, as `torch.manual_seed` does.
//!
//! The same seed gives the same numbers on every machine and for every thread count.

use std::cell::RefCell;

/// xoshiro256** seeded through splitmix64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The generator's whole state, to save in a checkpoint.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator restored from [`Rng::state`].
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            // The all-zero state is a fixed point of xoshiro; never produce it.
            return Rng::new(0);
        }
        Rng { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_f32()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Uniform integer in [0, n); `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        // Lemire's multiply-shift; the bias is below 2^-64 * n, negligible here.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

thread_local! {
    static GLOBAL: RefCell<Rng> = RefCell::new(Rng::new(0));
}

/// Seeds this thread's global generator, like `torch.manual_seed(seed)`. Module constructors
/// and dropout draw from it unless given their own [`Rng`].
pub fn manual_seed(seed: u64) {
    GLOBAL.with(|g| *g.borrow_mut() = Rng::new(seed));
}

/// Runs `f` with this thread's global generator.
pub fn with_global_rng<R>(f: impl FnOnce(&mut Rng) -> R) -> R {
    GLOBAL.with(|g| f(&mut g.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            let x = a.uniform(-0.5, 0.5);
            assert_eq!(x, b.uniform(-0.5, 0.5));
            assert!((-0.5..0.5).contains(&x));
            assert!(a.below(7) < 7);
            b.below(7);
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        let mut r = Rng::new(3);
        let mean: f32 = (0..20000).map(|_| r.normal()).sum::<f32>() / 20000.0;
        assert!(mean.abs() < 0.05, "{mean}");
    }
}
