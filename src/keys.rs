//! Every key of the metadata store, encoded and decoded in one place.
//!
//! Owns the byte layout of the keys of every column family (values are laid out by
//! [`crate::records`] and the modules that own them). Keys are big-endian so that RocksDB's
//! byte order is numeric order; versions are stored inverted (`!v`) so that the newest
//! version of a record sorts first. No other module slices a key by byte offset: they call
//! the typed encoders and decoders here, and a key that does not decode is a
//! [`CodecError`] that the caller reports as corruption — never a default value.
//!
//! Layouts (widths in bytes):
//! - versioned families (`inodes`, `dirents`, `xattrs`, `extents`):
//!   `branch(8) ino(8) suffix !version(8)`; their head families drop the version;
//! - extent suffix: `generation(8) offset(8)`; directory entry and xattr suffix: `len(2) name`;
//! - `extent_segments`: `branch(8) ino(8) generation(8) segment(8)`;
//! - `chunks`: `chunk(16)`; `container_refs`: `container(4) chunk(16)`;
//! - `orphans`: `branch(8) ino(8)`; `timeline`: `millisecond ^ 2^63 (8)`;
//! - `containers`: `container(4)`; `branches`: `branch(8)`;
//! - `points`: `'S' snapshot(4)` and `'B' container(4) name`;
//! - `default` (meta): the names of [`MetaKey`].

use crate::codec::{prefix_successor, CodecError, Dec, Enc};
use crate::ids::{BranchId, ChunkId, ContainerId, Ino, PackId, Version};
use crate::records::Timestamp;

fn arr<const N: usize>(b: &[u8], what: &'static str) -> Result<[u8; N], CodecError> {
    b.try_into()
        .map_err(|_| CodecError::new(what, format!("{} bytes, expected {N}", b.len())))
}

/// A big-endian u64 stored as a whole value (counts, allocators, timeline entries).
pub fn decode_u64(b: &[u8], what: &'static str) -> Result<u64, CodecError> {
    Ok(u64::from_be_bytes(arr(b, what)?))
}

pub fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

// ---- versioned records -------------------------------------------------------------

/// `branch | ino`: the prefix of every record of one object on one branch.
pub fn object_prefix(branch: BranchId, ino: Ino) -> Vec<u8> {
    Enc::with_capacity(16).u64(branch.0).u64(ino.0).finish()
}

/// `branch | ino | suffix`: the key of a head entry (and the prefix of its versions).
pub fn record(branch: BranchId, ino: Ino, suffix: &[u8]) -> Vec<u8> {
    Enc::with_capacity(16 + suffix.len())
        .u64(branch.0)
        .u64(ino.0)
        .bytes(suffix)
        .finish()
}

/// The key of one version of a record.
pub fn version(branch: BranchId, ino: Ino, suffix: &[u8], v: Version) -> Vec<u8> {
    Enc::with_capacity(24 + suffix.len())
        .u64(branch.0)
        .u64(ino.0)
        .bytes(suffix)
        .u64(!v.0)
        .finish()
}

/// The smallest key after every version of the record `prefix` (= [`record`]).
pub fn after_versions(record_key: &[u8]) -> Vec<u8> {
    Enc::with_capacity(record_key.len() + 9)
        .bytes(record_key)
        .u64(u64::MAX)
        .u8(0)
        .finish()
}

/// The suffix bound that starts a scan strictly after the record with `suffix`.
pub fn suffix_after(suffix: &[u8]) -> Vec<u8> {
    Enc::new().bytes(suffix).u64(u64::MAX).u8(0).finish()
}

/// A decoded versioned key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionedKey<'a> {
    pub branch: BranchId,
    pub ino: Ino,
    pub suffix: &'a [u8],
    pub version: Version,
}

impl<'a> VersionedKey<'a> {
    pub fn decode(key: &'a [u8]) -> Result<VersionedKey<'a>, CodecError> {
        if key.len() < 24 {
            return Err(CodecError::new(
                "versioned key",
                format!("{} bytes, at least 24 expected", key.len()),
            ));
        }
        let (head, ver) = key.split_at(key.len() - 8);
        let mut d = Dec::new(head, "versioned key");
        let branch = BranchId(d.u64()?);
        let ino = Ino(d.u64()?);
        Ok(VersionedKey {
            branch,
            ino,
            suffix: d.rest(),
            version: Version(!u64::from_be_bytes(arr(ver, "versioned key")?)),
        })
    }

    /// The key without its version: the same for every version of one record.
    pub fn record_of(key: &'a [u8]) -> Result<&'a [u8], CodecError> {
        Self::decode(key)?;
        Ok(&key[..key.len() - 8])
    }
}

/// The key range holding every record of a branch in a versioned (or head) family.
pub fn branch_range(b: BranchId) -> (Vec<u8>, Vec<u8>) {
    let lo = Enc::new().u64(b.0).finish();
    let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff; 9]);
    (lo, hi)
}

