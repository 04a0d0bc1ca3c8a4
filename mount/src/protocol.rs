//! What the CLI and a daemon say to each other: the versioned envelope of a request and
//! the typed answers both sides share, so the CLI decodes what the daemon encoded with the
//! same definitions instead of picking fields out of untyped JSON.
//!
//! Invariant: a daemon answers a client of another protocol version with an error naming
//! both versions, never with an answer the client might misread; a client that cannot
//! decode an answer says so (a bug or a daemon of another build), never prints defaults.

use crate::ops::{OpError, Request};
use dedupfs_core::containers::ContainerSettings;
use dedupfs_core::reclaim::GcStatus;
use dedupfs_core::stats::{ContainerStats, StoreStats};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped whenever a request or an answer changes shape.
pub const PROTOCOL_VERSION: u32 = 2;

/// One request as sent over the control socket.
#[derive(Serialize, Deserialize, Debug)]
pub struct Envelope {
    /// The sender's [`PROTOCOL_VERSION`] (absent: a client from before versioning).
    #[serde(default)]
    pub protocol: u32,
    /// The sender's dedupfs version, for messages.
    #[serde(default)]
    pub version: String,
    pub request: Request,
}

impl Envelope {
    pub fn new(request: Request) -> Envelope {
        Envelope {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            request,
        }
    }

    /// Reads a request line; a line of another protocol version is refused by name.
    pub fn parse(line: &str) -> Result<Request, OpError> {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| OpError::invalid(format!("bad request: {e}")))?;
        let theirs = v.get("protocol").and_then(|p| p.as_u64()).unwrap_or(1);
        if theirs != u64::from(PROTOCOL_VERSION) {
            let who = v
                .get("version")
                .and_then(|x| x.as_str())
                .map(|x| format!("dedupfs {x}"))
                .unwrap_or_else(|| "an older dedupfs".into());
            return Err(OpError::invalid(format!(
                "this mount's daemon is dedupfs {} (control protocol {PROTOCOL_VERSION}); the \
                 command came from {who} (protocol {theirs}): use the same dedupfs binary for \
                 commands as for the mount, or remount with the new one",
                env!("CARGO_PKG_VERSION")
            )));
        }
        serde_json::from_value::<Envelope>(v)
            .map(|e| e.request)
            .map_err(|e| OpError::invalid(format!("bad request: {e}")))
    }
}

/// `container show`, `container create`, `container set`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ContainerReport {
    pub name: String,
    pub id: u32,
    pub created: i64,
    pub settings: ContainerSettings,
    pub head_branch: u64,
    pub rollbacks: usize,
    pub stats: ContainerStats,
}

/// `container list`: one entry per container.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ContainerEntry {
    pub name: String,
    pub id: u32,
    pub settings: ContainerSettings,
    pub stats: ContainerStats,
}

/// `stats` of the whole store.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StoreReport {
    #[serde(flatten)]
    pub stats: StoreStats,
    pub gc: GcStatus,
}

/// `Ping`: who serves the store and how it is doing (`dedupfs status`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Health {
    pub store: std::path::PathBuf,
    /// The daemon's dedupfs version and control protocol.
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    /// Why the store takes no writes, if a failed sync halted it.
    pub halted: Option<String>,
    /// Bytes written and not yet committed.
    pub buffered_bytes: u64,
    /// Files whose buffered writes a flush could not commit (and why).
    pub unflushed: Vec<String>,
}

/// Decodes an answer into its type, or says why it cannot be read.
pub fn decode<T: DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, OpError> {
    serde_json::from_value(v).map_err(|e| {
        OpError::io(format!(
            "the answer to `{what}` is not what this dedupfs {} expects ({e}); is the store \
             mounted by another dedupfs version?",
            env!("CARGO_PKG_VERSION")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_another_protocol_are_refused_by_name() {
        let line = serde_json::to_string(&Envelope::new(Request::Sync)).unwrap();
        assert!(matches!(Envelope::parse(&line), Ok(Request::Sync)));
        // A client from before the envelope sent the bare request.
        let old = serde_json::to_string(&Request::Sync).unwrap();
        let e = Envelope::parse(&old).unwrap_err();
        assert!(e.message.contains("protocol 1"), "{}", e.message);
        let newer = line.replace(
            &format!("\"protocol\":{PROTOCOL_VERSION}"),
            "\"protocol\":99",
        );
        let e = Envelope::parse(&newer).unwrap_err();
        assert!(e.message.contains("protocol 99"), "{}", e.message);
        assert!(Envelope::parse("not json").is_err());
    }
}
