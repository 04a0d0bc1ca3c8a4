//! Multi-version records: history kept in the key space.
//!
//! Every filesystem record (inode, directory entry, extent, xattr) is stored under
//! `branch(8) | ino(8) | suffix | !version(8)`; the value is a tombstone marker or the record.
//! Writing never overwrites: a change adds a newer version, a deletion adds a tombstone.
//! Reading "as of version V" is a seek to `(…, !V)`, which lands on the newest version ≤ V.
//!
//! A [`ReadPoint`] is a chain of (branch, cap) levels: the branch being read, then its parent
//! at the fork version, and so on. A level that holds any visible version of a record (even a
//! tombstone) hides the levels below it, which is how a read-write snapshot or a rolled-back
//! head diverges from its origin without copying it.
//!
//! Every write also updates the record's *head* entry (`Cf::head`): `branch | ino | suffix`
//! → the newest version. Live reads (level 0 at [`Version::LATEST`]) use the head entries,
//! so their cost does not grow with history; reads of the past walk the versioned keys.
//! On a branch without ancestors a deletion removes the head entry; on a branch with
//! ancestors it leaves a tombstone there, which hides the ancestors' record.
//!
//! Invariants: suffixes within one column family are self-delimiting (fixed width or length
//! prefixed), so all versions of one record are contiguous; version 0 is never written; the
//! head entry of a record always equals its newest version.

use crate::codec::{prefix_successor, CodecError, Enc};
use crate::ids::{BranchId, Ino, Version};
use crate::keys::{self, VersionedKey};
use crate::kv::{Cf, Kv, KvError, KvIter, Txn};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

const TOMBSTONE: u8 = 0;
const PRESENT: u8 = 1;

/// Where a read looks: levels from the branch itself down to its oldest ancestor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPoint {
    pub levels: Vec<(BranchId, Version)>,
}

impl ReadPoint {
    /// A read of a branch without ancestors.
    pub fn single(branch: BranchId, at: Version) -> Self {
        ReadPoint {
            levels: vec![(branch, at)],
        }
    }
    /// The branch that writes go to (level 0).
    pub fn branch(&self) -> BranchId {
        self.levels[0].0
    }
    /// The same chain read at an earlier version (caps never rise going down the chain).
    pub fn at(&self, v: Version) -> ReadPoint {
        let mut levels = Vec::with_capacity(self.levels.len());
        let mut cap = v;
        for &(b, c) in &self.levels {
            cap = cap.min(c);
            levels.push((b, cap));
        }
        ReadPoint { levels }
    }
}

pub(crate) use keys::version as version_key;

/// Splits a versioned key into (suffix, version); a key too short to be one is corruption.
fn split_key(key: &[u8]) -> Result<(&[u8], Version), KvError> {
    VersionedKey::decode(key)
        .map(|k| (k.suffix, k.version))
        .map_err(|e| KvError::Corrupt(e.to_string()))
}

pub(crate) fn encode_value(payload: Option<&[u8]>) -> Vec<u8> {
    match payload {
        None => vec![TOMBSTONE],
        Some(p) => {
            let mut v = Vec::with_capacity(p.len() + 1);
            v.push(PRESENT);
            v.extend_from_slice(p);
            v
        }
    }
}

/// The payload of a versioned value (`None` for a tombstone); any other marker is corruption.
pub(crate) fn decode_value(v: &[u8]) -> Result<Option<&[u8]>, KvError> {
    match v.first() {
        Some(&TOMBSTONE) => Ok(None),
        Some(&PRESENT) => Ok(Some(&v[1..])),
        _ => Err(KvError::Corrupt(format!(
            "versioned value with bad marker {:?}",
            v.first()
        ))),
    }
}

/// A visible record: the version that wrote it and its payload (`None` = deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    pub version: Version,
    pub payload: Option<Vec<u8>>,
}

/// The newest version ≤ the read point of one record, looking down the chain.
pub(crate) fn get(
    kv: &dyn Kv,
    cf: Cf,
    rp: &ReadPoint,
    ino: Ino,
    suffix: &[u8],
) -> Result<Option<Visible>, KvError> {
    for (i, &(branch, cap)) in rp.levels.iter().enumerate() {
        if let (0, Some(hcf), true) = (i, cf.head(), cap == Version::LATEST) {
            let key = keys::record(branch, ino, suffix);
            if let Some(v) = kv.get(hcf, &key)? {
                let (version, raw) = split_head_value(&v)?;
                let payload = decode_value(&raw)?.map(|p| p.to_vec());
                return Ok(Some(Visible { version, payload }));
            }
            continue;
        }
        let lower = keys::record(branch, ino, suffix);
        let upper = keys::after_versions(&lower);
        let mut it = kv.iter(cf, Some(lower.clone()), Some(upper));
        it.seek(&version_key(branch, ino, suffix, cap));
        if it.valid() {
            let key = it.key();
            if key.len() == lower.len() + 8 {
                let (_, v) = split_key(key)?;
                let payload = decode_value(it.value())?.map(|p| p.to_vec());
                return Ok(Some(Visible {
                    version: v,
                    payload,
                }));
            }
        }
        it.status()?;
    }
    Ok(None)
}