/// The suffix of a directory entry or an extended attribute: its length-prefixed name.
pub fn name_suffix(name: &[u8]) -> Vec<u8> {
    Enc::with_capacity(2 + name.len()).name(name).finish()
}

pub fn name_from_suffix(suffix: &[u8]) -> Result<&[u8], CodecError> {
    let mut d = Dec::new(suffix, "name key");
    let n = d.name()?;
    d.end()?;
    Ok(n)
}

/// The suffix of an extent: (data generation, file offset).
pub fn extent_suffix(gen: u64, offset: u64) -> Vec<u8> {
    Enc::with_capacity(16).u64(gen).u64(offset).finish()
}

pub fn extent_from_suffix(suffix: &[u8]) -> Result<(u64, u64), CodecError> {
    let mut d = Dec::new(suffix, "extent key");
    let g = d.u64()?;
    let o = d.u64()?;
    d.end()?;
    Ok((g, o))
}

/// A decoded key of the `extents` family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentKey {
    pub branch: BranchId,
    pub ino: Ino,
    pub gen: u64,
    pub offset: u64,
    pub version: Version,
}

impl ExtentKey {
    pub fn decode(key: &[u8]) -> Result<ExtentKey, CodecError> {
        let k = VersionedKey::decode(key)?;
        let (gen, offset) = extent_from_suffix(k.suffix)?;
        Ok(ExtentKey {
            branch: k.branch,
            ino: k.ino,
            gen,
            offset,
            version: k.version,
        })
    }
}

/// The key of one live extent segment.
pub fn segment(branch: BranchId, ino: Ino, gen: u64, seg: u64) -> Vec<u8> {
    Enc::with_capacity(32)
        .u64(branch.0)
        .u64(ino.0)
        .u64(gen)
        .u64(seg)
        .finish()
}

// ---- chunk index ---------------------------------------------------------------------

pub fn chunk(id: ChunkId) -> Vec<u8> {
    id.to_bytes().to_vec()
}

pub fn chunk_from(key: &[u8]) -> Result<ChunkId, CodecError> {
    Ok(ChunkId::from_bytes(arr(key, "chunk index key")?))
}

/// The smallest chunk key after `id` (to resume a paged scan).
pub fn chunk_after(id: ChunkId) -> Vec<u8> {
    let mut k = chunk(id);
    k.push(0);
    k
}

pub fn container_ref(c: ContainerId, id: ChunkId) -> Vec<u8> {
    Enc::with_capacity(20).u32(c.0).u128(id.0).finish()
}

pub fn container_ref_from(key: &[u8]) -> Result<(ContainerId, ChunkId), CodecError> {
    let mut d = Dec::new(key, "container reference key");
    let c = ContainerId(d.u32()?);
    let id = ChunkId(d.u128()?);
    d.end()?;
    Ok((c, id))
}

/// Every container-reference key of one container.
pub fn container_refs_range(c: ContainerId) -> (Vec<u8>, Vec<u8>) {
    let lo = Enc::new().u32(c.0).finish();
    let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff; 5]);
    (lo, hi)
}

// ---- orphans, timeline ---------------------------------------------------------------

pub fn orphan(branch: BranchId, ino: Ino) -> Vec<u8> {
    object_prefix(branch, ino)
}

pub fn orphan_from(key: &[u8]) -> Result<(BranchId, Ino), CodecError> {
    let mut d = Dec::new(key, "orphan key");
    let b = BranchId(d.u64()?);
    let i = Ino(d.u64()?);
    d.end()?;
    Ok((b, i))
}

pub fn orphan_value(c: ContainerId) -> Vec<u8> {
    c.0.to_be_bytes().to_vec()
}

pub fn orphan_value_from(v: &[u8]) -> Result<ContainerId, CodecError> {
    Ok(ContainerId(u32::from_be_bytes(arr(v, "orphan record")?)))
}

/// The timeline key of a moment: milliseconds since the epoch, offset so that pre-1970
/// clocks still sort.
pub fn timeline(t: Timestamp) -> Vec<u8> {
    let ms = t
        .sec
        .saturating_mul(1000)
        .saturating_add((t.nsec / 1_000_000) as i64);
    Enc::new().u64((ms as u64) ^ (1 << 63)).finish()
}

