//! The C API (`include/xforge.h`): load an artifact, run it on raw buffers, free it; errors as
//! a return value plus a thread-local message. No panic crosses the boundary.
use crate::session::Session;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning an error or a panic into the thread's last error and `fail`.
fn guarded<T>(fail: T, f: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(m)) => {
            set_error(m);
            fail
        }
        Err(_) => {
            set_error("internal error (a panic in the runtime)".into());
            fail
        }
    }
}

/// The calling thread's last error message (empty if none); valid until its next failing call.
#[no_mangle]
pub extern "C" fn xforge_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Loads an artifact onto GPU `device`; NULL on failure (see `xforge_last_error`).
///
/// # Safety
/// `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_load(path: *const c_char, device: c_int) -> *mut Session {
    guarded(std::ptr::null_mut(), || {
        if path.is_null() || device < 0 {
            return Err("xforge_session_load: path is NULL or device is negative".into());
        }
        // SAFETY: the caller passes a NUL-terminated string
        let p = unsafe { CStr::from_ptr(path) }.to_str().map_err(|_| "the path is not UTF-8".to_string())?;
        let s = Session::load(Path::new(p), device as usize).map_err(|e| e.to_string())?;
        Ok(Box::into_raw(Box::new(s)))
    })
}

/// Number of inputs (`outputs` = 0) or outputs (`outputs` != 0) of a session.
///
/// # Safety
/// `s` comes from `xforge_session_load`.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_count(s: *const Session, outputs: c_int) -> usize {
    // SAFETY: the caller passes a live session
    let Some(s) = (unsafe { s.as_ref() }) else { return 0 };
    let m = &s.artifact.plans[0].memory;
    if outputs != 0 {
        m.outputs.len()
    } else {
        m.inputs.len()
    }
}

/// The batch-size buckets, smallest first: writes up to `cap` of them to `sizes` (which may be
/// NULL when `cap` is 0) and returns how many there are (0 for a model without a batch dim).
///
/// # Safety
/// `s` comes from `xforge_session_load`; `sizes` holds `cap` elements.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_buckets(s: *const Session, sizes: *mut usize, cap: usize) -> usize {
    // SAFETY: the caller passes a live session
    let Some(s) = (unsafe { s.as_ref() }) else { return 0 };
    if s.artifact.header.batch.is_none() {
        return 0;
    }
    for (k, p) in s.artifact.plans.iter().enumerate().take(if sizes.is_null() { 0 } else { cap }) {
        // SAFETY: k < cap, the length of `sizes`
        unsafe { *sizes.add(k) = p.memory.batch as usize };
    }
    s.artifact.plans.len()
}

/// The largest batch the session runs (0 for a model without a batch dim).
fn largest(s: &Session) -> u64 {
    s.artifact.plans.last().map_or(0, |p| p.memory.batch)
}

/// A caller's batch as the session takes it: 0 for a model without a batch dim.
fn batch_arg(s: &Session, batch: usize) -> u64 {
    if s.artifact.header.batch.is_none() {
        0
    } else {
        batch as u64
    }
}

/// Bytes of input (`outputs` = 0) or output `i` at batch `batch` (0 without a batch dim); 0 if
/// there is no such binding or the batch cannot run.
fn bytes_at(s: &Session, outputs: bool, i: usize, batch: u64) -> usize {
    let Ok(p) = s.artifact.plan_for(batch) else { return 0 };
    let m = &s.artifact.plans[p].memory;
    let b = (if outputs { &m.outputs } else { &m.inputs }).get(i);
    b.and_then(|b| b.bytes_at(m.batch, batch)).unwrap_or(0) as usize
}

/// Bytes of input (`outputs` = 0) or output `i` at the largest batch; 0 if there is none.
///
/// # Safety
/// `s` comes from `xforge_session_load`.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_bytes(s: *const Session, outputs: c_int, i: usize) -> usize {
    // SAFETY: the caller passes a live session
    let Some(s) = (unsafe { s.as_ref() }) else { return 0 };
    bytes_at(s, outputs != 0, i, largest(s))
}

