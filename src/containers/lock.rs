//! Retention locks: history of a container that nobody can prune, roll away or delete
//! before its time.
//!
//! A lock ([`RetentionLock`], a container setting) makes every state of the container
//! younger than its duration immutable, measured by the store's compliance clock
//! ([`crate::clock`]): the *window* starts at `compliance now − duration`, and the newest
//! version committed at or before that moment (the window's *floor*) and every version
//! after it stay readable. This module owns the rules; the operations that could remove
//! such history ask it first:
//! - retention pruning never cuts above the floor (`snapshot::retention`), and the core's
//!   pruning refuses a batch that would ([`crate::history`]);
//! - deleting the container, deleting a snapshot or bookmark inside the window, removing or
//!   shortening the lock, weakening compliance to governance, and a retention change that
//!   keeps less are refused ([`ContainerError::Locked`]);
//! - in governance mode, [`Authority::BypassGovernance`] allows them; only the binary's
//!   front end makes one, after checking the caller is root on this machine. Compliance
//!   mode has no bypass.
//!
//! Writes to the live tree are never refused: backup software must rotate its files, and
//! what it deletes stays in the locked history.

use super::{ContainerError, ContainerRecord, ContainerSettings};
use crate::ids::Version;
use crate::kv::KvError;
use crate::points::format_time;
use crate::records::Timestamp;
use crate::store::Store;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// Root on this machine may shorten or remove it (`--bypass-governance`).
    Governance,
    /// Nobody may shorten or remove it.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// A container's retention lock (stored in its settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionLock {
    pub mode: LockMode,
    /// How long every state stays immutable, in seconds.
    pub secs: i64,
    /// When the lock was last set or changed (compliance clock, seconds since the epoch).
    pub since: i64,
}

/// Who asks for a change a lock guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// Anyone allowed to run store commands (and every request from the mount).
    Normal,
    /// Root on this machine with `--bypass-governance`: may do what a governance lock
    /// guards. Made only by the CLI front end after it checked the caller's uid.
    BypassGovernance,
}

/// The locked part of a container's history, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWindow {
    pub mode: LockMode,
    pub secs: i64,
    /// The window's start: compliance now − duration (seconds since the epoch).
    pub start: i64,
    /// The newest version committed at or before `start` (0: none). It and every newer
    /// version are locked.
    pub floor: u64,
    /// The compliance clock when this was computed.
    pub clock: i64,
    /// When the oldest locked state leaves the window (compliance clock): the first commit
    /// after the window's start plus the duration. `None`: nothing changed since the
    /// start, so the oldest locked state is the live one.
    pub oldest_expires: Option<i64>,
}

impl LockWindow {
    /// Whether `v` is inside the window (strictly newer than the state at its start).
    pub fn holds(&self, v: Version) -> bool {
        v.0 > self.floor
    }
    /// The version retention may not cut above: pruning keeps every version `>=` this.
    pub fn cutoff(&self) -> Version {
        Version(self.floor + 1)
    }
    fn describe(&self) -> String {
        format!(
            "a {} retention lock of {} keeps every state since {} (compliance clock {})",
            self.mode.as_str(),
            duration_text(self.secs),
            format_time(self.start),
            format_time(self.clock)
        )
    }
}

/// A lock duration: `30d`, `12w`, `7y` (365 days), `36h`…
pub fn parse_duration(s: &str) -> Option<i64> {
    let t = s.trim();
    let year = ["years", "year", "y"]
        .iter()
        .find_map(|u| t.strip_suffix(u))
        .and_then(|n| n.trim().parse::<i64>().ok());
    let secs = match year {
        Some(n) => n.checked_mul(365 * 86_400)?,
        None => crate::points::parse_duration(t)?,
    };
    (secs > 0).then_some(secs)
}

