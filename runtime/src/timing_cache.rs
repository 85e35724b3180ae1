//! Which way and algorithm each cuDNN convolution takes, timed once and then remembered: in the
//! process (every session takes the same choice, so sessions of one artifact compute
//! bit-identical outputs) and in a file per user, so a later process loads without timing
//! again. The file is `$XFORGE_CACHE_DIR/conv-choices.tsv`, else under `$XDG_CACHE_HOME/xforge`,
//! else `$HOME/.cache/xforge`; `XFORGE_CACHE_DIR=off` keeps no file. Keys name the GPU, the cuDNN
//! version and the convolution; lines that do not parse are ignored, and the caller checks a
//! remembered choice against the ways it builds before taking it.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A timed choice: the way (index into the ways a convolution step builds) and the algorithm
/// (index into `conv::FORWARD_ALGORITHMS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub way: usize,
    pub algo: usize,
}

const FILE: &str = "conv-choices.tsv";

/// The folder of xforge's caches on this machine: `$XFORGE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/xforge`, else `$HOME/.cache/xforge`; None with `XFORGE_CACHE_DIR=off` or
/// where none of them is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    match std::env::var("XFORGE_CACHE_DIR") {
        Ok(v) if v == "off" => None,
        _ => var("XFORGE_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("xforge")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("xforge"))),
    }
}

/// The cache file, or None when there is none to keep.
fn file() -> Option<PathBuf> {
    Some(cache_dir()?.join(FILE))
}

/// One line of the file: key, way, algorithm, tab-separated.
fn line(key: &str, c: Choice) -> Option<String> {
    (!key.contains(['\t', '\n'])).then(|| format!("{key}\t{}\t{}\n", c.way, c.algo))
}

fn parse(l: &str) -> Option<(String, Choice)> {
    let mut f = l.split('\t');
    let (key, way, algo) = (f.next()?, f.next()?, f.next()?);
    if f.next().is_some() || key.is_empty() {
        return None;
    }
    Some((key.to_string(), Choice { way: way.trim().parse().ok()?, algo: algo.trim().parse().ok()? }))
}

/// The choices a cache file holds (the last line of a key wins); none when it cannot be read.
pub(crate) fn read(path: &Path) -> HashMap<String, Choice> {
    std::fs::read_to_string(path).map(|s| s.lines().filter_map(parse).collect()).unwrap_or_default()
}

/// Appends a choice to a cache file (one write of one line: concurrent processes append whole
/// lines).
pub(crate) fn append(path: &Path, key: &str, c: Choice) -> std::io::Result<()> {
    let Some(l) = line(key, c) else { return Ok(()) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(l.as_bytes())
}

fn memory() -> &'static Mutex<HashMap<String, Choice>> {
    static CHOICES: OnceLock<Mutex<HashMap<String, Choice>>> = OnceLock::new();
    CHOICES.get_or_init(|| Mutex::new(file().map(|p| read(&p)).unwrap_or_default()))
}

/// The remembered choice for `key`.
pub(crate) fn get(key: &str) -> Option<Choice> {
    memory().lock().unwrap_or_else(|p| p.into_inner()).get(key).copied()
}

/// Remembers a choice in the process and (where there is one) in the file.
pub(crate) fn put(key: &str, c: Choice) {
    memory().lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), c);
    if let Some(p) = file() {
        if let Err(e) = append(&p, key, c) {
            tracing::debug!("convolution choices not kept in {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_survive_the_file_and_garbage_is_ignored() {
        let dir = std::env::temp_dir().join(format!("xforge-cache-test-{}", std::process::id()));
        let path = dir.join("sub").join(FILE);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read(&path).is_empty());
        append(&path, "H100/cudnn91400/true/ConvDesc { a: 1 }", Choice { way: 1, algo: 6 }).unwrap();
        append(&path, "other", Choice { way: 0, algo: 1 }).unwrap();
        // a later line for the same key wins; a key with a tab is not written
        append(&path, "other", Choice { way: 2, algo: 3 }).unwrap();
        append(&path, "bad\tkey", Choice { way: 0, algo: 0 }).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"torn line without fields\nx\t1\n\t1\t2\nk\tone\t2\nk\t1\t2\t3\n").unwrap();
        let got = read(&path);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got["H100/cudnn91400/true/ConvDesc { a: 1 }"], Choice { way: 1, algo: 6 });
        assert_eq!(got["other"], Choice { way: 2, algo: 3 });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