/// Like [`get`], but a tombstone reads as absent.
pub(crate) fn get_live(
    kv: &dyn Kv,
    cf: Cf,
    rp: &ReadPoint,
    ino: Ino,
    suffix: &[u8],
) -> Result<Option<Vec<u8>>, KvError> {
    Ok(get(kv, cf, rp, ino, suffix)?.and_then(|v| v.payload))
}

/// Reads through a transaction: its own pending write of this record (always the newest
/// version, on level 0) wins over the store.
pub(crate) fn txn_get_live(
    txn: &Txn<'_>,
    cf: Cf,
    rp: &ReadPoint,
    ino: Ino,
    suffix: &[u8],
    writing: Version,
) -> Result<Option<Vec<u8>>, KvError> {
    let k = version_key(rp.branch(), ino, suffix, writing);
    if let Some(p) = txn.pending(cf, &k) {
        return Ok(match p {
            Some(v) => decode_value(v)?.map(|x| x.to_vec()),
            None => None,
        });
    }
    get_live(txn.kv(), cf, rp, ino, suffix)
}

/// Writes a new version (or, with `None`, a tombstone) of a record on the branch `rp`
/// reads first, and its head entry.
pub(crate) fn put(
    txn: &mut Txn<'_>,
    cf: Cf,
    rp: &ReadPoint,
    ino: Ino,
    suffix: &[u8],
    v: Version,
    payload: Option<&[u8]>,
) {
    let branch = rp.branch();
    let value = encode_value(payload);
    if let Some(hcf) = cf.head() {
        let key = keys::record(branch, ino, suffix);
        if payload.is_none() && rp.levels.len() == 1 {
            txn.delete(hcf, key);
        } else {
            txn.put(
                hcf,
                key,
                Enc::with_capacity(9 + value.len())
                    .u8(value[0])
                    .u64(v.0)
                    .bytes(&value[1..])
                    .finish(),
            );
        }
    }
    txn.put(cf, version_key(branch, ino, suffix, v), value);
}

/// Writes a new version of a record without touching a head entry (for families whose
/// live state is kept elsewhere, such as extents).
pub(crate) fn put_history(
    txn: &mut Txn<'_>,
    cf: Cf,
    branch: BranchId,
    ino: Ino,
    suffix: &[u8],
    v: Version,
    payload: Option<&[u8]>,
) {
    txn.put(
        cf,
        version_key(branch, ino, suffix, v),
        encode_value(payload),
    );
}

/// Splits a head value into (version, marker+payload).
pub(crate) fn split_head_value(v: &[u8]) -> Result<(Version, Vec<u8>), KvError> {
    if v.len() < 9 {
        return Err(KvError::Corrupt(format!("head entry of {} bytes", v.len())));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[1..9]);
    let mut raw = Vec::with_capacity(v.len() - 8);
    raw.push(v[0]);
    raw.extend_from_slice(&v[9..]);
    Ok((Version(u64::from_be_bytes(b)), raw))
}

/// One level's cursor yielding the visible version of each record in a suffix range.
struct LevelCursor<'a> {
    it: Box<dyn KvIter + 'a>,
    branch: BranchId,
    ino: Ino,
    cap: Version,
    /// Iterating head entries (one key per record) rather than versions.
    head: bool,
    /// The current record: (suffix, visible version, raw value).
    cur: Option<(Vec<u8>, Version, Vec<u8>)>,
    /// A malformed key found on the way (the scan reports it).
    err: Option<KvError>,
}

impl<'a> LevelCursor<'a> {
    /// A cursor over `level` = (branch, cap); `head` reads head entries instead of versions.
    fn new(
        kv: &'a dyn Kv,
        cf: Cf,
        level: (BranchId, Version),
        ino: Ino,
        range: (&[u8], Option<&[u8]>),
        head: bool,
    ) -> Self {
        let (branch, cap) = level;
        let (from, to) = range;
        let prefix = keys::object_prefix(branch, ino);
        let cf = if head { cf.head().unwrap_or(cf) } else { cf };
        let lower = Enc::new().bytes(&prefix).bytes(from).finish();
        let upper = match to {
            Some(t) => Enc::new().bytes(&prefix).bytes(t).finish(),
            None => prefix_successor(&prefix).unwrap_or_else(|| vec![0xff; 17]),
        };
        let mut it = kv.iter(cf, Some(lower.clone()), Some(upper));
        it.seek(&lower);
        let mut c = LevelCursor {
            it,
            branch,
            ino,
            cap,
            head,
            cur: None,
            err: None,
        };
        c.settle();
        c
    }

