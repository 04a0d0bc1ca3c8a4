//! Record layouts of the filesystem metadata: inodes, directory entries, extents, chunk
//! index entries.
//!
//! Owns how each record is encoded into the value of its versioned key (see [`crate::mvcc`]).
//! Every value starts with a layout byte; decoders reject anything else as corruption.

use crate::codec::{CodecError, Dec, Enc};
use crate::ids::{ChunkId, Ino, PackId};

const INODE_LAYOUT: u8 = 1;
const DIRENT_LAYOUT: u8 = 1;
const EXTENT_LAYOUT: u8 = 1;
/// Layout 2 (store format 3) adds the frame slot; layout 1 entries still decode.
const CHUNK_LAYOUT: u8 = 2;
const TREE_COUNTERS_LAYOUT: u8 = 1;

/// File types, with the numbering of `st_mode >> 12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Fifo,
    CharDevice,
    Directory,
    BlockDevice,
    RegularFile,
    Symlink,
    Socket,
}

impl FileKind {
    pub fn to_u8(self) -> u8 {
        match self {
            FileKind::Fifo => 1,
            FileKind::CharDevice => 2,
            FileKind::Directory => 4,
            FileKind::BlockDevice => 6,
            FileKind::RegularFile => 8,
            FileKind::Symlink => 10,
            FileKind::Socket => 12,
        }
    }
    pub fn from_u8(v: u8) -> Option<FileKind> {
        Some(match v {
            1 => FileKind::Fifo,
            2 => FileKind::CharDevice,
            4 => FileKind::Directory,
            6 => FileKind::BlockDevice,
            8 => FileKind::RegularFile,
            10 => FileKind::Symlink,
            12 => FileKind::Socket,
            _ => return None,
        })
    }
    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        FileKind::from_u8(((mode >> 12) & 0xf) as u8)
    }
    pub fn mode_bits(self) -> u32 {
        (self.to_u8() as u32) << 12
    }
}

/// A point in time: seconds and nanoseconds since the epoch (seconds may be negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }
    /// `CLOCK_REALTIME_COARSE`: the clock the kernel stamps inodes with (last tick).
    pub fn now_coarse() -> Timestamp {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes the timespec we pass, which outlives the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
            return Timestamp::now();
        }
        Timestamp {
            sec: ts.tv_sec,
            nsec: ts.tv_nsec as u32,
        }
    }
    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Timestamp {
                        sec: -(d.as_secs() as i64),
                        nsec: 0,
                    }
                } else {
                    Timestamp {
                        sec: -(d.as_secs() as i64) - 1,
                        nsec: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }
    pub fn to_system(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        if self.sec >= 0 {
            base + std::time::Duration::new(self.sec as u64, self.nsec)
        } else {
            base - std::time::Duration::from_secs(self.sec.unsigned_abs())
                + std::time::Duration::from_nanos(self.nsec as u64)
        }
    }
    pub fn as_nanos(self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }
}

/// Attributes of one inode. For directories `size` counts entries; for symlinks `target`
/// holds the link text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRec {
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub btime: Timestamp,
    pub rdev: u32,
    /// For directories: the parent directory (for `..`); 0 otherwise.
    pub parent: Ino,
    /// For regular files: the generation of the extent set (changes on truncate to zero, so
    /// that truncation does not rewrite every extent).
    pub data_gen: u64,
    /// Bytes of the file that are not holes (drives `st_blocks`).
    pub data_bytes: u64,
    /// Inode flags (`FS_IOC_GETFLAGS` style).
    pub flags: u32,
    /// Number of extended attributes (so that asking for one on a file without any — the
    /// kernel does on every write — costs no lookup).
    pub xattrs: u32,
    pub target: Vec<u8>,
}

