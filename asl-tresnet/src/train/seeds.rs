//! The run's random streams, each a function of the seed and a position (epoch, sample), so that
//! nothing depends on thread timing and a resumed run draws what the uninterrupted run drew.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A sub-seed for (seed, a, b), mixing with SplitMix64.
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample order of `epoch`.
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch as u64, 0x5EED));
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// The stream of the reference initialisation.
pub(crate) fn init_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, 0x1417, 0))
}

/// The augmentation stream of sample `i` in `epoch`.
pub(crate) fn sample_rng(seed: u64, epoch: usize, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, epoch as u64 + 1, i as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_permutations_that_depend_on_seed_and_epoch() {
        let a = epoch_order(50, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 1, 0));
        assert_ne!(a, epoch_order(50, 1, 1));
        assert_ne!(a, epoch_order(50, 2, 0));
    }
}
