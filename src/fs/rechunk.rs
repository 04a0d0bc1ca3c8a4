//! Turning buffered writes into content-defined chunks, re-chunking only what they touch.
//!
//! Owns the shape of a flush: which file ranges (regions) are re-chunked, what bytes each
//! holds (dirty spans, and the old bytes of extents the spans cut into), and the chunk
//! boundaries inside them. A region is a list of parts — pieces of dirty spans, used in
//! place, and old bytes read back — and is cut across part edges: only a chunk that
//! straddles an edge is copied, so flushing a stream costs no copy of the stream.

use super::FsResult;
use crate::chunker::{is_zero, ChunkHasher, Chunker};
use crate::ids::ChunkId;
use crate::records::{ExtentRec, EXTENT_TAIL};
use std::sync::Arc;

/// A new extent produced by a flush.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewExtent {
    pub off: u64,
    pub rec: ExtentRec,
}

/// Some of a region's bytes.
pub(crate) enum Part {
    /// `data[from..to]` of a dirty span (shared, not copied).
    Span {
        data: Arc<Vec<u8>>,
        from: usize,
        to: usize,
    },
    /// Old bytes read back from the extents the region covers.
    Old(Vec<u8>),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Span { data, from, to } => &data[*from..*to],
            Part::Old(v) => v,
        }
    }
}

