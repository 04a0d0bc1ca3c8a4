//! How a store command fails: [`OpError`], a message and an [`ErrorKind`], which travels
//! over the control socket as it is and decides the CLI's exit code
//! (`CliError::from_op`); and the one mapping of each library's errors onto it.
//!
//! Invariant: the serde shape of both types is part of the control protocol
//! (`protocol::PROTOCOL_VERSION`): a change of it is a protocol change.

use dedupfs_core::containers::ContainerError;
use dedupfs_core::pack::remote::{RemoteError, RemoteErrorKind};
use dedupfs_core::pack::PackError;
use dedupfs_core::store::StoreError;
use serde::{Deserialize, Serialize};

/// Kinds of failure, which decide the CLI's exit code.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Exists,
    Invalid,
    Busy,
    Store,
    Io,
    /// The caller may not do this (another user's store or daemon).
    Denied,
    /// A retention lock refuses it.
    Locked,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn io(message: String) -> OpError {
        OpError {
            kind: ErrorKind::Io,
            message,
        }
    }
    pub fn invalid(message: String) -> OpError {
        OpError {
            kind: ErrorKind::Invalid,
            message,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn remote_kind(r: &RemoteError) -> ErrorKind {
    match r {
        RemoteError::BadUrl { .. } | RemoteError::Config { .. } => ErrorKind::Invalid,
        r => match r.kind() {
            RemoteErrorKind::Auth => ErrorKind::Denied,
            RemoteErrorKind::NoBucket | RemoteErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        },
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::Container(ContainerError::NotFound(_)) => ErrorKind::NotFound,
            StoreError::Container(ContainerError::Exists(_)) => ErrorKind::Exists,
            StoreError::Container(ContainerError::InvalidName { .. })
            | StoreError::Container(ContainerError::BadLock(_)) => ErrorKind::Invalid,
            StoreError::Container(ContainerError::Locked { .. }) => ErrorKind::Locked,
            StoreError::Container(ContainerError::Busy { .. })
            | StoreError::Container(ContainerError::NotEmpty { .. }) => ErrorKind::Busy,
            StoreError::NotFound(_)
            | StoreError::NotAStore(_)
            | StoreError::NewerFormat { .. }
            | StoreError::BadConfig { .. }
            | StoreError::NotEmpty { .. }
            | StoreError::AlreadyAStore { .. }
            | StoreError::BucketTaken { .. }
            | StoreError::Locked { .. } => ErrorKind::Store,
            StoreError::NotPermitted { .. } => ErrorKind::Denied,
            // Object storage: refused credentials are a denial (exit 6), a missing bucket
            // a missing thing (exit 5), a bad URL bad input (exit 2); an outage or
            // throttling stays a failure (exit 1), to be retried.
            StoreError::Pack(PackError::Remote { source, .. }) => remote_kind(source),
            StoreError::Remote(r) => remote_kind(r),
            _ => ErrorKind::Io,
        };
        OpError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<dedupfs_gc::GcError> for OpError {
    fn from(e: dedupfs_gc::GcError) -> Self {
        match e {
            dedupfs_gc::GcError::Store(s) => s.into(),
            dedupfs_gc::GcError::Busy => OpError {
                kind: ErrorKind::Busy,
                message: e.to_string(),
            },
            other => OpError::io(other.to_string()),
        }
    }
}

impl From<dedupfs_core::kv::KvError> for OpError {
    fn from(e: dedupfs_core::kv::KvError) -> Self {
        StoreError::from(e).into()
    }
}

impl From<ContainerError> for OpError {
    fn from(e: ContainerError) -> Self {
        StoreError::from(e).into()
    }
}

/// A history operation's error (bookmarks, snapshots, rollback, retention, apply).
pub fn hist(e: dedupfs_snapshot::HistoryError) -> OpError {
    use dedupfs_snapshot::HistoryError as H;
    let kind = match e {
        H::Store(se) => return se.into(),
        H::Container(ce) => return ce.into(),
        H::NotFound(_) => ErrorKind::NotFound,
        H::Exists(_) => ErrorKind::Exists,
        H::Invalid(_) | H::Point(_) => ErrorKind::Invalid,
        H::Busy(_) => ErrorKind::Busy,
        _ => ErrorKind::Io,
    };
    OpError {
        kind,
        message: e.to_string(),
    }
}