    /// From the iterator's position (the first key of some record), finds the next record
    /// with a version visible at `cap` and makes it current.
    fn settle(&mut self) {
        self.cur = None;
        if self.head {
            if self.it.valid() {
                let suffix = self.it.key().get(16..).unwrap_or_default().to_vec();
                match split_head_value(self.it.value()) {
                    Ok((v, raw)) => self.cur = Some((suffix, v, raw)),
                    Err(_) => self.cur = Some((suffix, Version(0), vec![0xff])),
                }
            }
            return;
        }
        while self.it.valid() {
            let (suffix, newest) = match split_key(self.it.key()) {
                Ok((s, v)) => (s.to_vec(), v),
                Err(e) => {
                    self.err = Some(e);
                    return;
                }
            };
            if newest > self.cap {
                self.it
                    .seek(&version_key(self.branch, self.ino, &suffix, self.cap));
            }
            if self.it.valid() {
                match split_key(self.it.key()) {
                    Ok((s, v)) if s == suffix.as_slice() => {
                        self.cur = Some((suffix.clone(), v, self.it.value().to_vec()))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.err = Some(e);
                        return;
                    }
                }
            }
            // Step past the remaining versions of this record.
            let after = keys::after_versions(&keys::record(self.branch, self.ino, &suffix));
            let mut steps = 0;
            while self.it.valid() && self.it.key() < after.as_slice() {
                steps += 1;
                if steps > 4 {
                    self.it.seek(&after);
                    break;
                }
                self.it.next();
            }
            if self.cur.is_some() {
                return;
            }
        }
    }
}

/// A record seen by [`scan`]: its suffix, the version that wrote it, and its payload.
pub struct ScanItem<'p> {
    pub suffix: &'p [u8],
    pub version: Version,
    pub payload: &'p [u8],
}