/// A duration as a person reads it: `30 days`, `36 hours`, `90 s`.
pub fn duration_text(secs: i64) -> String {
    match secs {
        s if s % (365 * 86_400) == 0 => plural(s / (365 * 86_400), "year"),
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The container's lock window now, if it is locked.
pub fn window(store: &Store, rec: &ContainerRecord) -> Result<Option<LockWindow>, KvError> {
    let Some(lock) = rec.settings.lock else {
        return Ok(None);
    };
    let now = store.committer.clock().now();
    let start = Timestamp {
        sec: now.sec.saturating_sub(lock.secs),
        nsec: now.nsec,
    };
    let floor = store.committer.version_at(start)?.map(|v| v.0).unwrap_or(0);
    let next = store.committer.first_commit_after(start)?;
    Ok(Some(LockWindow {
        mode: lock.mode,
        secs: lock.secs,
        start: start.sec,
        floor,
        clock: now.sec,
        oldest_expires: next.map(|t| t.sec.saturating_add(lock.secs)),
    }))
}

fn refuse(rec: &ContainerRecord, w: &LockWindow, what: &str) -> ContainerError {
    let how = match w.mode {
        LockMode::Governance => format!(
            "; root may override a governance lock with --bypass-governance, or remove it \
             first (`dedupfs container set {} --lock none --bypass-governance`)",
            rec.name
        ),
        LockMode::Compliance => "; a compliance lock has no override".to_string(),
    };
    ContainerError::Locked {
        name: rec.name.clone(),
        message: format!("{what} is refused: {}{how}", w.describe()),
    }
}

/// Refuses `what` unless the authority may override the lock (governance + bypass).
fn guard(
    rec: &ContainerRecord,
    w: &LockWindow,
    who: Authority,
    what: &str,
) -> Result<(), ContainerError> {
    match (w.mode, who) {
        (LockMode::Governance, Authority::BypassGovernance) => {
            log::warn!(
                "container '{}': {what} allowed by --bypass-governance ({})",
                rec.name,
                w.describe()
            );
            Ok(())
        }
        _ => Err(refuse(rec, w, what)),
    }
}

/// May the container be deleted?
pub fn check_delete(
    store: &Store,
    rec: &ContainerRecord,
    who: Authority,
) -> Result<(), ContainerError> {
    match window(store, rec)? {
        None => Ok(()),
        Some(w) => guard(rec, &w, who, "deleting the container"),
    }
}

/// May a point of the container (snapshot, bookmark) be deleted? `newest` is the newest
/// version the point shows or holds.
pub fn check_point_delete(
    store: &Store,
    rec: &ContainerRecord,
    what: &str,
    newest: Version,
    who: Authority,
) -> Result<(), ContainerError> {
    match window(store, rec)? {
        Some(w) if w.holds(newest) => guard(rec, &w, who, &format!("deleting {what}")),
        _ => Ok(()),
    }
}

/// May the settings change from `old` to `new`? `keeps_less` says why the new retention
/// policy keeps less than the old one, if it does (the policy syntax belongs to the
/// snapshot crate, which decides this).
pub fn check_settings(
    store: &Store,
    rec: &ContainerRecord,
    new: &ContainerSettings,
    keeps_less: Option<String>,
    who: Authority,
) -> Result<(), ContainerError> {
    if let Some(l) = new.lock {
        if l.secs <= 0 {
            return Err(ContainerError::BadLock(
                "the lock duration must be positive".into(),
            ));
        }
    }
    let Some(w) = window(store, rec)? else {
        return Ok(());
    };
    match new.lock {
        None => guard(rec, &w, who, "removing the lock")?,
        Some(n) => {
            if w.mode == LockMode::Compliance && n.mode == LockMode::Governance {
                return Err(refuse(rec, &w, "changing a compliance lock to governance"));
            }
            if n.secs < w.secs {
                guard(
                    rec,
                    &w,
                    who,
                    &format!("shortening the lock to {}", duration_text(n.secs)),
                )?;
            }
        }
    }
    if let Some(why) = keeps_less {
        guard(
            rec,
            &w,
            who,
            &format!("a retention policy that keeps less ({why})"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_years_and_read_back() {
        assert_eq!(parse_duration("7y"), Some(7 * 365 * 86_400));
        assert_eq!(parse_duration("1 year"), Some(365 * 86_400));
        assert_eq!(parse_duration("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration("36h"), Some(36 * 3600));
        for bad in ["", "0d", "d", "soon", "-1d", "1.5d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(duration_text(30 * 86_400), "30 days");
        assert_eq!(duration_text(365 * 86_400), "1 year");
        assert_eq!(duration_text(36 * 3600), "36 hours");
        assert_eq!(duration_text(90), "90 seconds");
    }
}
