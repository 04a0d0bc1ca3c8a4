//! File extent maps: which chunk bytes make up each byte range of a file.
//!
//! Owns the two representations of an extent map, written together in every commit:
//! - history: one versioned record per extent (`Cf::Extents`, see [`crate::mvcc`]), each
//!   counting one reference on its chunk, so any past state can be read and pruning knows
//!   what it releases;
//! - the live map: the extents of each 1 MiB segment of a file packed in one value
//!   (`Cf::ExtentSegments`), read with point gets. A file rewritten thousands of times
//!   leaves thousands of versions and deleted keys behind; iterating over them is what a
//!   per-extent live index would cost, a get is not.
//!
//! A segment value lists the extents that *start* in the segment. A branch with ancestors
//! (a read-write snapshot, a rolled-back head) materialises a segment the first time it
//! writes to it, so a live segment value is always complete; a segment the branch never
//! wrote is read from the ancestors' history.
//!
//! Invariants: extents visible at any version are disjoint; an extent is at most as long
//! as the store's largest chunk; a segment value always equals the newest versions of the
//! extent records starting in that segment.

use crate::codec::{CodecError, Dec, Enc};
use crate::ids::{ChunkId, Ino, Version};
use crate::keys::{extent_from_suffix as extent_offset_from_suffix, extent_suffix};
use crate::kv::{Cf, Kv, KvError, Txn};
use crate::mvcc::{self, ReadPoint};
use crate::records::ExtentRec;
use std::collections::BTreeMap;

pub const SEGMENT_SHIFT: u32 = 20;
const SEGMENT_LAYOUT: u8 = 1;

/// A visible extent: its file offset and record.
pub type Extent = (u64, ExtentRec);

/// Reads of point keys, from the store or through a transaction's pending writes.
pub(crate) trait PointRead {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    fn kv(&self) -> &dyn Kv;
}

impl PointRead for &dyn Kv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Kv::get(*self, cf, key)
    }
    fn kv(&self) -> &dyn Kv {
        *self
    }
}

impl PointRead for Txn<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Txn::get(self, cf, key)
    }
    fn kv(&self) -> &dyn Kv {
        Txn::kv(self)
    }
}

fn segment_key(rp: &ReadPoint, ino: Ino, gen: u64, seg: u64) -> Vec<u8> {
    crate::keys::segment(rp.branch(), ino, gen, seg)
}

fn encode_segment(exts: &BTreeMap<u64, ExtentRec>) -> Vec<u8> {
    let mut e = Enc::with_capacity(5 + exts.len() * 33)
        .u8(SEGMENT_LAYOUT)
        .u32(exts.len() as u32);
    for (off, x) in exts {
        e = e
            .u64(*off)
            .u32(x.len)
            .u128(x.chunk.0)
            .u32(x.chunk_off)
            .u8(x.flags);
    }
    e.finish()
}

pub(crate) fn decode_segment(b: &[u8]) -> Result<BTreeMap<u64, ExtentRec>, CodecError> {
    let mut d = Dec::new(b, "extent segment");
    d.layout(SEGMENT_LAYOUT)?;
    let n = d.u32()?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let off = d.u64()?;
        let x = ExtentRec {
            len: d.u32()?,
            chunk: ChunkId(d.u128()?),
            chunk_off: d.u32()?,
            flags: d.u8()?,
        };
        out.insert(off, x);
    }
    d.end()?;
    Ok(out)
}

fn corrupt(e: CodecError) -> KvError {
    KvError::Corrupt(e.to_string())
}

/// Extents starting in segment `seg`, from history (used where no live segment exists).
fn segment_from_history(
    kv: &dyn Kv,
    rp: &ReadPoint,
    ino: Ino,
    gen: u64,
    seg: u64,
) -> Result<BTreeMap<u64, ExtentRec>, KvError> {
    let lo = extent_suffix(gen, seg << SEGMENT_SHIFT);
    let hi = extent_suffix(gen, (seg + 1) << SEGMENT_SHIFT);
    mvcc::scan_decoded(kv, Cf::Extents, rp, ino, &lo, Some(&hi), |it| {
        let (_, off) = extent_offset_from_suffix(it.suffix)?;
        Ok((off, ExtentRec::decode(it.payload)?))
    })?
    .map_err(corrupt)
}

