//! In-memory implementation of [`Kv`] for unit and model tests.
//!
//! A `BTreeMap` per column family behind one lock. Iterators re-query the map on every step
//! (they hold no lock between calls), which is slow but lets tests interleave writes and
//! scans freely. Never used by the product.

use super::{Batch, Cf, Kv, KvError, KvIter, WriteOp};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default, Clone)]
pub struct MemKv {
    maps: Arc<RwLock<BTreeMap<Cf, Map>>>,
    /// Fault injection: syncs left before one fails (0: never fails).
    fail_sync_in: Arc<std::sync::atomic::AtomicU64>,
}

impl MemKv {
    pub fn new() -> Self {
        MemKv::default()
    }

    /// Makes the `n`th sync from now fail with an I/O error (fault-injection tests).
    pub fn fail_sync_after(&self, n: u64) {
        self.fail_sync_in
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

struct MemIter {
    maps: Arc<RwLock<BTreeMap<Cf, Map>>>,
    cf: Cf,
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
    cur: Option<(Vec<u8>, Vec<u8>)>,
}

impl MemIter {
    fn in_bounds(&self, k: &[u8]) -> bool {
        self.lower.as_deref().is_none_or(|l| k >= l) && self.upper.as_deref().is_none_or(|u| k < u)
    }
    fn find(&mut self, from: Bound<&[u8]>, forward: bool) {
        let maps = self.maps.read();
        let found = maps.get(&self.cf).and_then(|m| {
            if forward {
                m.range::<[u8], _>((from, Bound::Unbounded)).next()
            } else {
                m.range::<[u8], _>((Bound::Unbounded, from)).next_back()
            }
            .map(|(k, v)| (k.clone(), v.clone()))
        });
        drop(maps);
        self.cur = found.filter(|(k, _)| self.in_bounds(k));
    }
}

impl KvIter for MemIter {
    fn seek(&mut self, key: &[u8]) {
        let k = match &self.lower {
            Some(l) if l.as_slice() > key => l.clone(),
            _ => key.to_vec(),
        };
        self.find(Bound::Included(&k), true)
    }
    fn seek_for_prev(&mut self, key: &[u8]) {
        match self.upper.clone() {
            Some(u) if key >= u.as_slice() => self.find(Bound::Excluded(&u), false),
            _ => self.find(Bound::Included(key), false),
        }
    }
    fn next(&mut self) {
        if let Some((k, _)) = self.cur.take() {
            self.find(Bound::Excluded(&k), true)
        }
    }
    fn prev(&mut self) {
        if let Some((k, _)) = self.cur.take() {
            self.find(Bound::Excluded(&k), false)
        }
    }
    fn valid(&self) -> bool {
        self.cur.is_some()
    }
    fn key(&self) -> &[u8] {
        self.cur.as_ref().map(|(k, _)| k.as_slice()).unwrap_or(&[])
    }
    fn value(&self) -> &[u8] {
        self.cur.as_ref().map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }
    fn status(&self) -> Result<(), KvError> {
        Ok(())
    }
}

impl Kv for MemKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.maps.read().get(&cf).and_then(|m| m.get(key).cloned()))
    }

    fn write(&self, batch: Batch, _sync: bool) -> Result<(), KvError> {
        let mut maps = self.maps.write();
        for op in batch.ops {
            match op {
                WriteOp::Put(cf, k, v) => {
                    maps.entry(cf).or_default().insert(k, v);
                }
                WriteOp::Delete(cf, k) => {
                    if let Some(m) = maps.get_mut(&cf) {
                        m.remove(&k);
                    }
                }
                WriteOp::DeleteRange(cf, s, e) => {
                    if let Some(m) = maps.get_mut(&cf) {
                        let doomed: Vec<Vec<u8>> = m.range(s..e).map(|(k, _)| k.clone()).collect();
                        for k in doomed {
                            m.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn iter(&self, cf: Cf, lower: Option<Vec<u8>>, upper: Option<Vec<u8>>) -> Box<dyn KvIter + '_> {
        Box::new(MemIter {
            maps: self.maps.clone(),
            cf,
            lower,
            upper,
            cur: None,
        })
    }

    fn sync(&self) -> Result<(), KvError> {
        use std::sync::atomic::Ordering;
        let left = self.fail_sync_in.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_sync_in.store(left - 1, Ordering::SeqCst);
            if left == 1 {
                return Err(KvError::Io("injected sync failure".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterate_with_bounds_and_range_delete() {
        let kv = MemKv::new();
        let mut b = Batch::new();
        for i in 0u8..10 {
            b.put(Cf::Meta, vec![i], vec![i]);
        }
        kv.write(b, false).unwrap();
        let mut it = kv.iter(Cf::Meta, Some(vec![2]), Some(vec![5]));
        it.seek(&[0]);
        let mut seen = vec![];
        while it.valid() {
            seen.push(it.key()[0]);
            it.next();
        }
        assert_eq!(seen, vec![2, 3, 4]);
        it.seek_for_prev(&[9]);
        assert_eq!(
            it.key(),
            &[4],
            "seek_for_prev clamps to the upper bound, as RocksDB does"
        );
        let mut b = Batch::new();
        b.delete_range(Cf::Meta, vec![3], vec![8]);
        kv.write(b, false).unwrap();
        let all = super::super::collect_range(&kv, Cf::Meta, vec![], None).unwrap();
        assert_eq!(
            all.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
            vec![0, 1, 2, 8, 9]
        );
    }
}