impl InodeRec {
    pub fn encode(&self) -> Vec<u8> {
        Enc::with_capacity(128 + self.target.len())
            .u8(INODE_LAYOUT)
            .u8(self.kind.to_u8())
            .u16(self.perm)
            .u32(self.uid)
            .u32(self.gid)
            .u32(self.nlink)
            .u64(self.size)
            .i64(self.atime.sec)
            .u32(self.atime.nsec)
            .i64(self.mtime.sec)
            .u32(self.mtime.nsec)
            .i64(self.ctime.sec)
            .u32(self.ctime.nsec)
            .i64(self.btime.sec)
            .u32(self.btime.nsec)
            .u32(self.rdev)
            .u64(self.parent.0)
            .u64(self.data_gen)
            .u64(self.data_bytes)
            .u32(self.flags)
            .u32(self.xattrs)
            .blob(&self.target)
            .finish()
    }

    pub fn decode(b: &[u8]) -> Result<InodeRec, CodecError> {
        let mut d = Dec::new(b, "inode record");
        d.layout(INODE_LAYOUT)?;
        let k = d.u8()?;
        let kind = FileKind::from_u8(k)
            .ok_or_else(|| CodecError::new("inode record", format!("file kind {k}")))?;
        let ts = |d: &mut Dec<'_>| -> Result<Timestamp, CodecError> {
            Ok(Timestamp {
                sec: d.i64()?,
                nsec: d.u32()?,
            })
        };
        let perm = d.u16()?;
        let uid = d.u32()?;
        let gid = d.u32()?;
        let nlink = d.u32()?;
        let size = d.u64()?;
        let atime = ts(&mut d)?;
        let mtime = ts(&mut d)?;
        let ctime = ts(&mut d)?;
        let btime = ts(&mut d)?;
        let r = InodeRec {
            kind,
            perm,
            uid,
            gid,
            nlink,
            size,
            atime,
            mtime,
            ctime,
            btime,
            rdev: d.u32()?,
            parent: Ino(d.u64()?),
            data_gen: d.u64()?,
            data_bytes: d.u64()?,
            flags: d.u32()?,
            xattrs: d.u32()?,
            target: d.blob()?.to_vec(),
        };
        d.end()?;
        Ok(r)
    }
}

/// A directory entry: the child inode and its type (for `readdir` without a lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirentRec {
    pub ino: Ino,
    pub kind: FileKind,
}

impl DirentRec {
    pub fn encode(&self) -> Vec<u8> {
        Enc::with_capacity(10)
            .u8(DIRENT_LAYOUT)
            .u64(self.ino.0)
            .u8(self.kind.to_u8())
            .finish()
    }
    pub fn decode(b: &[u8]) -> Result<DirentRec, CodecError> {
        let mut d = Dec::new(b, "directory entry");
        d.layout(DIRENT_LAYOUT)?;
        let ino = Ino(d.u64()?);
        let k = d.u8()?;
        let kind = FileKind::from_u8(k)
            .ok_or_else(|| CodecError::new("directory entry", format!("file kind {k}")))?;
        d.end()?;
        Ok(DirentRec { ino, kind })
    }
}

/// Extent flag: the extent's end was cut because the file ended there, not at a content
/// boundary; an append re-chunks from the extent's start.
pub const EXTENT_TAIL: u8 = 1;

/// A run of file bytes stored in (part of) one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentRec {
    pub len: u32,
    pub chunk: ChunkId,
    /// Offset of the run inside the chunk's uncompressed bytes.
    pub chunk_off: u32,
    pub flags: u8,
}

impl ExtentRec {
    pub fn encode(&self) -> Vec<u8> {
        Enc::with_capacity(26)
            .u8(EXTENT_LAYOUT)
            .u32(self.len)
            .u128(self.chunk.0)
            .u32(self.chunk_off)
            .u8(self.flags)
            .finish()
    }
    pub fn decode(b: &[u8]) -> Result<ExtentRec, CodecError> {
        let mut d = Dec::new(b, "extent");
        d.layout(EXTENT_LAYOUT)?;
        let r = ExtentRec {
            len: d.u32()?,
            chunk: ChunkId(d.u128()?),
            chunk_off: d.u32()?,
            flags: d.u8()?,
        };
        d.end()?;
        Ok(r)
    }
}