/// The moment of a timeline key.
pub fn timeline_from(key: &[u8]) -> Result<Timestamp, CodecError> {
    let ms = (decode_u64(key, "timeline key")? ^ (1 << 63)) as i64;
    Ok(Timestamp {
        sec: ms.div_euclid(1000),
        nsec: (ms.rem_euclid(1000) * 1_000_000) as u32,
    })
}

/// A key after every timeline key.
pub const TIMELINE_END: [u8; 9] = [0xff; 9];

// ---- containers, branches, points ----------------------------------------------------

pub fn container(id: ContainerId) -> Vec<u8> {
    Enc::new().u32(id.0).finish()
}

pub fn branch(id: BranchId) -> Vec<u8> {
    Enc::new().u64(id.0).finish()
}

const POINT_SNAPSHOT: u8 = b'S';
const POINT_BOOKMARK: u8 = b'B';

pub fn snapshot(id: u32) -> Vec<u8> {
    Enc::new().u8(POINT_SNAPSHOT).u32(id).finish()
}

/// Every snapshot key.
pub fn snapshots_range() -> (Vec<u8>, Vec<u8>) {
    (vec![POINT_SNAPSHOT], vec![POINT_SNAPSHOT + 1])
}

pub fn bookmark(container: ContainerId, name: &str) -> Vec<u8> {
    Enc::new()
        .u8(POINT_BOOKMARK)
        .u32(container.0)
        .bytes(name.as_bytes())
        .finish()
}

/// Every bookmark key of one container.
pub fn bookmarks_range(container: ContainerId) -> (Vec<u8>, Vec<u8>) {
    let lo = Enc::new().u8(POINT_BOOKMARK).u32(container.0).finish();
    let hi = prefix_successor(&lo).unwrap_or_else(|| vec![POINT_BOOKMARK + 1]);
    (lo, hi)
}

// ---- meta ------------------------------------------------------------------------------

/// Keys of the `default` family: store-wide singletons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaKey {
    NextVersion,
    NextIno,
    NextBranch,
    NextContainer,
    NextSnapshot,
    StoreCounters,
    /// Chunk-level counters of one container.
    ContainerCounters(ContainerId),
    /// A pack condemned by GC, waiting out its grace period.
    Condemned(PackId),
    /// The outcome of past GC runs.
    GcStatus,
    /// The store's compliance clock (`crate::clock`).
    ComplianceClock,
    /// The replication key shared with another store (by that store's id).
    ReplicaPair(String),
    /// Target side of replication: wire id (under a pair) → the chunk it names here.
    WireChunk {
        pair: u64,
        wire: [u8; 16],
    },
    /// A receive in progress into a replica container (its staging state).
    ReplicaStaging(ContainerId),
    /// A pack whose upload to the remote pack store succeeded (its size and when).
    PackUploaded(PackId),
    /// Pack ids below this were handed out already (remote stores never reuse an id).
    PackFloor,
    /// The last metadata checkpoint uploaded to the remote pack store.
    LastCheckpoint,
}

const K_CONTAINER_COUNTERS: &[u8] = b"counters/c/";
const K_CONDEMNED: &[u8] = b"gc/condemned/";
const K_REPLICA_PAIR: &[u8] = b"replica/pair/";
const K_WIRE_CHUNK: &[u8] = b"replica/wire/";
const K_REPLICA_STAGING: &[u8] = b"replica/staging/";
const K_PACK_UPLOADED: &[u8] = b"remote/uploaded/";

impl MetaKey {
    pub fn encode(self) -> Vec<u8> {
        match self {
            MetaKey::NextVersion => b"next_version".to_vec(),
            MetaKey::NextIno => b"next_ino".to_vec(),
            MetaKey::NextBranch => b"next_branch".to_vec(),
            MetaKey::NextContainer => b"next_container".to_vec(),
            MetaKey::NextSnapshot => b"next_snapshot_id".to_vec(),
            MetaKey::StoreCounters => b"counters/store".to_vec(),
            MetaKey::ContainerCounters(c) => {
                Enc::new().bytes(K_CONTAINER_COUNTERS).u32(c.0).finish()
            }
            MetaKey::Condemned(p) => Enc::new().bytes(K_CONDEMNED).u32(p.0).finish(),
            MetaKey::GcStatus => b"gc/status".to_vec(),
            MetaKey::ComplianceClock => b"clock/compliance".to_vec(),
            MetaKey::ReplicaPair(peer) => Enc::new()
                .bytes(K_REPLICA_PAIR)
                .bytes(peer.as_bytes())
                .finish(),
            MetaKey::WireChunk { pair, wire } => Enc::new()
                .bytes(K_WIRE_CHUNK)
                .u64(pair)
                .bytes(&wire)
                .finish(),
            MetaKey::ReplicaStaging(c) => Enc::new().bytes(K_REPLICA_STAGING).u32(c.0).finish(),
            MetaKey::PackUploaded(p) => Enc::new().bytes(K_PACK_UPLOADED).u32(p.0).finish(),
            MetaKey::PackFloor => b"remote/pack_floor".to_vec(),
            MetaKey::LastCheckpoint => b"remote/last_checkpoint".to_vec(),
        }
    }