/// The extents starting in one segment as `rp` sees them.
fn segment<R: PointRead + ?Sized>(
    r: &R,
    rp: &ReadPoint,
    ino: Ino,
    gen: u64,
    seg: u64,
) -> Result<BTreeMap<u64, ExtentRec>, KvError> {
    if rp.levels[0].1 == Version::LATEST {
        if let Some(v) = r.get(Cf::ExtentSegments, &segment_key(rp, ino, gen, seg))? {
            return decode_segment(&v).map_err(corrupt);
        }
        if rp.levels.len() == 1 {
            return Ok(BTreeMap::new());
        }
    }
    segment_from_history(r.kv(), rp, ino, gen, seg)
}

/// Visible extents overlapping [from, to), in offset order. `max_len` is the longest an
/// extent can be (the store's largest chunk).
pub(crate) fn overlapping<R: PointRead + ?Sized>(
    r: &R,
    rp: &ReadPoint,
    ino: Ino,
    gen: u64,
    from: u64,
    to: u64,
    max_len: u64,
) -> Result<Vec<Extent>, KvError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let first = from.saturating_sub(max_len) >> SEGMENT_SHIFT;
    let last = (to - 1) >> SEGMENT_SHIFT;
    let mut out = Vec::new();
    for seg in first..=last {
        for (off, e) in segment(r, rp, ino, gen, seg)? {
            if off < to && off + e.len as u64 > from {
                out.push((off, e));
            }
        }
    }
    Ok(out)
}

/// A chunk too short for an extent that names it: corruption.
fn past_chunk(o: u64, e: &ExtentRec, have: usize) -> crate::chunks::ChunkError {
    crate::chunks::ChunkError::BadRefRecord {
        key: format!("extent at offset {o}"),
        reason: format!(
            "it reaches past the end of chunk {} ({have} bytes)",
            e.chunk
        ),
    }
}

/// The `len` bytes from `off` described by sorted, disjoint `exts` (holes read as zeros),
/// assembled in order without zero-filling first. The one routine that turns extents into
/// bytes (reads, re-chunking, comparisons).
pub fn bytes(
    chunks: &crate::chunks::ChunkStore,
    exts: &[Extent],
    off: u64,
    len: usize,
) -> Result<Vec<u8>, crate::chunks::ChunkError> {
    let end = off + len as u64;
    let mut out = Vec::with_capacity(len);
    for (o, e) in exts {
        let eend = o + e.len as u64;
        if eend <= off || *o >= end {
            continue;
        }
        let s = (*o).max(off);
        let t = eend.min(end);
        out.resize((s - off) as usize, 0);
        let data = chunks.read(e.chunk)?;
        let from = e.chunk_off as usize + (s - o) as usize;
        let src = data
            .get(from..from + (t - s) as usize)
            .ok_or_else(|| past_chunk(*o, e, data.len()))?;
        out.extend_from_slice(src);
    }
    out.resize(len, 0);
    Ok(out)
}

/// Copies the bytes of `exts` that fall in [off, off+buf.len()) into `buf` (the rest of
/// `buf` is left as it is).
pub fn fill(
    chunks: &crate::chunks::ChunkStore,
    exts: &[Extent],
    off: u64,
    buf: &mut [u8],
) -> Result<(), crate::chunks::ChunkError> {
    let end = off + buf.len() as u64;
    for (o, e) in exts {
        let eend = o + e.len as u64;
        if eend <= off || *o >= end {
            continue;
        }
        let data = chunks.read(e.chunk)?;
        let s = (*o).max(off);
        let t = eend.min(end);
        let from = e.chunk_off as usize + (s - o) as usize;
        let to = from + (t - s) as usize;
        let src = data
            .get(from..to)
            .ok_or_else(|| past_chunk(*o, e, data.len()))?;
        buf[(s - off) as usize..(t - off) as usize].copy_from_slice(src);
    }
    Ok(())
}