/// Chunk payload encodings in packs.
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;
/// A compression frame: several chunks stored first one after another, compressed together
/// as one record (see [`crate::frame`]). The record header names the first of them.
pub const COMPRESSION_FRAME: u8 = 2;

/// Where a chunk sits in a compression frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSlot {
    /// Offset of the chunk's bytes in the frame's decompressed content.
    pub at: u32,
    /// The pack bytes charged to this chunk: the frame record (header and payload) shared
    /// out over its chunks in proportion to their raw sizes. The shares of one frame add up
    /// to the record's size exactly, so pack and store tallies stay exact.
    pub share: u32,
}

/// Where a chunk lives and how many extent records reference it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRec {
    pub pack: PackId,
    /// Offset of the chunk's record header in the pack (of its frame's record, if framed).
    pub offset: u64,
    /// Payload bytes of that record in the pack (after compression), excluding the record
    /// header; for a framed chunk, the whole frame's payload.
    pub stored_len: u32,
    pub raw_len: u32,
    pub compression: u8,
    /// Extent records (of any version still kept) that reference this chunk.
    pub refs: u64,
    /// The container whose write stored the chunk first.
    pub owner: u32,
    /// The chunk (and its length) that followed this one when it was first stored. Backups
    /// repeat long runs of chunks; a writer that just matched this chunk checks whether the
    /// next bytes are that successor before cutting them itself.
    pub next: Option<(ChunkId, u32)>,
    /// Set when the chunk is stored in a compression frame (`compression` is then
    /// [`COMPRESSION_FRAME`]).
    pub frame: Option<FrameSlot>,
}

impl ChunkRec {
    /// The pack bytes this chunk accounts for: its record, or its share of its frame's.
    pub fn disk_bytes(&self) -> u64 {
        match self.frame {
            Some(f) => f.share as u64,
            None => crate::pack::RECORD_HEADER_LEN + self.stored_len as u64,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        Enc::with_capacity(32)
            .u8(CHUNK_LAYOUT)
            .u32(self.pack.0)
            .u64(self.offset)
            .u32(self.stored_len)
            .u32(self.raw_len)
            .u8(self.compression)
            .u64(self.refs)
            .u32(self.owner)
            .u8(self.next.is_some() as u8)
            .u128(self.next.map(|n| n.0 .0).unwrap_or(0))
            .u32(self.next.map(|n| n.1).unwrap_or(0))
            .u8(self.frame.is_some() as u8)
            .u32(self.frame.map(|f| f.at).unwrap_or(0))
            .u32(self.frame.map(|f| f.share).unwrap_or(0))
            .finish()
    }
    pub fn decode(b: &[u8]) -> Result<ChunkRec, CodecError> {
        let mut d = Dec::new(b, "chunk index entry");
        let layout = d.u8()?;
        if layout != 1 && layout != CHUNK_LAYOUT {
            return Err(CodecError::new(
                "chunk index entry",
                format!("layout version {layout}, expected 1 or {CHUNK_LAYOUT}"),
            ));
        }
        let mut r = ChunkRec {
            pack: PackId(d.u32()?),
            offset: d.u64()?,
            stored_len: d.u32()?,
            raw_len: d.u32()?,
            compression: d.u8()?,
            refs: d.u64()?,
            owner: d.u32()?,
            next: {
                let has = d.u8()? != 0;
                let id = ChunkId(d.u128()?);
                let len = d.u32()?;
                has.then_some((id, len))
            },
            frame: None,
        };
        if layout == CHUNK_LAYOUT {
            let has = d.u8()? != 0;
            let at = d.u32()?;
            let share = d.u32()?;
            r.frame = has.then_some(FrameSlot { at, share });
        }
        if (r.compression == COMPRESSION_FRAME) != r.frame.is_some() {
            return Err(CodecError::new(
                "chunk index entry",
                format!(
                    "encoding {} {} a frame slot",
                    r.compression,
                    if r.frame.is_some() { "with" } else { "without" }
                ),
            ));
        }
        d.end()?;
        Ok(r)
    }
}

/// What a tree holds: its live regular files (each inode once, however many links) and the
/// sum of their sizes. Kept per branch as a versioned record, so a tree read as of any
/// version — a rollback's target, a snapshot's base — has its counts as of then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeCounters {
    pub files: u64,
    pub logical_bytes: u64,
}