/// [`scan`] that decodes every visible record with `decode` into a map. Stops at the first
/// record that does not decode: the outer error is the store's, the inner one names the
/// malformed record (callers turn it into a `Corrupt` error saying whose record it was).
pub(crate) fn scan_decoded<K: Ord, V>(
    kv: &dyn Kv,
    cf: Cf,
    rp: &ReadPoint,
    ino: Ino,
    from: &[u8],
    to: Option<&[u8]>,
    mut decode: impl FnMut(ScanItem<'_>) -> Result<(K, V), CodecError>,
) -> Result<Result<BTreeMap<K, V>, CodecError>, KvError> {
    let mut out = BTreeMap::new();
    let mut err = None;
    scan(kv, cf, rp, ino, from, to, |it| match decode(it) {
        Ok((k, v)) => {
            out.insert(k, v);
            ControlFlow::Continue(())
        }
        Err(e) => {
            err = Some(e);
            ControlFlow::Break(())
        }
    })?;
    Ok(match err {
        Some(e) => Err(e),
        None => Ok(out),
    })
}

/// Visits, in suffix order, every record of `ino` whose suffix lies in [from, to) and that is
/// live at the read point. Tombstones are skipped; a level hides lower levels per record.
pub(crate) fn scan(
    kv: &dyn Kv,
    cf: Cf,
    rp: &ReadPoint,
    ino: Ino,
    from: &[u8],
    to: Option<&[u8]>,
    mut visit: impl FnMut(ScanItem<'_>) -> ControlFlow<()>,
) -> Result<(), KvError> {
    let mut cursors: Vec<LevelCursor<'_>> = rp
        .levels
        .iter()
        .enumerate()
        .map(|(i, &(b, cap))| {
            let head = i == 0 && cap == Version::LATEST && cf.head().is_some();
            LevelCursor::new(kv, cf, (b, cap), ino, (from, to), head)
        })
        .collect();
    loop {
        if let Some(e) = cursors.iter_mut().find_map(|c| c.err.take()) {
            return Err(e);
        }
        // The smallest current suffix; the first (highest) level holding it wins.
        let mut best: Option<usize> = None;
        for (i, c) in cursors.iter().enumerate() {
            if let Some((s, _, _)) = &c.cur {
                match best {
                    None => best = Some(i),
                    Some(b) => {
                        if let Some((bs, _, _)) = &cursors[b].cur {
                            if s < bs {
                                best = Some(i)
                            }
                        }
                    }
                }
            }
        }
        let Some(b) = best else { break };
        let (suffix, version, raw) = match &cursors[b].cur {
            Some(x) => x.clone(),
            None => break,
        };
        for c in cursors.iter_mut() {
            if matches!(&c.cur, Some((s, _, _)) if *s == suffix) {
                if c.head {
                    c.it.next();
                }
                c.settle();
            }
        }
        if let Some(payload) = decode_value(&raw)? {
            if visit(ScanItem {
                suffix: &suffix,
                version,
                payload,
            })
            .is_break()
            {
                break;
            }
        }
    }
    for c in &cursors {
        c.it.status()?;
    }
    Ok(())
}

pub(crate) use keys::suffix_after as after;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;

    fn write(kv: &MemKv, b: u64, ino: u64, suffix: &[u8], v: u64, p: Option<&[u8]>) {
        let mut t = Txn::new(kv);
        // Branch 2 descends from branch 1 in these tests.
        let rp = if b == 2 {
            ReadPoint {
                levels: vec![(BranchId(2), Version::LATEST), (BranchId(1), Version(4))],
            }
        } else {
            ReadPoint::single(BranchId(b), Version::LATEST)
        };
        put(&mut t, Cf::Dirents, &rp, Ino(ino), suffix, Version(v), p);
        kv.write(t.into_batch(), false).unwrap();
    }

    fn names(kv: &MemKv, rp: &ReadPoint) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = vec![];
        scan(kv, Cf::Dirents, rp, Ino(7), &[], None, |it| {
            out.push((it.suffix.to_vec(), it.payload.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn reads_as_of_each_version() {
        let kv = MemKv::new();
        write(&kv, 1, 7, b"a", 1, Some(b"x1"));
        write(&kv, 1, 7, b"a", 3, Some(b"x3"));
        write(&kv, 1, 7, b"a", 5, None);
        let at = |v| {
            get_live(
                &kv,
                Cf::Dirents,
                &ReadPoint::single(BranchId(1), Version(v)),
                Ino(7),
                b"a",
            )
            .unwrap()
        };
        assert_eq!(at(0), None);
        assert_eq!(at(1), Some(b"x1".to_vec()));
        assert_eq!(at(2), Some(b"x1".to_vec()));
        assert_eq!(at(4), Some(b"x3".to_vec()));
        assert_eq!(at(5), None);
        assert_eq!(at(Version::LATEST.0), None);
    }

    #[test]
    fn branch_falls_through_and_hides() {
        let kv = MemKv::new();
        write(&kv, 1, 7, b"a", 1, Some(b"a1"));
        write(&kv, 1, 7, b"b", 2, Some(b"b2"));
        write(&kv, 1, 7, b"c", 6, Some(b"c6")); // after the fork: invisible to branch 2
        write(&kv, 2, 7, b"a", 7, None); // branch deletes a
        write(&kv, 2, 7, b"d", 8, Some(b"d8"));
        let rp = ReadPoint {
            levels: vec![(BranchId(2), Version::LATEST), (BranchId(1), Version(4))],
        };
        assert_eq!(
            names(&kv, &rp),
            vec![
                (b"b".to_vec(), b"b2".to_vec()),
                (b"d".to_vec(), b"d8".to_vec())
            ]
        );
        let origin = ReadPoint::single(BranchId(1), Version::LATEST);
        assert_eq!(names(&kv, &origin).len(), 3);
        // an earlier read of the branch: before its own writes
        assert_eq!(names(&kv, &rp.at(Version(6))).len(), 2);
        assert_eq!(
            get_live(&kv, Cf::Dirents, &rp.at(Version(6)), Ino(7), b"a").unwrap(),
            Some(b"a1".to_vec())
        );
    }

    #[test]
    fn scan_skips_long_histories_and_resumes() {
        let kv = MemKv::new();
        for v in 1..50 {
            write(&kv, 1, 7, b"k1", v, Some(&[v as u8]));
        }
        write(&kv, 1, 7, b"k2", 60, Some(b"z"));
        let rp = ReadPoint::single(BranchId(1), Version(20));
        let got = names(&kv, &rp);
        assert_eq!(got, vec![(b"k1".to_vec(), vec![20])]);
        let mut rest = vec![];
        scan(
            &kv,
            Cf::Dirents,
            &ReadPoint::single(BranchId(1), Version::LATEST),
            Ino(7),
            &after(b"k1"),
            None,
            |it| {
                rest.push(it.suffix.to_vec());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(rest, vec![b"k2".to_vec()]);
    }
}
