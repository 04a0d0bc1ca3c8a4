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
    /// A directory the filesystem makes up: `/.at`, `/.at/<container>`, `/.snapshots`.
    Virtual(VirtualDir),
    /// An inode of a tree: a container's live tree (view = container id), a snapshot or a
    /// time-travel view.
    Tree { view: u32, ino: Ino },
}

/// The made-up directories of the mount root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VirtualDir {
    /// `/.at`: one entry per container.
    At,
    /// `/.at/<container>`: any time or bookmark name looks up a read-only view.
    AtContainer(ContainerId),
    /// `/.snapshots`: one entry per snapshot.
    Snapshots,
}

const VIRTUAL_AT: u64 = 2;
const VIRTUAL_SNAPSHOTS: u64 = 3;
const VIRTUAL_AT_CONTAINER: u64 = 1 << 40;

impl NodeRef {
    pub fn decode(node: u64) -> Option<NodeRef> {
        if node == ROOT_NODE {
            return Some(NodeRef::Root);
        }
        let view = node >> VIEW_SHIFT;
        let ino = Ino(node & Ino::MAX);
        if view == 0 {
            return match ino.0 {
                VIRTUAL_AT => Some(NodeRef::Virtual(VirtualDir::At)),
                VIRTUAL_SNAPSHOTS => Some(NodeRef::Virtual(VirtualDir::Snapshots)),
                i if i > VIRTUAL_AT_CONTAINER
                    && i - VIRTUAL_AT_CONTAINER <= crate::containers::MAX_CONTAINERS as u64 =>
                {
                    Some(NodeRef::Virtual(VirtualDir::AtContainer(ContainerId(
                        (i - VIRTUAL_AT_CONTAINER) as u32,
                    ))))
                }
                _ => None,
            };
        }
        if view >= crate::containers::VIEW_LIMIT as u64 {
            return None;
        }
        Some(NodeRef::Tree {
            view: view as u32,
            ino,
        })
    }

    pub fn encode(self) -> u64 {
        match self {
            NodeRef::Root => ROOT_NODE,
            NodeRef::Virtual(VirtualDir::At) => VIRTUAL_AT,
            NodeRef::Virtual(VirtualDir::Snapshots) => VIRTUAL_SNAPSHOTS,
            NodeRef::Virtual(VirtualDir::AtContainer(c)) => VIRTUAL_AT_CONTAINER + c.0 as u64,
            NodeRef::Tree { view, ino } => ((view as u64) << VIEW_SHIFT) | ino.0,
        }
    }
}

/// Who is asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The creator's umask: applied to a new node's mode unless its directory has a
    /// default ACL (the kernel leaves both to us, see `acl`).
    pub umask: u32,
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
    pub fn read_only() -> OpenFlags {
        OpenFlags::from_libc(libc::O_RDONLY)
    }
    pub fn write_only() -> OpenFlags {
        OpenFlags::from_libc(libc::O_WRONLY)
    }
    pub fn read_write() -> OpenFlags {
        OpenFlags::from_libc(libc::O_RDWR)
    }
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
        let n = NodeRef::Tree {
            view: 5,
            ino: Ino(1234),
        };
        assert_eq!(NodeRef::decode(n.encode()), Some(n));
        assert_eq!(NodeRef::decode(1), Some(NodeRef::Root));
        for v in [
            VirtualDir::At,
            VirtualDir::Snapshots,
            VirtualDir::AtContainer(ContainerId(7)),
        ] {
            let n = NodeRef::Virtual(v);
            assert_eq!(NodeRef::decode(n.encode()), Some(n));
        }
        assert_eq!(NodeRef::decode(4), None);
        assert_eq!(NodeRef::decode(1 << 40), None);
    }
}