impl TreeCounters {
    pub fn encode(&self) -> Vec<u8> {
        Enc::with_capacity(17)
            .u8(TREE_COUNTERS_LAYOUT)
            .u64(self.files)
            .u64(self.logical_bytes)
            .finish()
    }
    pub fn decode(b: &[u8]) -> Result<TreeCounters, CodecError> {
        let mut d = Dec::new(b, "tree counters");
        d.layout(TREE_COUNTERS_LAYOUT)?;
        let r = TreeCounters {
            files: d.u64()?,
            logical_bytes: d.u64()?,
        };
        d.end()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_roundtrip() {
        let r = InodeRec {
            kind: FileKind::Symlink,
            perm: 0o4755,
            uid: 1,
            gid: 2,
            nlink: 3,
            size: 1 << 40,
            atime: Timestamp { sec: -5, nsec: 7 },
            mtime: Timestamp {
                sec: 1 << 40,
                nsec: 999_999_999,
            },
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
            rdev: 9,
            parent: Ino(4),
            data_gen: 11,
            data_bytes: 12,
            flags: 0,
            xattrs: 2,
            target: b"/some/where".to_vec(),
        };
        assert_eq!(InodeRec::decode(&r.encode()).unwrap(), r);
        let mut bad = r.encode();
        bad.truncate(20);
        assert!(InodeRec::decode(&bad).is_err());
    }

    #[test]
    fn timestamps_before_epoch() {
        let t = Timestamp { sec: -2, nsec: 500 };
        assert_eq!(Timestamp::from_system(t.to_system()), t);
    }

    #[test]
    fn extent_and_chunk_roundtrip() {
        let e = ExtentRec {
            len: 5,
            chunk: ChunkId(77),
            chunk_off: 3,
            flags: EXTENT_TAIL,
        };
        assert_eq!(ExtentRec::decode(&e.encode()).unwrap(), e);
        let c = ChunkRec {
            pack: PackId(1),
            offset: 2,
            stored_len: 3,
            raw_len: 4,
            compression: 1,
            refs: 5,
            owner: 6,
            next: Some((ChunkId(9), 10)),
            frame: None,
        };
        assert_eq!(ChunkRec::decode(&c.encode()).unwrap(), c);
        let c2 = ChunkRec { next: None, ..c };
        assert_eq!(ChunkRec::decode(&c2.encode()).unwrap(), c2);
        let c3 = ChunkRec {
            compression: COMPRESSION_FRAME,
            frame: Some(FrameSlot { at: 7, share: 99 }),
            ..c
        };
        assert_eq!(ChunkRec::decode(&c3.encode()).unwrap(), c3);
        assert_eq!(c3.disk_bytes(), 99);
        // A frame encoding without a slot (or the reverse) is corruption, not a default.
        let bad = ChunkRec { frame: None, ..c3 };
        assert!(ChunkRec::decode(&bad.encode()).is_err());
        // Entries written by format 2 (layout 1, no slot) still decode.
        let mut v1 = c.encode();
        v1[0] = 1;
        v1.truncate(v1.len() - 9);
        assert_eq!(ChunkRec::decode(&v1).unwrap(), c);
        let t = TreeCounters {
            files: 3,
            logical_bytes: 1 << 40,
        };
        assert_eq!(TreeCounters::decode(&t.encode()).unwrap(), t);
    }
}
