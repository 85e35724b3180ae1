//! Validation of every name and value that reaches a path, a query or a key: repository owners
//! and names, digests, targets, precisions, batch buckets, build options. Each error names the
//! field.
use crate::HubError;
use std::collections::BTreeMap;

/// The longest owner, repository, user, worker or file name.
pub const MAX_NAME: usize = 64;
/// The most batch buckets a build may ask for.
pub const MAX_BUCKETS: usize = 16;
/// The largest batch bucket.
pub const MAX_BATCH: u64 = 1 << 16;

/// A name that is safe as a path segment: 1–64 of `[A-Za-z0-9._-]`, not starting with '.'
/// (so never `.` or `..`).
pub fn check_name(field: &str, s: &str) -> Result<(), HubError> {
    if s.is_empty() {
        return Err(HubError::BadRequest(format!("{field}: empty")));
    }
    if s.len() > MAX_NAME {
        return Err(HubError::BadRequest(format!("{field}: longer than {MAX_NAME} characters")));
    }
    if s.starts_with('.') {
        return Err(HubError::BadRequest(format!("{field}: '{}' starts with '.'", clip(s))));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(HubError::BadRequest(format!(
            "{field}: '{}' has the character {c:?} (allowed: letters, digits, '.', '_', '-')",
            clip(s)
        )));
    }
    Ok(())
}

/// At most 64 characters of an untrusted string, for an error message.
pub fn clip(s: &str) -> String {
    s.chars().take(MAX_NAME).flat_map(char::escape_default).collect()
}

/// `owner/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn new(owner: &str, name: &str) -> Result<RepoName, HubError> {
        check_name("owner", owner)?;
        check_name("name", name)?;
        Ok(RepoName { owner: owner.to_string(), name: name.to_string() })
    }

    pub fn parse(s: &str) -> Result<RepoName, HubError> {
        let (owner, name) = s
            .split_once('/')
            .ok_or_else(|| HubError::BadRequest(format!("repository: '{}' is not owner/name", clip(s))))?;
        RepoName::new(owner, name)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A sha256 digest: 64 lowercase hex digits (an optional `sha256:` prefix is dropped).
pub fn check_digest(field: &str, s: &str) -> Result<String, HubError> {
    let d = s.strip_prefix("sha256:").unwrap_or(s);
    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(HubError::BadRequest(format!(
            "{field}: '{}' is not a sha256 digest (64 lowercase hex digits)",
            clip(s)
        )));
    }
    Ok(d.to_string())
}

/// A hardware target: `sm_80`…`sm_90a`, `gfx942`, ...: 2–16 of `[a-z0-9_]`.
pub fn check_target(s: &str) -> Result<(), HubError> {
    if s.len() < 2 || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(HubError::BadRequest(format!(
            "target: '{}' is not a target name such as sm_90 or gfx942",
            clip(s)
        )));
    }
    Ok(())
}

pub const PRECISIONS: [&str; 3] = ["fp32", "fp16", "bf16"];

pub fn check_precision(s: &str) -> Result<(), HubError> {
    if PRECISIONS.contains(&s) {
        Ok(())
    } else {
        Err(HubError::BadRequest(format!("precision: '{}' is not one of {}", clip(s), PRECISIONS.join(", "))))
    }
}

/// Batch buckets: none (the model's static shape) or up to 16 increasing sizes in 1..=65536.
pub fn check_batch(b: &[u64]) -> Result<(), HubError> {
    if b.len() > MAX_BUCKETS {
        return Err(HubError::BadRequest(format!("batch: more than {MAX_BUCKETS} buckets")));
    }
    if let Some(x) = b.iter().find(|&&x| x == 0 || x > MAX_BATCH) {
        return Err(HubError::BadRequest(format!("batch: bucket {x} is not in 1..={MAX_BATCH}")));
    }
    if b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(HubError::BadRequest("batch: buckets must increase".into()));
    }
    Ok(())
}

/// `1,8,32` (empty for none).
pub fn batch_text(b: &[u64]) -> String {
    b.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

pub fn parse_batch(s: &str) -> Result<Vec<u64>, HubError> {
    if s.trim().is_empty() {
        return Ok(vec![]);
    }
    if s.len() > 256 {
        return Err(HubError::BadRequest("batch: too long".into()));
    }
    let b = s
        .split(',')
        .map(|x| x.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| HubError::BadRequest(format!("batch: '{}' is not numbers joined by ','", clip(s))))?;
    check_batch(&b)?;
    Ok(b)
}

/// Build options the workers understand, with their allowed values.
pub const OPTIONS: [(&str, &[&str]); 1] = [("generated_gemm", &["true", "false"])];

pub fn check_options(o: &BTreeMap<String, String>) -> Result<(), HubError> {
    for (k, v) in o {
        let Some((_, allowed)) = OPTIONS.iter().find(|(n, _)| n == k) else {
            return Err(HubError::BadRequest(format!(
                "options: unknown option '{}' (known: {})",
                clip(k),
                OPTIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )));
        };
        if !allowed.contains(&v.as_str()) {
            return Err(HubError::BadRequest(format!(
                "options.{k}: '{}' is not one of {}",
                clip(v),
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("owner", "alice").is_ok());
        assert!(check_name("name", "bert_tiny-v1.2").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a b", "ü", "a%2e", &"x".repeat(65)] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        assert_eq!(RepoName::parse("a/b").unwrap().to_string(), "a/b");
        assert!(RepoName::parse("a/../b").is_err());
        assert!(RepoName::parse("../b").is_err());
        assert!(RepoName::parse("ab").is_err());
    }

    #[test]
    fn values() {
        let d = "ab".repeat(32);
        assert_eq!(check_digest("digest", &format!("sha256:{d}")).unwrap(), d);
        assert!(check_digest("digest", &"AB".repeat(32)).is_err());
        assert!(check_digest("digest", "../../etc/passwd").is_err());
        assert!(check_target("sm_90").is_ok() && check_target("gfx942").is_ok());
        assert!(check_target("../x").is_err());
        assert_eq!(parse_batch("1, 8,32").unwrap(), vec![1, 8, 32]);
        assert!(parse_batch("8,1").is_err() && parse_batch("0").is_err() && parse_batch("x").is_err());
        assert_eq!(parse_batch("").unwrap(), Vec::<u64>::new());
        let mut o = BTreeMap::new();
        o.insert("generated_gemm".to_string(), "true".to_string());
        assert!(check_options(&o).is_ok());
        o.insert("evil".to_string(), "1".to_string());
        assert!(check_options(&o).unwrap_err().to_string().contains("evil"));
    }
}
