//! memory: placements never overlap live buffers, reuse dead ones, and respect alignment.
use proptest::prelude::*;
use xforge_passes::memory::{place, Lifetime};

fn lt(bytes: u64, first: usize, last: usize) -> Lifetime {
    Lifetime { bytes, first, last }
}

#[test]
fn a_chain_reuses_two_buffers() {
    // a → b → c → d, each alive from its producer to its consumer: two slots suffice
    let bufs = [lt(1000, 0, 1), lt(1000, 1, 2), lt(1000, 2, 3), lt(1000, 3, 4)];
    let (off, arena) = place(&bufs, 256);
    assert_eq!(arena, 2048);
    assert_eq!(off[0], off[2]);
    assert_eq!(off[1], off[3]);
    assert_ne!(off[0], off[1]);
}

#[test]
fn offsets_are_aligned_and_a_lone_buffer_starts_at_zero() {
    let (off, arena) = place(&[lt(10, 0, 0)], 256);
    assert_eq!((off[0], arena), (0, 256));
    let (off, _) = place(&[lt(10, 0, 3), lt(300, 1, 2), lt(7, 2, 5)], 256);
    assert!(off.iter().all(|o| o % 256 == 0), "{off:?}");
}

proptest! {
    #[test]
    fn live_buffers_never_share_bytes(spec in proptest::collection::vec((1u64..5000, 0usize..20, 0usize..6), 1..40)) {
        let bufs: Vec<Lifetime> = spec.iter().map(|&(b, f, len)| lt(b, f, f + len)).collect();
        let (off, arena) = place(&bufs, 256);
        let total: u64 = bufs.iter().map(|b| b.bytes.div_ceil(256) * 256).sum();
        prop_assert!(arena <= total);
        for i in 0..bufs.len() {
            prop_assert!(off[i] % 256 == 0 && off[i] + bufs[i].bytes <= arena);
            for j in 0..i {
                let (a, b) = (&bufs[i], &bufs[j]);
                if a.first <= b.last && b.first <= a.last {
                    prop_assert!(off[i] + a.bytes <= off[j] || off[j] + b.bytes <= off[i], "{i} and {j} overlap");
                }
            }
        }
    }
}
