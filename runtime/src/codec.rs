//! The byte encoding of the artifact's structured sections: little-endian integers and
//! length-prefixed strings and byte runs. Every read is bounds-checked and a failure names the
//! field being read.

#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
    }
    pub fn blob(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.bytes.extend_from_slice(b);
    }
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// A read past the end or a malformed value: the field that was being read.
#[derive(Debug, PartialEq)]
pub struct ReadError(pub String);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], ReadError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| ReadError(format!("{field} runs past the end of its section")))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub fn u32(&mut self, field: &str) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.take(8, field)?.try_into().unwrap()))
    }
    /// A count or byte length: never more than the bytes left (every item takes at least one),
    /// so a forged count cannot make a reader allocate or loop without end.
    pub fn len(&mut self, field: &str) -> Result<usize, ReadError> {
        let v = self.u64(field)?;
        let left = (self.bytes.len() - self.at) as u64;
        if v > left {
            return Err(ReadError(format!("{field} ({v}) exceeds the {left} bytes left in its section")));
        }
        Ok(v as usize)
    }
    pub fn str(&mut self, field: &str) -> Result<String, ReadError> {
        let n = self.len(field)?;
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| ReadError(format!("{field} is not UTF-8")))
    }
    pub fn blob(&mut self, field: &str) -> Result<&'a [u8], ReadError> {
        let n = self.len(field)?;
        self.take(n, field)
    }
    pub fn done(&self, section: &str) -> Result<(), ReadError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(ReadError(format!("{section} has {} trailing bytes", self.bytes.len() - self.at)))
        }
    }
}