/// The valid length of output `i` after the last run, along the axis its length depends on
/// (the run wrote only that many entries there); -1 for an output of a fixed shape or before a run.
///
/// # Safety
/// `s` comes from `xforge_session_load`.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_output_length(s: *const Session, i: usize) -> i64 {
    // SAFETY: the caller passes a live session
    let Some(s) = (unsafe { s.as_ref() }) else { return -1 };
    s.valid_lengths().get(i).copied().flatten().map_or(-1, |n| n as i64)
}

/// Bytes of input (`outputs` = 0) or output `i` at batch `batch`; 0 if there is none or the
/// session cannot run that batch.
///
/// # Safety
/// `s` comes from `xforge_session_load`.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_batch_bytes(
    s: *const Session,
    outputs: c_int,
    i: usize,
    batch: usize,
) -> usize {
    // SAFETY: the caller passes a live session
    let Some(s) = (unsafe { s.as_ref() }) else { return 0 };
    bytes_at(s, outputs != 0, i, batch_arg(s, batch))
}

/// Runs the model at its largest batch: `inputs[k]` holds input k's bytes (exactly
/// `xforge_session_bytes`), each `outputs[k]` receives output k's. Returns 0, or -1 with
/// `xforge_last_error` set.
///
/// # Safety
/// `s` comes from `xforge_session_load`; `inputs` and `outputs` hold the session's counts of
/// pointers to buffers of the sizes `xforge_session_bytes` gives.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_run(
    s: *mut Session,
    inputs: *const *const u8,
    n_inputs: usize,
    outputs: *const *mut u8,
    n_outputs: usize,
) -> c_int {
    // SAFETY: the caller passes a live session (or NULL, refused below)
    let batch = unsafe { s.as_ref() }.map_or(0, largest);
    // SAFETY: as the caller promises, with the sizes at the largest batch
    unsafe { xforge_session_run_batch(s, batch as usize, inputs, n_inputs, outputs, n_outputs) }
}

/// Runs batch `batch` (ignored without a batch dim): the buffers hold
/// `xforge_session_batch_bytes` bytes at that batch. A batch between buckets runs padded to the
/// next bucket where the model allows it. Returns 0, or -1 with `xforge_last_error` set.
///
/// # Safety
/// `s` comes from `xforge_session_load`; `inputs` and `outputs` hold the session's counts of
/// pointers to buffers of the sizes `xforge_session_batch_bytes` gives at `batch`.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_run_batch(
    s: *mut Session,
    batch: usize,
    inputs: *const *const u8,
    n_inputs: usize,
    outputs: *const *mut u8,
    n_outputs: usize,
) -> c_int {
    guarded(-1, || {
        // SAFETY: the caller passes a live session
        let s = unsafe { s.as_mut() }.ok_or("xforge_session_run: the session is NULL")?;
        let batch = batch_arg(s, batch);
        s.artifact.plan_for(batch)?;
        let m = &s.artifact.plans[0].memory;
        let (ni, no) = (m.inputs.len(), m.outputs.len());
        if n_inputs != ni || n_outputs != no || (ni > 0 && inputs.is_null()) || (no > 0 && outputs.is_null()) {
            return Err(format!("xforge_session_run: the model takes {ni} inputs and {no} outputs"));
        }
        let mut bufs = vec![];
        for k in 0..ni {
            let n = bytes_at(s, false, k, batch);
            // SAFETY: the caller passes n_inputs pointers, each to the binding's bytes
            let p = unsafe { *inputs.add(k) };
            if p.is_null() {
                return Err(format!("input {k} ('{}') is NULL", s.artifact.plans[0].memory.inputs[k].name));
            }
            bufs.push(unsafe { std::slice::from_raw_parts(p, n) });
        }
        let outs = s.run_batch(batch, &bufs).map_err(|e| e.to_string())?;
        for (k, o) in outs.iter().enumerate() {
            // SAFETY: as above, for the outputs
            let p = unsafe { *outputs.add(k) };
            if p.is_null() {
                return Err(format!("output {k} is NULL"));
            }
            unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), p, o.len()) };
        }
        Ok(0)
    })
}

/// Frees a session (NULL is ignored).
///
/// # Safety
/// `s` comes from `xforge_session_load` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn xforge_session_free(s: *mut Session) {
    if !s.is_null() {
        // SAFETY: the pointer came from Box::into_raw in xforge_session_load
        drop(unsafe { Box::from_raw(s) });
    }
}
