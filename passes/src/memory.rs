//! The memory plan: every buffer a run needs gets an offset in one arena, and buffers that are
//! never live at the same time share bytes. Lifetimes are in steps (fusion groups in order);
//! placement is greedy by size, each buffer at the lowest aligned offset that no overlapping
//! lifetime occupies.

/// A buffer to place: its size and the steps it is live in, `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifetime {
    pub bytes: u64,
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    fn overlaps(&self, o: &Lifetime) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// Offsets (multiples of `align`) for `buffers`, and the arena's size.
// invariant: two buffers whose lifetimes overlap never share a byte
pub fn place(buffers: &[Lifetime], align: u64) -> (Vec<u64>, u64) {
    let align = align.max(1);
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    // largest first, then earliest: big buffers claim the low offsets
    order.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].bytes), buffers[i].first, i));
    let mut offsets = vec![0u64; buffers.len()];
    let mut placed: Vec<usize> = vec![];
    let mut arena = 0u64;
    for i in order {
        let b = &buffers[i];
        let size = b.bytes.div_ceil(align) * align;
        // the occupied ranges of placed buffers alive at the same time, by offset
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| buffers[j].overlaps(b))
            .map(|&j| (offsets[j], offsets[j] + buffers[j].bytes.div_ceil(align) * align))
            .collect();
        busy.sort();
        let mut at = 0u64;
        for (lo, hi) in busy {
            if at + size <= lo {
                break;
            }
            at = at.max(hi);
        }
        offsets[i] = at;
        arena = arena.max(at + size);
        placed.push(i);
    }
    (offsets, arena)
}
