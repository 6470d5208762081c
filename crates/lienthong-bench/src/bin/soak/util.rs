//! Small things the soak needs: a seeded random source (a run is reproducible from `--seed` as
//! far as the choices go; timing still varies), durations as typed on a command line, and
//! order statistics.

use std::time::Duration;

/// SplitMix64: tiny, seedable, good enough to pick faults and call kinds.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent stream for one task, derived from the run's seed.
    pub(crate) fn fork(&mut self, salt: u64) -> Self {
        Self(self.next_u64() ^ salt.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform between two durations.
    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(self.range(lo, hi.max(lo)))
    }

    /// One of `items`, by weight.
    pub(crate) fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = self.range(0, total.saturating_sub(1));
        for (item, w) in items {
            if pick < u64::from(*w) {
                return *item;
            }
            pick -= u64::from(*w);
        }
        items[items.len() - 1].0
    }
}

/// `500ms`, `30s`, `10m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 10m or 1h"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// Minimum, median and maximum of some durations, in seconds.
pub(crate) fn min_median_max(values: &[Duration]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Some((v[0], median, v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.range(1, 100)).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.range(1, 100)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (1..=100).contains(x)));
        assert_ne!(Rng::new(7).fork(1).next_u64(), Rng::new(7).fork(2).next_u64());
    }

    #[test]
    fn weights_are_respected() {
        let mut r = Rng::new(1);
        let picks: Vec<char> = (0..1000).map(|_| r.weighted(&[('a', 0), ('b', 1)])).collect();
        assert!(picks.iter().all(|c| *c == 'b'));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn median_of_even_and_odd() {
        let d = |s: u64| Duration::from_secs(s);
        assert_eq!(min_median_max(&[d(3), d(1), d(2)]), Some((1.0, 2.0, 3.0)));
        assert_eq!(min_median_max(&[d(4), d(1), d(2), d(3)]), Some((1.0, 2.5, 4.0)));
        assert_eq!(min_median_max(&[]), None);
    }
}