    /// Every container-counter key.
    pub fn container_counters_range() -> (Vec<u8>, Vec<u8>) {
        let lo = K_CONTAINER_COUNTERS.to_vec();
        let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff]);
        (lo, hi)
    }

    pub fn container_counters_from(key: &[u8]) -> Result<ContainerId, CodecError> {
        let rest = key
            .strip_prefix(K_CONTAINER_COUNTERS)
            .ok_or_else(|| CodecError::new("counter key", "wrong prefix"))?;
        Ok(ContainerId(u32::from_be_bytes(arr(rest, "counter key")?)))
    }

    /// Every condemned-pack key.
    pub fn condemned_range() -> (Vec<u8>, Vec<u8>) {
        let lo = K_CONDEMNED.to_vec();
        let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff]);
        (lo, hi)
    }

    /// Every uploaded-pack key.
    pub fn pack_uploaded_range() -> (Vec<u8>, Vec<u8>) {
        let lo = K_PACK_UPLOADED.to_vec();
        let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff]);
        (lo, hi)
    }

    pub fn pack_uploaded_from(key: &[u8]) -> Result<PackId, CodecError> {
        let rest = key
            .strip_prefix(K_PACK_UPLOADED)
            .ok_or_else(|| CodecError::new("uploaded pack key", "wrong prefix"))?;
        Ok(PackId(u32::from_be_bytes(arr(rest, "uploaded pack key")?)))
    }

    pub fn condemned_from(key: &[u8]) -> Result<PackId, CodecError> {
        let rest = key
            .strip_prefix(K_CONDEMNED)
            .ok_or_else(|| CodecError::new("condemned pack key", "wrong prefix"))?;
        Ok(PackId(u32::from_be_bytes(arr(rest, "condemned pack key")?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_and_extent_keys_roundtrip() {
        let k = version(BranchId(3), Ino(77), &extent_suffix(5, 4096), Version(9));
        let e = ExtentKey::decode(&k).unwrap();
        assert_eq!(
            (e.branch, e.ino, e.gen, e.offset, e.version),
            (BranchId(3), Ino(77), 5, 4096, Version(9))
        );
        assert_eq!(
            VersionedKey::record_of(&k).unwrap(),
            record(BranchId(3), Ino(77), &extent_suffix(5, 4096)).as_slice()
        );
        // newest first
        assert!(
            version(BranchId(1), Ino(1), b"", Version(9))
                < version(BranchId(1), Ino(1), b"", Version(3))
        );
    }

    #[test]
    fn malformed_keys_are_errors_not_zeros() {
        assert!(VersionedKey::decode(&[0; 23]).is_err());
        assert!(ExtentKey::decode(&version(BranchId(1), Ino(1), b"abc", Version(1))).is_err());
        assert!(chunk_from(&[1; 15]).is_err());
        assert!(container_ref_from(&[1; 19]).is_err());
        assert!(orphan_from(&[1; 17]).is_err());
        assert!(orphan_value_from(&[1; 3]).is_err());
        assert!(decode_u64(&[1; 7], "x").is_err());
        assert!(MetaKey::condemned_from(b"gc/condemned/\x00\x01").is_err());
    }

    #[test]
    fn small_keys_roundtrip() {
        let id = ChunkId(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        assert_eq!(chunk_from(&chunk(id)).unwrap(), id);
        assert_eq!(
            container_ref_from(&container_ref(ContainerId(7), id)).unwrap(),
            (ContainerId(7), id)
        );
        assert_eq!(
            orphan_from(&orphan(BranchId(2), Ino(9))).unwrap(),
            (BranchId(2), Ino(9))
        );
        let t = Timestamp {
            sec: -5,
            nsec: 250_000_000,
        };
        assert_eq!(timeline_from(&timeline(t)).unwrap(), t);
        assert_eq!(
            MetaKey::condemned_from(&MetaKey::Condemned(PackId(42)).encode()).unwrap(),
            PackId(42)
        );
        assert_eq!(
            MetaKey::pack_uploaded_from(&MetaKey::PackUploaded(PackId(7)).encode()).unwrap(),
            PackId(7)
        );
        assert_eq!(
            MetaKey::container_counters_from(&MetaKey::ContainerCounters(ContainerId(5)).encode())
                .unwrap(),
            ContainerId(5)
        );
    }
}
