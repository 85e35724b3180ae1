//! Callers' device buffers standing in for an artifact's input and output bindings: a plan is
//! captured with every address inside a moved arena range replaced by the same offset in the
//! caller's buffer (`Session::run_device`). Sound because every binding owns its bytes for the
//! whole run (artifact format 5): no other value is ever placed inside a moved range.

/// Arena ranges `[start, end)` (device addresses) moved to `to`; addresses outside every range
/// stay. The identity when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Remap(Vec<(u64, u64, u64)>);

impl Remap {
    /// The identity: nothing moves.
    pub fn none() -> Remap {
        Remap(vec![])
    }

    /// `ranges` as (start, end, to); they must not overlap each other.
    pub fn new(ranges: Vec<(u64, u64, u64)>) -> Remap {
        debug_assert!(ranges.iter().enumerate().all(|(i, a)| ranges[..i].iter().all(|b| a.1 <= b.0 || b.1 <= a.0)));
        Remap(ranges)
    }

    /// Where address `p` lives after the move.
    pub fn at(&self, p: u64) -> u64 {
        self.0.iter().find(|&&(s, e, _)| p >= s && p < e).map_or(p, |&(s, _, to)| to + (p - s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_a_range_keep_their_offset_and_others_stay() {
        let r = Remap::new(vec![(1000, 1100, 50_000), (2000, 2004, 7)]);
        assert_eq!(r.at(1000), 50_000);
        assert_eq!(r.at(1099), 50_099);
        assert_eq!(r.at(1100), 1100);
        assert_eq!(r.at(999), 999);
        assert_eq!(r.at(2003), 10);
        assert_eq!(Remap::none(), Remap::new(vec![]));
        assert_eq!(Remap::none().at(1234), 1234);
    }
}
