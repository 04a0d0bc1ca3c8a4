//! Reference records, for consistency checks: every extent version (each names one chunk)
//! and every per-container reference count, scanned whole, and the repairs `fsck` makes.
//!
//! A record whose key or value does not decode is reported to the visitor as
//! [`Malformed`] — never skipped and never read as zero — so fsck can name it.

use crate::commit::Commit;
use crate::containers::purge::hex;
use crate::ids::{BranchId, ChunkId, ContainerId, Ino, Version};
use crate::keys::{self, ExtentKey};
use crate::kv::{Cf, KvError};
use crate::mvcc;
use crate::records::ExtentRec;
use crate::store::Store;

/// One extent version that names a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentRef {
    pub branch: BranchId,
    pub ino: Ino,
    pub version: Version,
    pub offset: u64,
    pub chunk: ChunkId,
}

/// A record that does not decode: which family, its key in hex, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub family: &'static str,
    pub key: String,
    pub reason: String,
}

/// Visits every extent version that names a chunk (deletions carry none), and every
/// malformed extent record.
pub fn scan_extents(
    store: &Store,
    mut visit: impl FnMut(Result<ExtentRef, Malformed>),
) -> Result<(), KvError> {
    let mut it = store.kv().iter(Cf::Extents, None, None);
    it.seek(&[]);
    while it.valid() {
        let bad = |reason: String| Malformed {
            family: "extents",
            key: hex(it.key()),
            reason,
        };
        let parsed = ExtentKey::decode(it.key())
            .map_err(|e| bad(e.to_string()))
            .and_then(|k| {
                let v = mvcc::decode_value(it.value()).map_err(|e| bad(e.to_string()))?;
                Ok(v.map(|p| (k, p)))
            })
            .and_then(|x| match x {
                None => Ok(None),
                Some((k, p)) => ExtentRec::decode(p)
                    .map(|e| {
                        Some(ExtentRef {
                            branch: k.branch,
                            ino: k.ino,
                            version: k.version,
                            offset: k.offset,
                            chunk: e.chunk,
                        })
                    })
                    .map_err(|e| bad(e.to_string())),
            });
        match parsed {
            Ok(Some(r)) => visit(Ok(r)),
            Ok(None) => {}
            Err(m) => visit(Err(m)),
        }
        it.next();
    }
    it.status()
}

/// Visits every per-container reference count (container, chunk, count), and every
/// malformed one.
pub fn scan_container_refs(
    store: &Store,
    mut visit: impl FnMut(Result<(ContainerId, ChunkId, u64), Malformed>),
) -> Result<(), KvError> {
    let mut it = store.kv().iter(Cf::ContainerRefs, None, None);
    it.seek(&[]);
    while it.valid() {
        let bad = |reason: String| Malformed {
            family: "container_refs",
            key: hex(it.key()),
            reason,
        };
        let r = keys::container_ref_from(it.key())
            .map_err(|e| bad(e.to_string()))
            .and_then(|(c, id)| {
                keys::decode_u64(it.value(), "container reference count")
                    .map(|n| (c, id, n))
                    .map_err(|e| bad(e.to_string()))
            });
        visit(r);
        it.next();
    }
    it.status()
}

/// Inside a commit: sets a per-container reference count (0 removes it).
pub fn set_container_ref(c: &mut Commit<'_>, container: ContainerId, chunk: ChunkId, n: u64) {
    let k = keys::container_ref(container, chunk);
    if n == 0 {
        c.txn.delete(Cf::ContainerRefs, k);
    } else {
        c.txn.put(Cf::ContainerRefs, k, keys::encode_u64(n));
    }
}

/// Inside a commit: removes a record that does not decode (`fsck --repair`). Only for
/// families whose records nothing else depends on once they are unreadable.
pub fn drop_malformed(c: &mut Commit<'_>, m: &Malformed) -> Result<(), KvError> {
    let cf = match m.family {
        "container_refs" => Cf::ContainerRefs,
        other => {
            return Err(KvError::Corrupt(format!(
                "malformed {other} records cannot be dropped by repair"
            )))
        }
    };
    let key = crate::store::config::from_hex(&m.key)
        .ok_or_else(|| KvError::Corrupt(format!("bad key {}", m.key)))?;
    c.txn.delete(cf, key);
    Ok(())
}

