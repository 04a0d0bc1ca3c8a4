//! Replication of a container's history to another store: the sender walks the points
//! the target lacks ([`delta`]), the two sides agree on which chunks must travel
//! ([`wire`] messages, identities under a shared pair key), and the receiver builds the
//! points on a hidden staging branch and publishes them in one commit ([`receive`]).
//!
//! Identity without a secret: each store keys its chunk ids with its own secret, so ids
//! never cross. A source store makes a random 32-byte replication key K once ([`own_key`])
//! and sends it at the start of every stream; the target keeps it per source store
//! (`MetaKey::ReplicaPair`) and refuses a different one. A chunk's *wire id* is BLAKE3
//! `keyed_hash(K, bytes)` cut to 16 bytes: K is not derived from any secret, and the
//! keyed hash is a PRF, so wire ids tell nothing about the store's own ids. The target maps wire ids to its own chunks
//! (`MetaKey::WireChunk`), so a chunk it got from any container of that source is not
//! sent again; a chunk arriving is hashed again and its wire id compared before it is
//! stored. Neither store's secret, nor anything keyed by it, leaves its store.
//!
//! Invariants:
//! - A replica container changes only by a publish: what a receive wrote before (staging
//!   branch, resume cursor) is reachable from no tree until then, so a cut transfer reads
//!   as the last complete point, and the next run resumes from the cursor.
//! - Every chunk reference a receive writes names a chunk that is indexed or held in the
//!   same commit (received and verified, or held by [`crate::chunks::ChunkStore::hold_existing`]).

pub mod delta;
pub mod receive;
pub mod send;
mod stream;
pub mod verify;
pub mod wire;

use crate::chunks::ChunkError;
use crate::containers::ContainerError;
use crate::keys::MetaKey;
use crate::kv::{Cf, KvError};
use crate::store::StoreError;
use thiserror::Error;

/// The protocol version both sides must speak.
pub const PROTOCOL: u32 = 1;

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Point(#[from] crate::points::PointError),
    #[error("replication stream: {0}")]
    Io(#[source] std::io::Error),
    /// The peer sent something this side cannot accept (bad frame, wrong order).
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// The peer refused, with its reason.
    #[error("the other side refused: {0}")]
    Peer(String),
    /// This side refuses (wrong target, diverged history, different chunking).
    #[error("{0}")]
    Refused(String),
    #[error("no container named '{0}'")]
    NoContainer(String),
    /// A chunk's bytes do not hash to the wire id they came with.
    #[error("chunk {wire} arrived damaged ({got} bytes do not hash to its id)")]
    Damaged { wire: String, got: usize },
}

pub type Result<T> = std::result::Result<T, ReplicaError>;

/// The key two stores share for wire ids.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PairKey(pub [u8; 32]);

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairKey(…)")
    }
}

/// A chunk's identity on the wire (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireId(pub [u8; 16]);

impl std::fmt::Display for WireId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl PairKey {
    pub fn random() -> std::io::Result<PairKey> {
        use std::io::Read;
        let mut k = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
        Ok(PairKey(k))
    }
    pub fn wire_id(&self, data: &[u8]) -> WireId {
        let h = blake3::keyed_hash(&self.0, data);
        let mut w = [0u8; 16];
        w.copy_from_slice(&h.as_bytes()[..16]);
        WireId(w)
    }
    /// A short tag of the pair under which the target indexes wire ids (not secret: a
    /// hash of the key, so two pairs never share index entries).
    pub fn tag(&self) -> u64 {
        let h = blake3::hash(&self.0);
        u64::from_be_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }
}

/// The pair key this store shares with store `peer`, if any.
pub fn pair_key(store: &crate::store::Store, peer: &str) -> Result<Option<PairKey>> {
    match store
        .kv()
        .get(Cf::Meta, &MetaKey::ReplicaPair(peer.to_string()).encode())?
    {
        None => Ok(None),
        Some(v) => {
            let k: [u8; 32] = v.as_slice().try_into().map_err(|_| {
                KvError::Corrupt(format!(
                    "replication key for store {peer}: {} bytes",
                    v.len()
                ))
            })?;
            Ok(Some(PairKey(k)))
        }
    }
}

/// Records the pair key shared with `peer` (a no-op when it is already the one kept; a
/// different key for the same peer is refused: the wire index would mix two pairs).
pub fn set_pair_key(store: &crate::store::Store, peer: &str, key: PairKey) -> Result<()> {
    if let Some(k) = pair_key(store, peer)? {
        if k == key {
            return Ok(());
        }
        return Err(ReplicaError::Refused(format!(
            "this store already shares a different replication key with store {peer}"
        )));
    }
    store.committer.commit(|c| {
        c.txn.put(
            Cf::Meta,
            MetaKey::ReplicaPair(peer.to_string()).encode(),
            key.0.to_vec(),
        );
        Ok::<_, ReplicaError>(())
    })
}

/// This store's own replication key (made on first use): every replication *from* this
/// store names chunks under it, so a target finds chunks it got from any container of
/// this store. Kept under the store's own id.
pub fn own_key(store: &crate::store::Store) -> Result<PairKey> {
    let me = store.config().store_id.clone();
    if let Some(k) = pair_key(store, &me)? {
        return Ok(k);
    }
    let k = PairKey::random().map_err(ReplicaError::Io)?;
    set_pair_key(store, &me, k)?;
    Ok(k)
}

/// Points of containers a send in this process is reading (container, branch, version,
/// pin id): retention keeps them as it keeps bookmarks. Protects: the list. Lock order: a
/// leaf. Process-wide is enough: a store's sends and its retention run in one process (the
/// daemon, or a CLI holding the store lock).
static PINS: std::sync::Mutex<Vec<(u32, u64, u64, u64)>> = std::sync::Mutex::new(Vec::new());
static NEXT_PIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Keeps points of a container from retention until dropped (see [`pinned`]).
pub struct Pin(u64);

impl Pin {
    pub fn new(c: crate::ids::ContainerId, points: &[(u64, u64)]) -> Pin {
        let id = NEXT_PIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut p = PINS.lock().unwrap_or_else(|e| e.into_inner());
        p.extend(points.iter().map(|&(b, v)| (c.0, b, v, id)));
        Pin(id)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut p = PINS.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|x| x.3 != self.0);
    }
}

/// The points of container `c` that running sends are reading. A prune reads them after
/// recording its new floor and keeps them; a send pins first and checks the floor second,
/// so one of the two always sees the other.
pub fn pinned(c: crate::ids::ContainerId) -> Vec<(crate::ids::BranchId, crate::ids::Version)> {
    let p = PINS.lock().unwrap_or_else(|e| e.into_inner());
    p.iter()
        .filter(|x| x.0 == c.0)
        .map(|x| (crate::ids::BranchId(x.1), crate::ids::Version(x.2)))
        .collect()
}

/// A point of the source container being replicated, as the stream names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointMeta {
    pub kind: PointKind,
    /// Bookmark or snapshot name (the snapshot's part after `@`); empty for the live tree.
    pub name: String,
    /// The bookmark's kind (`app`, `fs`, `user`); empty otherwise.
    pub bookmark_kind: String,
    pub source_branch: u64,
    pub source_version: u64,
    pub time: i64,
    pub time_nsec: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    Live = 0,
    Bookmark = 1,
    Snapshot = 2,
}

impl PointKind {
    pub fn from_u8(v: u8) -> Option<PointKind> {
        match v {
            0 => Some(PointKind::Live),
            1 => Some(PointKind::Bookmark),
            2 => Some(PointKind::Snapshot),
            _ => None,
        }
    }
}
