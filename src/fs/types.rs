//! Values crossing the filesystem API: caller identity, attributes, attribute changes,
//! directory entries and node ids.
//!
//! Node ids are what the kernel calls inode numbers. They are stable across mounts: the
//! mount root is 1; any other node is `view << 44 | ino`, where the view says which tree the
//! inode is read from (a container's live tree has the container id as its view).

use crate::ids::{ContainerId, Ino};
use crate::records::{FileKind, Timestamp};

pub const ROOT_NODE: u64 = 1;
const VIEW_SHIFT: u32 = Ino::BITS;

/// Which tree a node id refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// The mount root, whose entries are the containers.
    Root,
    /// An inode of a container's live tree.
    Live { container: ContainerId, ino: Ino },
}

impl NodeRef {
    pub fn decode(node: u64) -> Option<NodeRef> {
        if node == ROOT_NODE {
            return Some(NodeRef::Root);
        }
        let view = node >> VIEW_SHIFT;
        let ino = Ino(node & Ino::MAX);
        if view == 0 || view > crate::containers::MAX_CONTAINERS as u64 {
            return None;
        }
        Some(NodeRef::Live {
            container: ContainerId(view as u32),
            ino,
        })
    }

    pub fn encode(self) -> u64 {
        match self {
            NodeRef::Root => ROOT_NODE,
            NodeRef::Live { container, ino } => ((container.0 as u64) << VIEW_SHIFT) | ino.0,
        }
    }
}

/// Who is asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Ctx {
    pub fn root() -> Ctx {
        Ctx::default()
    }
}

/// Attributes as `stat` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub node: u64,
    pub kind: FileKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks holding data (holes excluded).
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub btime: Timestamp,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

/// A time to set: the caller's clock "now" or an explicit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// Changes requested by `setattr`; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Timestamp>,
    pub flags: Option<u32>,
}

/// One directory entry delivered by `readdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub node: u64,
    /// Cookie to resume after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// `statfs` figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// `rename` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

/// Flags of `open`/`create` that the core cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub truncate: bool,
    pub direct: bool,
}

impl OpenFlags {
    pub fn from_libc(flags: i32) -> OpenFlags {
        let acc = flags & libc::O_ACCMODE;
        OpenFlags {
            read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            append: flags & libc::O_APPEND != 0,
            truncate: flags & libc::O_TRUNC != 0,
            direct: flags & libc::O_DIRECT != 0,
        }
    }
}

/// `fallocate` modes the core implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallocate {
    /// Mode 0: make the range allocated; extends the size unless `keep_size`.
    Allocate { keep_size: bool },
    /// PUNCH_HOLE (always with KEEP_SIZE).
    PunchHole,
    /// ZERO_RANGE: the range reads as zeros; extends the size unless `keep_size`.
    ZeroRange { keep_size: bool },
}

/// `lseek` whence values the core answers (SEEK_SET/CUR/END are the kernel's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekWhence {
    Data,
    Hole,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn node_ids_roundtrip() {
        let n = NodeRef::Live {
            container: ContainerId(5),
            ino: Ino(1234),
        };
        assert_eq!(NodeRef::decode(n.encode()), Some(n));
        assert_eq!(NodeRef::decode(1), Some(NodeRef::Root));
        assert_eq!(NodeRef::decode(2), None);
        assert_eq!(NodeRef::decode(u64::MAX), None);
    }
}
