//! The filesystem core's error type.
//!
//! Every failure of a filesystem operation is one of these variants, named for what went
//! wrong rather than for an errno; the FUSE adapter maps each to exactly one errno in one
//! exhaustive match. Lower layers' errors convert here: "no space" stays distinct, damaged
//! data becomes [`FsError::Corrupt`] (logged with the chunk and pack where it is detected),
//! anything else from the disk is [`FsError::Io`].

use crate::chunks::ChunkError;
use crate::containers::ContainerError;
use crate::kv::KvError;
use crate::pack::PackError;
use crate::store::StoreError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("read-only")]
    ReadOnly,
    #[error("no space left on device")]
    NoSpace,
    #[error("cross-container link or rename")]
    CrossDevice,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small")]
    Range,
    #[error("value too large")]
    TooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    FileTooLarge,
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    #[error("busy: {0}")]
    Busy(String),
    #[error("bad file handle")]
    BadHandle,
    #[error("stale file handle")]
    Stale,
    #[error("no data or hole beyond this offset")]
    OutOfRange,
    #[error("I/O error: {0}")]
    Io(String),
    #[error("damaged data: {0}")]
    Corrupt(String),
}

impl FsError {
    /// The kind this failure counts as in `dedupfs_errors_total{kind}`, if it is one an
    /// admin alerts on (a missing name or a full directory is an answer, not a fault).
    pub fn metric_kind(&self) -> Option<crate::metrics::ErrorKind> {
        use crate::metrics::ErrorKind as K;
        match self {
            FsError::Corrupt(_) => Some(K::Corrupt),
            FsError::Io(_) => Some(K::Io),
            FsError::NoSpace => Some(K::NoSpace),
            FsError::Stale => Some(K::Stale),
            _ => None,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

impl From<KvError> for FsError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NoSpace(_) => FsError::NoSpace,
            KvError::Corrupt(m) => FsError::Corrupt(m),
            other => FsError::Io(other.to_string()),
        }
    }
}

impl From<PackError> for FsError {
    fn from(e: PackError) -> Self {
        match e {
            PackError::NoSpace { .. } => FsError::NoSpace,
            PackError::Corrupt { .. } | PackError::Missing { .. } => {
                FsError::Corrupt(e.to_string())
            }
            PackError::Remote { ref source, .. }
                if source.kind() == crate::pack::remote::RemoteErrorKind::NotFound =>
            {
                FsError::Corrupt(e.to_string())
            }
            // An outage, refused credentials, a throttled server, a backlog that did not
            // drain in time: the operation failed, the store is intact (EIO).
            PackError::Io { .. }
            | PackError::SyncFailed { .. }
            | PackError::Remote { .. }
            | PackError::Backlog { .. }
            | PackError::Meta(_) => FsError::Io(e.to_string()),
        }
    }
}

impl From<ChunkError> for FsError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Pack(p) => p.into(),
            ChunkError::Kv(k) => k.into(),
            other => FsError::Corrupt(other.to_string()),
        }
    }
}

impl From<crate::codec::CodecError> for FsError {
    fn from(e: crate::codec::CodecError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}

impl From<ContainerError> for FsError {
    fn from(e: ContainerError) -> Self {
        match e {
            ContainerError::NotFound(_) => FsError::NotFound,
            ContainerError::Exists(_) => FsError::Exists,
            ContainerError::InvalidName { .. } => FsError::Invalid("invalid container name"),
            ContainerError::Busy { reason, .. } => FsError::Busy(reason),
            ContainerError::NotEmpty { .. } => FsError::NotEmpty,
            ContainerError::TooMany(_) => FsError::NoSpace,
            ContainerError::Kv(k) => k.into(),
            ContainerError::Chunk(c) => c.into(),
            ContainerError::BadRecord(a, b) => FsError::Corrupt(format!("{a}: {b}")),
            ContainerError::Locked { name, message } => {
                // The caller sees EPERM; the log says which lock and why.
                log::warn!("container '{name}': {message}");
                FsError::NotPermitted("retention lock")
            }
            ContainerError::BadLock(_) => FsError::Invalid("invalid retention lock"),
        }
    }
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Pack(p) => p.into(),
            StoreError::Meta { source, .. } => source.into(),
            StoreError::Chunk(c) => c.into(),
            StoreError::Container(c) => c.into(),
            other => FsError::Io(other.to_string()),
        }
    }
}
