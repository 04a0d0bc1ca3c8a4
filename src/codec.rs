//! Binary encoding of metadata keys and values.
//!
//! Owns the byte layout of everything dedupfs writes into the metadata store. Keys are
//! big-endian so that RocksDB's byte-wise ordering equals numeric ordering; variable-length
//! key parts (names) are length-prefixed so that two different names never interleave in a
//! scan. Values start with a one-byte layout version so records can evolve.
//!
//! Decoding never panics: a short or malformed buffer yields [`CodecError`], which callers
//! report as metadata corruption.

use thiserror::Error;

/// A record or key that does not decode.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("malformed {what}: {detail}")]
pub struct CodecError {
    /// Which kind of record was being decoded.
    pub what: &'static str,
    /// What was wrong with it.
    pub detail: String,
}

impl CodecError {
    pub fn new(what: &'static str, detail: impl Into<String>) -> Self {
        CodecError {
            what,
            detail: detail.into(),
        }
    }
}

/// Appends fixed-width big-endian integers and length-prefixed byte strings.
#[derive(Default, Debug, Clone)]
pub struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Self {
        Enc {
            buf: Vec::with_capacity(64),
        }
    }
    pub fn with_capacity(n: usize) -> Self {
        Enc {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.buf.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u128(mut self, v: u128) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A byte string prefixed with its length as u16 (names are at most 255 bytes; xattr
    /// names likewise).
    pub fn name(mut self, v: &[u8]) -> Self {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&v[..len as usize]);
        self
    }
    /// A byte string prefixed with its length as u32 (values, symlink targets).
    pub fn blob(mut self, v: &[u8]) -> Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&v[..len as usize]);
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads what [`Enc`] wrote, failing cleanly on short input.
#[derive(Debug, Clone)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                CodecError::new(
                    self.what,
                    format!(
                        "needs {} bytes at offset {}, has {}",
                        n,
                        self.pos,
                        self.buf.len()
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    pub fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_be_bytes(self.arr()?))
    }
    pub fn u128(&mut self) -> Result<u128, CodecError> {
        Ok(u128::from_be_bytes(self.arr()?))
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        self.take(n)
    }
    pub fn name(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub fn blob(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Fails unless the whole buffer was consumed (catches layout mismatches).
    pub fn end(&self) -> Result<(), CodecError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(CodecError::new(
                self.what,
                format!("{} trailing bytes", self.buf.len() - self.pos),
            ))
        }
    }
    /// Checks the leading layout-version byte of a value.
    pub fn layout(&mut self, expected: u8) -> Result<(), CodecError> {
        let v = self.u8()?;
        if v == expected {
            Ok(())
        } else {
            Err(CodecError::new(
                self.what,
                format!("layout version {v}, expected {expected}"),
            ))
        }
    }
}

/// The smallest key strictly greater than every key that starts with `prefix`, or `None`
/// when no such key exists (prefix is all 0xff).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last != 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_order() {
        let a = Enc::new().u64(1).name(b"abc").u64(!5).finish();
        let mut d = Dec::new(&a, "t");
        assert_eq!(d.u64().unwrap(), 1);
        assert_eq!(d.name().unwrap(), b"abc");
        assert_eq!(d.u64().unwrap(), !5);
        d.end().unwrap();
        // big-endian keys order numerically
        assert!(Enc::new().u64(255).finish() < Enc::new().u64(256).finish());
        // inverted versions order newest first
        assert!(Enc::new().u64(!9).finish() < Enc::new().u64(!3).finish());
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut d = Dec::new(&[0, 1], "t");
        assert!(d.u64().is_err());
        let mut d = Dec::new(&[0, 9, 1], "t");
        assert!(d.name().is_err());
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }
}
