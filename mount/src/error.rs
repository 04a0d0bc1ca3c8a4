//! How a command fails: [`CliError`] carries the message the user sees and an
//! [`ExitKind`], which alone decides the exit code.
//!
//! Invariants: the exit codes are part of the CLI's contract (scripts test them), so
//! `ExitKind::code` and `ExitKind::from_code` are inverse on 1..=7 and never renumber;
//! a daemon reports a failed mount to the waiting CLI by code, and the CLI exits with the
//! same code the daemon would have.

use crate::ops::{ErrorKind, OpError};
use dedupfs_core::store::StoreError;

/// Why the command failed, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Failed,
    Usage,
    Store,
    Mount,
    NotFound,
    Denied,
    /// A retention lock refused the change.
    Locked,
}

impl ExitKind {
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Failed => 1,
            ExitKind::Usage => 2,
            ExitKind::Store => 3,
            ExitKind::Mount => 4,
            ExitKind::NotFound => 5,
            ExitKind::Denied => 6,
            ExitKind::Locked => 7,
        }
    }
    pub fn from_code(c: i32) -> ExitKind {
        match c {
            2 => ExitKind::Usage,
            3 => ExitKind::Store,
            4 => ExitKind::Mount,
            5 => ExitKind::NotFound,
            6 => ExitKind::Denied,
            7 => ExitKind::Locked,
            _ => ExitKind::Failed,
        }
    }
}

#[derive(Debug)]
pub struct CliError {
    pub kind: ExitKind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: ExitKind, message: String) -> CliError {
        CliError { kind, message }
    }
    pub fn usage(message: String) -> CliError {
        CliError::new(ExitKind::Usage, message)
    }
    pub fn from_store(e: StoreError) -> CliError {
        CliError::from_op(OpError::from(e))
    }
    pub fn from_op(e: OpError) -> CliError {
        let kind = match e.kind {
            ErrorKind::NotFound => ExitKind::NotFound,
            ErrorKind::Invalid => ExitKind::Usage,
            ErrorKind::Store => ExitKind::Store,
            ErrorKind::Denied => ExitKind::Denied,
            ErrorKind::Locked => ExitKind::Locked,
            ErrorKind::Exists | ErrorKind::Busy | ErrorKind::Io => ExitKind::Failed,
        };
        CliError::new(kind, e.message)
    }
}
