//! Bytes written to a file but not yet chunked and committed.
//!
//! Owns the write buffer of one open file: a set of disjoint, non-adjacent spans keyed by
//! offset. Sequential writes extend the last span in place, so a streaming writer costs one
//! `memcpy` per write. Invariant: spans never overlap or touch (touching spans are merged).

use std::collections::BTreeMap;

#[derive(Default, Debug)]
pub struct DirtyMap {
    spans: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl DirtyMap {
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

    /// Length of the span containing `off`, if any.
    pub fn span_len_at(&self, off: u64) -> usize {
        match self.spans.range(..=off).next_back() {
            Some((o, v)) if o + v.len() as u64 >= off => v.len(),
            _ => 0,
        }
    }

    /// Writes `data` at `off`; returns the change in buffered bytes.
    pub fn write(&mut self, off: u64, data: &[u8]) -> isize {
        if data.is_empty() {
            return 0;
        }
        let end = off + data.len() as u64;
        // Fast path: appending to the span that ends exactly at `off`.
        if let Some((&s, v)) = self.spans.range_mut(..=off).next_back() {
            let vend = s + v.len() as u64;
            if vend == off && self.spans.range(off + 1..=end).next().is_none() {
                if let Some(v) = self.spans.get_mut(&s) {
                    v.extend_from_slice(data);
                }
                self.bytes += data.len();
                return data.len() as isize;
            }
        }
        // General case: merge every span overlapping or touching [off, end].
        let mut start = off;
        let mut new_end = end;
        let touching: Vec<u64> = self
            .spans
            .range(..=end)
            .rev()
            .take_while(|(o, v)| *o + v.len() as u64 >= off)
            .map(|(o, _)| *o)
            .collect();
        for &o in &touching {
            let len = self.spans[&o].len() as u64;
            start = start.min(o);
            new_end = new_end.max(o + len);
        }
        let mut merged = vec![0u8; (new_end - start) as usize];
        let mut removed = 0usize;
        for o in touching {
            if let Some(v) = self.spans.remove(&o) {
                let at = (o - start) as usize;
                merged[at..at + v.len()].copy_from_slice(&v);
                removed += v.len();
            }
        }
        let at = (off - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.bytes = self.bytes - removed + merged.len();
        let delta = merged.len() as isize - removed as isize;
        self.spans.insert(start, merged);
        delta
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

    /// Removes and returns the spans of at least `min_len` bytes.
    pub fn take_large(&mut self, min_len: usize) -> Vec<(u64, Vec<u8>)> {
        let keys: Vec<u64> = self
            .spans
            .iter()
            .filter(|(_, v)| v.len() >= min_len)
            .map(|(o, _)| *o)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(v) = self.spans.remove(&k) {
                self.bytes -= v.len();
                out.push((k, v));
            }
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
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut m = DirtyMap::default();
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
                // invariant: spans neither overlap nor touch
                let spans: Vec<(u64, usize)> = m.spans().map(|(o, v)| (o, v.len())).collect();
                for w in spans.windows(2) { prop_assert!(w[0].0 + (w[0].1 as u64) < w[1].0); }
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
        assert_eq!(m.span_len_at(500), 1000);
        let big = m.take_large(500);
        assert_eq!(big.len(), 1);
        assert!(m.is_empty());
    }
}
