//! Every target's allocator: one allocation above `CAP` fails (an abort, which libFuzzer records
//! as a crash) on every machine alike. Without it a huge request succeeds where memory is
//! overcommitted and aborts where it is not, so a run here and a run in CI would disagree; and
//! no input of at most 1 MiB should make a reader ask for a gigabyte.
use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a target may make.
const CAP: usize = 1 << 30;

pub struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > CAP { std::ptr::null_mut() } else { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > CAP { std::ptr::null_mut() } else { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        if size > CAP { std::ptr::null_mut() } else { System.realloc(p, l, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;