/// Writes extent changes (offset → new record, or `None` to remove) at version `v`: one
/// versioned record each, and the affected live segments.
pub(crate) fn write(
    txn: &mut Txn<'_>,
    rp: &ReadPoint,
    ino: Ino,
    gen: u64,
    v: Version,
    changes: &BTreeMap<u64, Option<ExtentRec>>,
) -> Result<(), KvError> {
    let mut by_seg: BTreeMap<u64, Vec<(u64, Option<ExtentRec>)>> = BTreeMap::new();
    for (off, c) in changes {
        by_seg
            .entry(off >> SEGMENT_SHIFT)
            .or_default()
            .push((*off, *c));
        let enc = c.map(|e| e.encode());
        mvcc::put_history(
            txn,
            Cf::Extents,
            rp.branch(),
            ino,
            &extent_suffix(gen, *off),
            v,
            enc.as_deref(),
        );
    }
    let live = ReadPoint {
        levels: rp
            .levels
            .iter()
            .map(|&(b, c)| (b, if b == rp.branch() { Version::LATEST } else { c }))
            .collect(),
    };
    for (seg, cs) in by_seg {
        let mut m = segment(txn, &live, ino, gen, seg)?;
        for (off, c) in cs {
            match c {
                Some(e) => m.insert(off, e),
                None => m.remove(&off),
            };
        }
        let key = segment_key(rp, ino, gen, seg);
        if m.is_empty() && rp.levels.len() == 1 {
            txn.delete(Cf::ExtentSegments, key);
        } else {
            txn.put(Cf::ExtentSegments, key, encode_segment(&m));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BranchId;
    use crate::kv::mem::MemKv;

    fn ext(len: u32, chunk: u128) -> ExtentRec {
        ExtentRec {
            len,
            chunk: ChunkId(chunk),
            chunk_off: 0,
            flags: 0,
        }
    }

    fn commit(kv: &MemKv, rp: &ReadPoint, v: u64, changes: &[(u64, Option<ExtentRec>)]) {
        let mut t = Txn::new(kv);
        write(
            &mut t,
            rp,
            Ino(9),
            1,
            Version(v),
            &changes.iter().copied().collect(),
        )
        .unwrap();
        kv.write(t.into_batch(), false).unwrap();
    }

    #[test]
    fn live_segments_and_history_agree() {
        let kv = MemKv::new();
        let k: &dyn Kv = &kv;
        let rp = ReadPoint::single(BranchId(1), Version::LATEST);
        let mib = 1u64 << 20;
        commit(
            &kv,
            &rp,
            1,
            &[
                (0, Some(ext(100, 1))),
                (mib - 50, Some(ext(100, 2))),
                (3 * mib, Some(ext(10, 3))),
            ],
        );
        commit(&kv, &rp, 2, &[(0, None), (mib - 50, Some(ext(100, 4)))]);
        // An extent starting in segment 0 is found by a read of segment 1 only.
        let got = overlapping(&k, &rp, Ino(9), 1, mib, mib + 10, 1000).unwrap();
        assert_eq!(got, vec![(mib - 50, ext(100, 4))]);
        assert!(overlapping(&k, &rp, Ino(9), 1, 0, 100, 1000)
            .unwrap()
            .is_empty());
        // The past, from history.
        let past = overlapping(&k, &rp.at(Version(1)), Ino(9), 1, 0, 4 * mib, 1000).unwrap();
        assert_eq!(past.len(), 3);
        assert_eq!(past[1], (mib - 50, ext(100, 2)));
    }

    #[test]
    fn a_branch_materialises_segments_it_writes_and_inherits_the_rest() {
        let kv = MemKv::new();
        let k: &dyn Kv = &kv;
        let base = ReadPoint::single(BranchId(1), Version::LATEST);
        let mib = 1u64 << 20;
        commit(
            &kv,
            &base,
            1,
            &[
                (0, Some(ext(10, 1))),
                (100, Some(ext(10, 2))),
                (2 * mib, Some(ext(10, 3))),
            ],
        );
        let child = ReadPoint {
            levels: vec![(BranchId(2), Version::LATEST), (BranchId(1), Version(1))],
        };
        commit(&kv, &child, 2, &[(100, None)]);
        commit(&kv, &base, 3, &[(2 * mib, None)]); // after the fork: invisible to the child
        let c = overlapping(&k, &child, Ino(9), 1, 0, 3 * mib, 1000).unwrap();
        assert_eq!(c, vec![(0, ext(10, 1)), (2 * mib, ext(10, 3))]);
        let b = overlapping(&k, &base, Ino(9), 1, 0, 3 * mib, 1000).unwrap();
        assert_eq!(b, vec![(0, ext(10, 1)), (100, ext(10, 2))]);
    }
}