/// Visits every metadata record that does not decode, in every family: keys by their
/// typed layouts ([`crate::keys`]), values by their record layouts. O(records).
pub fn check_records(store: &Store, mut visit: impl FnMut(Malformed)) -> Result<(), KvError> {
    use crate::containers::{BookmarkRecord, BranchRecord, ContainerRecord, SnapshotRecord};
    use crate::records::{ChunkRec, DirentRec, InodeRec, TreeCounters};
    let json = |k: &[u8], v: &[u8]| -> Result<(), String> {
        let r = match k.first() {
            Some(b'S') => serde_json::from_slice::<SnapshotRecord>(v).map(|_| ()),
            _ => serde_json::from_slice::<BookmarkRecord>(v).map(|_| ()),
        };
        r.map_err(|e| e.to_string())
    };
    type Check = fn(&[u8], &[u8]) -> Result<(), String>;
    fn versioned(
        k: &[u8],
        v: &[u8],
        payload: fn(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let key = keys::VersionedKey::decode(k).map_err(|e| e.to_string())?;
        match mvcc::decode_value(v).map_err(|e| e.to_string())? {
            Some(p) => payload(key.suffix, p),
            None => Ok(()),
        }
    }
    fn head(
        k: &[u8],
        v: &[u8],
        payload: fn(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if k.len() < 16 {
            return Err(format!("head key of {} bytes", k.len()));
        }
        let (_, raw) = mvcc::split_head_value(v).map_err(|e| e.to_string())?;
        match mvcc::decode_value(&raw).map_err(|e| e.to_string())? {
            Some(p) => payload(&k[16..], p),
            None => Ok(()),
        }
    }
    fn inode(_s: &[u8], p: &[u8]) -> Result<(), String> {
        InodeRec::decode(p).map(|_| ()).map_err(|e| e.to_string())
    }
    fn dirent(s: &[u8], p: &[u8]) -> Result<(), String> {
        keys::name_from_suffix(s).map_err(|e| e.to_string())?;
        DirentRec::decode(p).map(|_| ()).map_err(|e| e.to_string())
    }
    fn xattr(s: &[u8], _p: &[u8]) -> Result<(), String> {
        keys::name_from_suffix(s)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn counters(_s: &[u8], p: &[u8]) -> Result<(), String> {
        TreeCounters::decode(p)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    let checks: [(Cf, Check); 11] = [
        (Cf::Inodes, |k, v| versioned(k, v, inode)),
        (Cf::Dirents, |k, v| versioned(k, v, dirent)),
        (Cf::Xattrs, |k, v| versioned(k, v, xattr)),
        (Cf::TreeCounters, |k, v| versioned(k, v, counters)),
        (Cf::InodesHead, |k, v| head(k, v, inode)),
        (Cf::DirentsHead, |k, v| head(k, v, dirent)),
        (Cf::XattrsHead, |k, v| head(k, v, xattr)),
        (Cf::ExtentSegments, |k, v| {
            if k.len() != 32 {
                return Err(format!("segment key of {} bytes", k.len()));
            }
            crate::extents::decode_segment(v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        (Cf::Chunks, |k, v| {
            keys::chunk_from(k).map_err(|e| e.to_string())?;
            ChunkRec::decode(v).map(|_| ()).map_err(|e| e.to_string())
        }),
        (Cf::Timeline, |k, v| {
            keys::timeline_from(k).map_err(|e| e.to_string())?;
            keys::decode_u64(v, "timeline entry")
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        (Cf::Orphans, |k, v| {
            keys::orphan_from(k).map_err(|e| e.to_string())?;
            keys::orphan_value_from(v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    ];
    type Validate<'v> = &'v dyn Fn(&[u8], &[u8]) -> Result<(), String>;
    let mut run = |cf: Cf, check: Validate<'_>| -> Result<(), KvError> {
        let mut it = store.kv().iter(cf, None, None);
        it.seek(&[]);
        while it.valid() {
            if let Err(reason) = check(it.key(), it.value()) {
                visit(Malformed {
                    family: cf.name(),
                    key: hex(it.key()),
                    reason,
                });
            }
            it.next();
        }
        it.status()
    };
    for (cf, check) in checks {
        run(cf, &check)?;
    }
    run(Cf::Containers, &|_, v| {
        serde_json::from_slice::<ContainerRecord>(v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    run(Cf::Branches, &|_, v| {
        serde_json::from_slice::<BranchRecord>(v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    run(Cf::Points, &json)?;
    Ok(())
}
