//! `replicate --verify`: both sides hash their tree of the newest point, inode by inode,
//! and the sender compares. An inode's digest covers its record, its extended
//! attributes, its directory entries and its extent map with each extent's chunk named by
//! its wire id computed from the chunk's bytes as read back now, so a replica whose data
//! was damaged or whose records differ in any way is reported by path.
//!
//! Costs a read of every chunk of the tree on each side (each distinct chunk once).

use super::delta::TreeState;
use super::{PairKey, Result, WireId};
use crate::codec::Enc;
use crate::ids::{ChunkId, Ino};
use crate::mvcc::ReadPoint;
use crate::records::FileKind;
use crate::store::Store;
use crate::tree;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Digest per inode of the tree at `rp` (inode numbers are the same on both sides).
pub fn digests(
    store: &Store,
    rp: &ReadPoint,
    root: Ino,
    key: &PairKey,
) -> Result<BTreeMap<Ino, [u8; 16]>> {
    let t = TreeState::load(store, rp.clone(), root)?;
    let mut wires: HashMap<ChunkId, WireId> = HashMap::new();
    let mut out = BTreeMap::new();
    for (ino, rec) in &t.inodes {
        let mut h = blake3::Hasher::new();
        h.update(&rec.encode());
        for (n, v) in tree::xattrs(store, rp, *ino)? {
            h.update(&Enc::new().blob(&n).blob(&v).finish());
        }
        match rec.kind {
            FileKind::Directory => {
                for (n, d) in tree::entries(store, rp, *ino)? {
                    h.update(&Enc::new().blob(&n).u64(d.ino.0).u8(d.kind.to_u8()).finish());
                }
            }
            FileKind::RegularFile => {
                for (off, e) in tree::extents(store, rp, *ino, rec.data_gen, 0, rec.size)? {
                    let w = match wires.get(&e.chunk) {
                        Some(w) => *w,
                        None => {
                            let w = key.wire_id(&store.chunks.read(e.chunk)?);
                            wires.insert(e.chunk, w);
                            w
                        }
                    };
                    h.update(
                        &Enc::new()
                            .u64(off)
                            .u32(e.len)
                            .bytes(&w.0)
                            .u32(e.chunk_off)
                            .u8(e.flags)
                            .finish(),
                    );
                }
            }
            _ => {}
        }
        let mut d = [0u8; 16];
        d.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out.insert(*ino, d);
    }
    Ok(out)
}

pub fn encode(d: &BTreeMap<Ino, [u8; 16]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(d.len() * 24);
    for (i, x) in d {
        v.extend_from_slice(&i.0.to_be_bytes());
        v.extend_from_slice(x);
    }
    v
}

pub fn decode(b: &[u8]) -> Result<BTreeMap<Ino, [u8; 16]>> {
    if !b.len().is_multiple_of(24) {
        return Err(super::ReplicaError::Protocol(format!(
            "verify reply of {} bytes",
            b.len()
        )));
    }
    Ok(b.chunks(24)
        .map(|c| {
            let mut d = [0u8; 16];
            d.copy_from_slice(&c[8..]);
            (
                Ino(u64::from_be_bytes(c[..8].try_into().unwrap_or([0; 8]))),
                d,
            )
        })
        .collect())
}

/// What `--verify` found.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub inodes: u64,
    /// Paths (at the source) whose record, attributes, entries or data differ at the target.
    pub differ: Vec<String>,
    /// Paths the target lacks.
    pub missing: Vec<String>,
    /// Inodes the target has that the source's tree does not.
    pub extra: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.differ.is_empty() && self.missing.is_empty() && self.extra == 0
    }
}

/// Compares the source's digests with the target's; names differences by source path.
pub fn compare(
    store: &Store,
    rp: &ReadPoint,
    root: Ino,
    mine: &BTreeMap<Ino, [u8; 16]>,
    theirs: &BTreeMap<Ino, [u8; 16]>,
) -> Result<VerifyReport> {
    let mut r = VerifyReport {
        inodes: mine.len() as u64,
        ..Default::default()
    };
    let path = |ino: Ino| -> Result<String> {
        Ok(if ino == root {
            "/".into()
        } else {
            tree::path_of(store, rp, root, ino, 1 << 20)?.unwrap_or_else(|| format!("inode {ino}"))
        })
    };
    for (ino, d) in mine {
        match theirs.get(ino) {
            None => r.missing.push(path(*ino)?),
            Some(t) if t != d => r.differ.push(path(*ino)?),
            _ => {}
        }
    }
    r.extra = theirs.keys().filter(|i| !mine.contains_key(i)).count() as u64;
    Ok(r)
}
