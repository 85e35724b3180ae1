//! The artifact reader (`xforge run`, `inspect`, the hub's client): any bytes give an artifact or
//! an error naming what is wrong; never a panic or an allocation the file does not pay for.
//! The input is resealed as a forger would (every section's CRC, the table's, and the file's
//! sha256 recomputed) so the fuzzer reaches the parsers behind the checksums; the unsealed bytes
//! are tried too.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod capped_alloc;
use xforge_runtime::checksum::crc32;

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The bytes with the checksums and the digest made to match them.
fn reseal(data: &[u8]) -> Option<Vec<u8>> {
    let mut b = data.to_vec();
    let count = u32::from_le_bytes(b.get(12..16)?.try_into().ok()?) as usize;
    let table_end = 16usize.checked_add(count.checked_mul(24)?)?;
    if count > 64 || b.len() < table_end + 4 + 32 {
        return None;
    }
    let body_end = b.len() - 32;
    for i in 0..count {
        let e = 16 + 24 * i;
        let (off, len) = (u64_at(&b, e + 8)? as usize, u64_at(&b, e + 16)? as usize);
        if let Some(section) = off.checked_add(len).filter(|&end| end <= body_end).map(|end| crc32(&b[off..end])) {
            b[e + 4..e + 8].copy_from_slice(&section.to_le_bytes());
        }
    }
    let table = crc32(&b[..table_end]);
    b[table_end..table_end + 4].copy_from_slice(&table.to_le_bytes());
    let digest = xforge_runtime::artifact::file_digest(&b[..body_end]);
    b[body_end..].copy_from_slice(&digest);
    Some(b)
}

fuzz_target!(|data: &[u8]| {
    let _ = xforge_runtime::Artifact::from_bytes(data);
    if let Some(sealed) = reseal(data) {
        let _ = xforge_runtime::Artifact::from_bytes(&sealed);
    }
});