/// Where a chunk's bytes are: inside one part, or copied because it straddled parts.
enum ChunkBytes {
    InPart {
        part: usize,
        from: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

/// A re-chunked region: [start, start+commit_len) becomes `extents`; the bytes after that
/// (an undecided tail while streaming) stay buffered.
pub(crate) struct Region {
    pub start: u64,
    pub commit_len: u64,
    pub extents: Vec<NewExtent>,
    parts: Vec<Part>,
    chunks: Vec<ChunkBytes>,
    pub remainder: Option<(u64, Vec<u8>)>,
}

impl Region {
    /// The chunk after `extents[i]` in the file, if it directly follows.
    pub fn next_of(&self, i: usize) -> Option<(ChunkId, u32)> {
        let (a, b) = (self.extents.get(i)?, self.extents.get(i + 1)?);
        (a.off + a.rec.len as u64 == b.off).then_some((b.rec.chunk, b.rec.len))
    }

    /// The bytes of `extents[i]`.
    pub fn chunk(&self, i: usize) -> &[u8] {
        match &self.chunks[i] {
            ChunkBytes::InPart { part, from, len } => {
                &self.parts[*part].bytes()[*from..*from + *len]
            }
            ChunkBytes::Owned(v) => v,
        }
    }
}

/// The regions to re-chunk: each span widened to the boundaries of the extents it cuts into
/// (and back over an extent cut only because the file ended there); overlapping or
/// touching regions merge, so a run of touching spans is cut as one stream.
pub(crate) fn plan(spans: &[(u64, Arc<Vec<u8>>)], exts: &[(u64, ExtentRec)]) -> Vec<(u64, u64)> {
    let mut regions: Vec<(u64, u64)> = spans
        .iter()
        .map(|(a, d)| {
            let (a, b) = (*a, a + d.len() as u64);
            let (mut s, mut e) = (a, b);
            for (o, x) in exts {
                let xe = o + x.len as u64;
                if *o < a && (xe > a || (xe == a && x.flags & EXTENT_TAIL != 0)) {
                    s = s.min(*o);
                }
                if *o < b && xe > b {
                    e = e.max(xe);
                }
            }
            (s, e)
        })
        .collect();
    regions.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in regions {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// The parts of region [s, e): spans in place, gaps filled by `old(offset, buffer)`.
pub(crate) fn assemble(
    s: u64,
    e: u64,
    spans: &[(u64, Arc<Vec<u8>>)],
    mut old: impl FnMut(u64, &mut [u8]) -> FsResult<()>,
) -> FsResult<Vec<Part>> {
    let mut parts = Vec::new();
    let mut pos = s;
    for (o, d) in spans
        .iter()
        .filter(|(o, d)| *o < e && o + d.len() as u64 > s)
    {
        if *o > pos {
            let mut buf = vec![0u8; (*o - pos) as usize];
            old(pos, &mut buf)?;
            parts.push(Part::Old(buf));
        }
        let from = (pos.max(*o) - o) as usize;
        let to = ((o + d.len() as u64).min(e) - o) as usize;
        if from < to {
            parts.push(Part::Span {
                data: d.clone(),
                from,
                to,
            });
        }
        pos = pos.max(o + to as u64);
    }
    if pos < e {
        let mut buf = vec![0u8; (e - pos) as usize];
        old(pos, &mut buf)?;
        parts.push(Part::Old(buf));
    }
    Ok(parts)
}

/// Cuts a region into chunks. With `eof`, every byte is cut (the last chunk ends at the
/// region's end); without, the undecided tail is returned as the remainder. `size` is the
/// file size: a last chunk cut only because the file ends there is flagged as a tail.
///
/// `successor(id)` names the chunk that followed chunk `id` when it was stored. After each
/// chunk the predicted successor is checked first (one hash of its length): in repeated
/// data it matches, and the boundary search — the costly part of cutting — is skipped.
/// A predicted boundary is one the chunker made for these very bytes before, so the result
/// is the same as cutting without prediction.
pub(crate) fn cut(
    chunker: &Chunker,
    hasher: &ChunkHasher,
    successor: &dyn Fn(ChunkId) -> Option<(ChunkId, u32)>,
    start: u64,
    parts: Vec<Part>,
    eof: bool,
    size: u64,
) -> Region {
    let total: usize = parts.iter().map(|p| p.bytes().len()).sum();
    let max = chunker.params().max as usize;
    let mut extents = Vec::new();
    let mut chunks = Vec::new();
    let (mut pi, mut po, mut pos) = (0usize, 0usize, 0usize);
    let mut scratch: Vec<u8> = Vec::new();
    let mut prev: Option<ChunkId> = None;
    while pos < total {
        while po == parts[pi].bytes().len() {
            pi += 1;
            po = 0;
        }
        let cur = &parts[pi].bytes()[po..];
        let rest = total - pos;
        let want = max.min(rest);
        let window: &[u8] = if cur.len() >= want {
            cur
        } else {
            // A chunk may straddle parts: look at up to `max` bytes across them.
            scratch.clear();
            let (mut qi, mut qo) = (pi, po);
            while scratch.len() < want {
                let b = &parts[qi].bytes()[qo..];
                let take = b.len().min(want - scratch.len());
                scratch.extend_from_slice(&b[..take]);
                qi += 1;
                qo = 0;
            }
            &scratch
        };
        let all = window.len() == rest;
        let predicted = prev.and_then(successor).filter(|&(id, len)| {
            (len as usize) <= window.len() && hasher.id(&window[..len as usize]) == id
        });
        let n = match predicted {
            Some((_, len)) => len as usize,
            None => match chunker.next_cut(window, eof && all) {
                Some(n) => n,
                None => break,
            },
        };
        let data = &window[..n];
        prev = None;
        if !is_zero(data) {
            let end = start + (pos + n) as u64;
            let forced =
                eof && all && n == rest && end >= size && chunker.next_cut(data, false).is_none();
            let id = predicted.map(|p| p.0).unwrap_or_else(|| hasher.id(data));
            prev = Some(id);
            extents.push(NewExtent {
                off: start + pos as u64,
                rec: ExtentRec {
                    len: n as u32,
                    chunk: id,
                    chunk_off: 0,
                    flags: if forced { EXTENT_TAIL } else { 0 },
                },
            });
            chunks.push(if n <= cur.len() {
                ChunkBytes::InPart {
                    part: pi,
                    from: po,
                    len: n,
                }
            } else {
                ChunkBytes::Owned(data.to_vec())
            });
        }
        // Advance n bytes across parts.
        pos += n;
        let mut left = n;
        while left > 0 {
            let avail = parts[pi].bytes().len() - po;
            if left < avail {
                po += left;
                left = 0;
            } else {
                left -= avail;
                pi += 1;
                po = 0;
            }
        }
    }
    let remainder = (pos < total).then(|| {
        let mut v = Vec::with_capacity(total - pos);
        let (mut qi, mut qo) = (pi, po);
        while qi < parts.len() {
            v.extend_from_slice(&parts[qi].bytes()[qo..]);
            qi += 1;
            qo = 0;
        }
        (start + pos as u64, v)
    });
    Region {
        start,
        commit_len: pos as u64,
        extents,
        parts,
        chunks,
        remainder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use proptest::prelude::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 3) as u8 & if x.is_multiple_of(7) { 0 } else { 0xff }
            })
            .collect()
    }

    proptest! {
        /// Cutting a region made of parts gives the chunks of cutting the bytes whole.
        #[test]
        fn parts_cut_like_one_buffer(seed in 1u64..1000, splits in proptest::collection::vec(1usize..5000, 0..6), eof: bool) {
            let c = Chunker::new(ChunkParams { min: 64, avg: 256, max: 1024 }, 3);
            let h = ChunkHasher::new((0..192).map(|i| i as u8).collect()).unwrap();
            let total: usize = splits.iter().sum::<usize>() + 100;
            let bytes = data(total, seed);
            let mut parts = Vec::new();
            let mut at = 0;
            for (i, n) in splits.iter().chain(std::iter::once(&100)).enumerate() {
                let piece = bytes[at..at + n].to_vec();
                parts.push(if i % 2 == 0 { Part::Old(piece) } else { let len = piece.len(); Part::Span { data: Arc::new(piece), from: 0, to: len } });
                at += n;
            }
            let none = |_: ChunkId| None;
            let whole = cut(&c, &h, &none, 1000, vec![Part::Old(bytes.clone())], eof, 1000 + total as u64);
            // Successors learned from the first cut must reproduce it exactly.
            let table: std::collections::HashMap<ChunkId, (ChunkId, u32)> =
                (0..whole.extents.len()).filter_map(|i| whole.next_of(i).map(|n| (whole.extents[i].rec.chunk, n))).collect();
            let predict = |id: ChunkId| table.get(&id).copied();
            let split = cut(&c, &h, &predict, 1000, parts, eof, 1000 + total as u64);
            prop_assert_eq!(whole.commit_len, split.commit_len);
            prop_assert_eq!(&whole.remainder, &split.remainder);
            let w: Vec<_> = whole.extents.iter().map(|e| (e.off, e.rec)).collect();
            let s: Vec<_> = split.extents.iter().map(|e| (e.off, e.rec)).collect();
            prop_assert_eq!(w, s);
            for i in 0..split.extents.len() {
                let off = (split.extents[i].off - 1000) as usize;
                prop_assert_eq!(split.chunk(i), &bytes[off..off + split.extents[i].rec.len as usize]);
            }
        }
    }
}
