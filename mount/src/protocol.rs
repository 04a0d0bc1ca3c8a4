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
pub const PROTOCOL_VERSION: u32 = 4;

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
    /// Set while the container is a read-only replica (what of, how current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<dedupfs_core::containers::ReplicaInfo>,
    /// What it was a replica of before `container promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<dedupfs_core::containers::ReplicaInfo>,
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

/// `rollback`: the library's outcome and how long it took.
#[derive(Serialize, Deserialize, Debug)]
pub struct RollbackAnswer {
    #[serde(flatten)]
    pub outcome: dedupfs_snapshot::rollback::RollbackOutcome,
    pub seconds: f64,
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
    use dedupfs_gc::plan::{Action, ContainerReclaim, PackPlan, Plan};
    use dedupfs_gc::state::Condemned;
    use dedupfs_gc::{fsck, sweep};
    use dedupfs_snapshot::apply::{ApplyReport, Conflict};
    use dedupfs_snapshot::diff::{Change, ChangeKind};
    use dedupfs_snapshot::retention::RetentionReport;
    use dedupfs_snapshot::rollback::RollbackOutcome;

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

    /// Decodes an answer as the CLI does and checks that nothing was lost or defaulted:
    /// re-encoding the decoded value gives the very JSON the daemon sent.
    fn round_trip<T: Serialize + DeserializeOwned>(v: serde_json::Value, what: &str) -> T {
        let t: T = decode(v.clone(), what).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v, "{what}");
        t
    }

    fn change(
        kind: ChangeKind,
        file_type: &'static str,
        ranges: Option<Vec<(u64, u64)>>,
    ) -> Change {
        Change {
            path: "/d/f".into(),
            kind,
            file_type: file_type.into(),
            ranges,
            size_before: 3,
            size_after: 4096,
            attrs: true,
        }
    }

    fn changes() -> Vec<Change> {
        vec![
            change(ChangeKind::Added, "dir", None),
            change(
                ChangeKind::Modified,
                "file",
                Some(vec![(0, 4096), (8192, 8200)]),
            ),
            change(ChangeKind::Modified, "file", Some(vec![])),
            change(ChangeKind::Removed, "symlink", None),
        ]
    }

    #[test]
    fn history_answers_read_back_as_sent() {
        round_trip::<Vec<Change>>(serde_json::to_value(changes()).unwrap(), "snapshot changes");

        let apply = ApplyReport {
            snapshot: "s".into(),
            onto: "c".into(),
            applied: changes(),
            conflicts: vec![Conflict {
                path: "/x".into(),
                reason: "changed in the target too".into(),
            }],
            forced: vec![],
            bytes_copied: 12345,
            target_view: 7,
            touched: vec![(1, b"x".to_vec())],
        };
        let r: ApplyReport = round_trip(serde_json::to_value(&apply).unwrap(), "snapshot apply");
        assert_eq!(r.conflicts.len(), 1);

        for (dry_run, undo) in [(true, None), (false, Some("before-rollback".to_string()))] {
            let outcome = || RollbackOutcome {
                container: "c".into(),
                to: "b1".into(),
                to_version: 42,
                dry_run,
                undo_snapshot: undo.clone(),
                added: 1,
                removed: 2,
                modified: 3,
                changes: changes(),
            };
            // The answer the daemon sent before `RollbackAnswer` existed: the outcome with
            // `seconds` added; the typed answer must encode to exactly that.
            let mut old = serde_json::to_value(outcome()).unwrap();
            old["seconds"] = serde_json::json!(0.25);
            let typed = RollbackAnswer {
                outcome: outcome(),
                seconds: 0.25,
            };
            assert_eq!(serde_json::to_value(&typed).unwrap(), old);
            let a: RollbackAnswer = round_trip(old, "rollback");
            assert_eq!(a.outcome.undo_snapshot, undo);
        }

        for held in [None, Some(4096)] {
            let report = RetentionReport {
                container: "c".into(),
                policy: held.map(|_| "all=24h".to_string()),
                window_start: 1_700_000_000,
                window_start_text: "2023-11-14 22:13:20".into(),
                bookmarks: 2,
                snapshots: 1,
                history_bytes: 10,
                pruned_versions: 3,
                released_extents: 4,
                released_bytes: 5,
                bookmarks_removed: vec!["old".into()],
                history_held_bytes: held,
                store_reclaimable_bytes: 6,
                lock: held.map(|_| dedupfs_core::containers::lock::LockWindow {
                    mode: dedupfs_core::containers::lock::LockMode::Compliance,
                    secs: 86_400,
                    start: 1_700_000_000,
                    floor: 7,
                    clock: 1_700_086_400,
                    oldest_expires: Some(1_700_090_000),
                }),
                held_by_lock: held.map(|_| 9),
            };
            let r: RetentionReport =
                round_trip(serde_json::to_value(&report).unwrap(), "retention show");
            assert_eq!(r.history_held_bytes, held);
        }
    }

    #[test]
    fn maintenance_answers_read_back_as_sent() {
        let plan = Plan {
            packs: vec![
                PackPlan {
                    pack: 1,
                    size: 100,
                    live_bytes: 50,
                    dead_bytes: 30,
                    garbage_bytes: 20,
                    action: Action::Rewrite,
                    reclaim_bytes: 50,
                    note: None,
                },
                PackPlan {
                    pack: 2,
                    size: 10,
                    live_bytes: 0,
                    dead_bytes: 10,
                    garbage_bytes: 0,
                    action: Action::Delete,
                    reclaim_bytes: 10,
                    note: Some("current".into()),
                },
            ],
            containers: vec![ContainerReclaim {
                container: "c".into(),
                id: 1,
                dead_bytes: 40,
                dead_chunks: 2,
            }],
            condemned: vec![Condemned {
                pack: 3,
                since: 1_700_000_000,
                size: 7,
                version: 0,
            }],
            history_held_bytes: 9,
            history_held: vec![("c".into(), 9)],
            ..Default::default()
        };
        let gc = sweep::Report {
            dry_run: false,
            plan,
            waiting: vec![3],
            skipped: vec!["pack 4: busy".into()],
            duration_ms: 1500,
            ..Default::default()
        };
        round_trip::<sweep::Report>(serde_json::to_value(&gc).unwrap(), "gc");

        let mut problem = fsck::Problem::<&'static str> {
            kind: "damaged_data",
            message: "c: /f version 3 offset 0: bad".into(),
            container: Some("c".into()),
            path: None,
            version: Some(3),
            chunk: Some("ab".into()),
            pack: Some(1),
            repaired: false,
        };
        let mut report = fsck::Report {
            scrub: true,
            problems: vec![problem.clone()],
            unrepaired: 1,
            notes: vec!["garbage".into()],
            ..Default::default()
        };
        problem.kind = "refcount_drift";
        problem.repaired = true;
        report.problems.push(problem);
        let r: fsck::Report<String> = round_trip(serde_json::to_value(&report).unwrap(), "fsck");
        assert_eq!(r.problems[1].kind, "refcount_drift");
        assert_eq!(r.unrepaired, 1);
    }
}
