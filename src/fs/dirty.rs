//! Bytes written to a file but not yet chunked and committed.
//!
//! Owns the write buffer of one open file: a set of disjoint spans keyed by offset.
//! Sequential writes extend the last span in place, so a streaming writer costs one
//! `memcpy` per write. Invariant: spans never overlap. Touching spans are merged when that
//! is cheap; a full stream buffer is followed by a new span rather than regrown, and a
//! large span is never copied into a small one before it. A *run* is a maximal sequence of
//! touching spans; flushes take and chunk runs as a whole.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Recycled stream buffers. A buffer the size of a flush is page-faulted in once and then
/// reused, instead of being freshly mapped (and zeroed by the kernel) for every flush, which
/// otherwise costs as much as the copying itself. Bounded: beyond `max_bytes` buffers are
/// freed.
#[derive(Debug)]
pub struct BufPool {
    /// Free buffers. Protects: the list. Lock order: a leaf.
    bufs: Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

impl BufPool {
    pub fn new(max_bytes: usize) -> BufPool {
        BufPool {
            bufs: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    /// An empty buffer with at least `cap` bytes of capacity.
    pub fn get(&self, cap: usize) -> Vec<u8> {
        let mut b = self.bufs.lock();
        match b.iter().position(|v| v.capacity() >= cap) {
            Some(i) => b.swap_remove(i),
            None => Vec::with_capacity(cap),
        }
    }

    /// Returns a buffer for reuse (dropped if the pool is full or the buffer small).
    pub fn put(&self, mut v: Vec<u8>) {
        if v.capacity() < self.max_bytes / 8 {
            return;
        }
        v.clear();
        let mut b = self.bufs.lock();
        let held: usize = b.iter().map(|x| x.capacity()).sum();
        if held + v.capacity() <= self.max_bytes {
            b.push(v);
        }
    }

    pub fn held_bytes(&self) -> usize {
        self.bufs.lock().iter().map(|x| x.capacity()).sum()
    }
}

#[derive(Default, Debug)]
pub struct DirtyMap {
    spans: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    /// Capacity to give a span once it looks like a stream (see [`DirtyMap::with_stream_capacity`]).
    stream_capacity: usize,
    /// Length from which a span is treated as a stream.
    stream_min: usize,
    pool: Option<Arc<BufPool>>,
}

/// A span this long is a streaming writer's: it grows to the flush threshold at once
/// instead of by doubling (each doubling copies the whole span).
const STREAM_SPAN: usize = 1 << 20;

impl DirtyMap {
    pub fn with_stream_capacity(cap: usize, pool: Arc<BufPool>) -> DirtyMap {
        DirtyMap {
            stream_capacity: cap,
            stream_min: STREAM_SPAN,
            pool: Some(pool),
            ..Default::default()
        }
    }

    fn stream_min(&self) -> usize {
        if self.stream_min == 0 {
            STREAM_SPAN
        } else {
            self.stream_min
        }
    }

    /// Moves a span that turned out to be a stream into a full-size (recycled) buffer.
    fn grow_stream(&self, buf: &mut Vec<u8>, need: usize) {
        let cap = self.stream_capacity.max(buf.len() + need);
        let mut nb = match &self.pool {
            Some(p) => p.get(cap),
            None => Vec::with_capacity(cap),
        };
        nb.extend_from_slice(buf);
        let old = std::mem::replace(buf, nb);
        if let Some(p) = &self.pool {
            p.put(old);
        }
    }

    /// Appends `data` to a span, switching to a stream buffer when it grows large.
    fn append(&self, buf: &mut Vec<u8>, data: &[u8]) {
        if buf.capacity() - buf.len() < data.len()
            && buf.len() + data.len() >= self.stream_min()
            && self.stream_capacity > buf.len()
        {
            self.grow_stream(buf, data.len());
        }
        buf.extend_from_slice(data);
    }

    /// Gives a span's buffer back for reuse.
    pub fn recycle(&self, v: Vec<u8>) {
        if let Some(p) = &self.pool {
            p.put(v);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// End of the last span.
    pub fn end(&self) -> Option<u64> {
        self.spans
            .iter()
            .next_back()
            .map(|(o, v)| o + v.len() as u64)
    }

    /// Length of the run (touching spans) containing or ending at `off`, if any.
    pub fn run_len_at(&self, off: u64) -> usize {
        let Some((&s0, v0)) = self.spans.range(..=off).next_back() else {
            return 0;
        };
        if s0 + (v0.len() as u64) < off {
            return 0;
        }
        let mut total = v0.len();
        let mut start = s0;
        while let Some((&s, v)) = self.spans.range(..start).next_back() {
            if s + v.len() as u64 != start {
                break;
            }
            total += v.len();
            start = s;
        }
        let mut end = s0 + v0.len() as u64;
        while let Some(v) = self.spans.get(&end) {
            total += v.len();
            end += v.len() as u64;
        }
        total
    }

    /// Writes `data` at `off`; returns the change in buffered bytes.
    ///
    /// The span that starts at or before `off` and reaches it is extended in place, unless it
    /// is a full stream buffer and the write only appends to it (then a new span starts).
    /// Spans the write overlaps on the right are absorbed; a span that merely touches its end
    /// is absorbed only if small. Each byte is thus copied about once, even when the kernel
    /// writes a stream back out of order with several threads.
    pub fn write(&mut self, off: u64, data: &[u8]) -> isize {
        if data.is_empty() {
            return 0;
        }
        let end = off + data.len() as u64;
        let before = self.bytes;
        let left = match self.spans.range(..=off).next_back() {
            Some((&s, v)) if s + v.len() as u64 > off => Some(s),
            Some((&s, v)) if s + v.len() as u64 == off && !self.is_full_stream(v, data.len()) => {
                Some(s)
            }
            _ => None,
        };
        let (start, mut buf) = match left {
            Some(s) => {
                let v = self.spans.remove(&s).unwrap_or_default();
                self.bytes -= v.len();
                (s, v)
            }
            None => (off, Vec::new()),
        };
        let at = (off - start) as usize;
        let overlap_end = buf.len().min(at + data.len());
        if at < buf.len() {
            buf[at..overlap_end].copy_from_slice(&data[..overlap_end - at]);
        }
        if at + data.len() > buf.len() {
            let from = buf.len() - at.min(buf.len());
            self.append(&mut buf, &data[from..]);
        }
        // Spans starting inside the written range, or touching its end and small.
        let right: Vec<u64> = self
            .spans
            .range(off + 1..=end)
            .filter(|(o, v)| **o < end || v.len() < self.stream_min())
            .map(|(o, _)| *o)
            .collect();
        for o in right {
            if let Some(v) = self.spans.remove(&o) {
                self.bytes -= v.len();
                let vend = o + v.len() as u64;
                let cur_end = start + buf.len() as u64;
                if vend > cur_end {
                    self.append(&mut buf, &v[(cur_end - o) as usize..]);
                }
                self.recycle(v);
            }
        }
        self.bytes += buf.len();
        self.spans.insert(start, buf);
        self.bytes as isize - before as isize
    }

    /// A big stream buffer without room for `more` bytes: appending would regrow (copy or
    /// fault in) it, so a new span starts instead.
    fn is_full_stream(&self, v: &[u8], more: usize) -> bool {
        self.stream_capacity > 0
            && v.len() >= self.stream_capacity / 2
            && v.len() + more > self.stream_capacity
    }

    /// Writes only the parts of [off, off+len) that hold no dirty bytes (newer writes win).
    pub fn write_under(&mut self, off: u64, data: &[u8]) -> isize {
        let end = off + data.len() as u64;
        let mut gaps = Vec::new();
        let mut pos = off;
        let covering: Vec<(u64, u64)> = self
            .spans
            .range(..end)
            .filter(|(o, v)| *o + v.len() as u64 > off)
            .map(|(o, v)| (*o, *o + v.len() as u64))
            .collect();
        for (s, e) in covering {
            if s > pos {
                gaps.push((pos, s));
            }
            pos = pos.max(e);
        }
        if pos < end {
            gaps.push((pos, end));
        }
        let mut delta = 0;
        for (s, e) in gaps {
            delta += self.write(s, &data[(s - off) as usize..(e - off) as usize]);
        }
        delta
    }

    /// Drops everything in [from, to); returns the change in buffered bytes.
    pub fn discard(&mut self, from: u64, to: u64) -> isize {
        if from >= to {
            return 0;
        }
        let hit: Vec<u64> = self
            .spans
            .range(..to)
            .filter(|(o, v)| *o + v.len() as u64 > from)
            .map(|(o, _)| *o)
            .collect();
        let mut delta = 0isize;
        for o in hit {
            let Some(mut v) = self.spans.remove(&o) else {
                continue;
            };
            let vend = o + v.len() as u64;
            delta -= v.len() as isize;
            if vend > to {
                let tail = v.split_off((to - o) as usize);
                delta += tail.len() as isize;
                self.spans.insert(to, tail);
            }
            if o < from {
                v.truncate((from - o) as usize);
                delta += v.len() as isize;
                self.spans.insert(o, v);
            }
        }
        self.bytes = (self.bytes as isize + delta) as usize;
        delta
    }

    /// Removes and returns every span.
    pub fn take_all(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.bytes = 0;
        std::mem::take(&mut self.spans).into_iter().collect()
    }

    /// Removes and returns the spans of the first (lowest) run, if it holds at least
    /// `min_len` bytes. Later runs wait: a gap before them is usually bytes still on their
    /// way (the kernel writes back out of order), and cutting a run that starts after a gap
    /// would put a chunk boundary where the content has none.
    pub fn take_first_run(&mut self, min_len: usize) -> Vec<(u64, Vec<u8>)> {
        let Some((&first, _)) = self.spans.iter().next() else {
            return Vec::new();
        };
        if self.run_len_at(first) < min_len {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut at = first;
        while let Some(v) = self.spans.remove(&at) {
            self.bytes -= v.len();
            let next = at + v.len() as u64;
            out.push((at, v));
            at = next;
        }
        out
    }

    /// Copies dirty bytes over `buf`, which holds the file's bytes from `off`.
    pub fn overlay(&self, off: u64, buf: &mut [u8]) {
        overlay_spans(self.spans.iter().map(|(o, v)| (*o, v.as_slice())), off, buf)
    }

    /// Whether any dirty byte lies in [from, to).
    pub fn overlaps(&self, from: u64, to: u64) -> bool {
        self.spans
            .range(..to)
            .any(|(o, v)| o + v.len() as u64 > from)
    }

    pub fn spans(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.spans.iter().map(|(o, v)| (*o, v.as_slice()))
    }
}

/// Copies the parts of `spans` that fall in [off, off+buf.len()) into `buf`.
pub fn overlay_spans<'a>(spans: impl Iterator<Item = (u64, &'a [u8])>, off: u64, buf: &mut [u8]) {
    let end = off + buf.len() as u64;
    for (o, v) in spans {
        let vend = o + v.len() as u64;
        if vend <= off || o >= end {
            continue;
        }
        let s = o.max(off);
        let e = vend.min(end);
        buf[(s - off) as usize..(e - off) as usize]
            .copy_from_slice(&v[(s - o) as usize..(e - o) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Under(u64, Vec<u8>),
        Discard(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..300, proptest::collection::vec(1u8..=255, 1..60))
                .prop_map(|(o, d)| Op::Write(o, d)),
            (0u64..300, proptest::collection::vec(1u8..=255, 1..60))
                .prop_map(|(o, d)| Op::Under(o, d)),
            (0u64..300, 0u64..100).prop_map(|(o, l)| Op::Discard(o, o + l)),
        ]
    }

    proptest! {
        /// The map agrees with a byte array (0 = not dirty) after any sequence of edits.
        /// Tiny stream thresholds make full-buffer splits and recycling happen here.
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let pool = Arc::new(BufPool::new(1000));
            let mut m = DirtyMap { stream_capacity: 96, stream_min: 24, pool: Some(pool), ..Default::default() };
            let mut model = vec![0u8; 400];
            for op in ops {
                match op {
                    Op::Write(o, d) => { m.write(o, &d); model[o as usize..o as usize + d.len()].copy_from_slice(&d); }
                    Op::Under(o, d) => {
                        m.write_under(o, &d);
                        for (i, b) in d.iter().enumerate() { if model[o as usize + i] == 0 { model[o as usize + i] = *b; } }
                    }
                    Op::Discard(a, b) => { m.discard(a, b); for x in &mut model[a as usize..b as usize] { *x = 0; } }
                }
                let mut buf = vec![0u8; 400];
                m.overlay(0, &mut buf);
                prop_assert_eq!(&buf, &model);
                prop_assert_eq!(m.bytes(), model.iter().filter(|&&b| b != 0).count());
                // invariant: spans never overlap
                let spans: Vec<(u64, usize)> = m.spans().map(|(o, v)| (o, v.len())).collect();
                for w in spans.windows(2) { prop_assert!(w[0].0 + (w[0].1 as u64) <= w[1].0); }
            }
        }
    }

    #[test]
    fn sequential_appends_stay_one_span() {
        let mut m = DirtyMap::default();
        for i in 0..100u64 {
            m.write(i * 10, &[1u8; 10]);
        }
        assert_eq!(m.spans().count(), 1);
        assert_eq!(m.run_len_at(500), 1000);
        m.write(5000, &[2u8; 600]);
        let big = m.take_first_run(500);
        assert_eq!(big.len(), 1, "only the first run");
        assert_eq!(
            m.take_first_run(700).len(),
            0,
            "the next run is smaller than asked"
        );
        assert_eq!(m.take_first_run(500).len(), 1);
        assert!(m.is_empty());
    }
}
