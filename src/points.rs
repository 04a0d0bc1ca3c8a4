//! Points in a container's history, as users name them: a time ("2026-11-22 09:30:00",
//! "@1795000000", "-15m", "2h ago", "now"), a bookmark, or a snapshot.
//!
//! Owns parsing of time expressions and their resolution to a store version through the
//! timeline. Resolution is exact to the millisecond: "as of T" is the newest version
//! committed at or before T.
//!
//! Invariant: a resolved point never lies before the container existed or, for times,
//! below the container's retention floor (history there may be pruned); such requests are
//! refused with an error that says which window is available.

use crate::containers::{self, ContainerError, ContainerRecord};
use crate::ids::{BranchId, ContainerId, Version};
use crate::records::Timestamp;
use crate::store::Store;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PointError {
    #[error(
        "'{0}' is not a time, bookmark or snapshot (times: 'YYYY-MM-DD HH:MM[:SS]', \
         '@EPOCH_SECONDS', '-15m', '2h ago', 'now')"
    )]
    Unrecognised(String),
    #[error("container '{container}' did not exist at {when}")]
    BeforeCreation { container: String, when: String },
    /// A time after now: nothing can be read or rolled back to there yet (a typo of the
    /// year would otherwise roll back to the newest state and record it as that time).
    #[error("{when} is in the future (now is {now})")]
    Future { when: String, now: String },
    #[error(
        "{when} is outside the retention window of container '{container}' \
         (history is available from {floor})"
    )]
    Pruned {
        container: String,
        when: String,
        floor: String,
    },
    #[error("snapshot '{snapshot}' belongs to container '{owner}', not '{container}'")]
    OtherContainer {
        snapshot: String,
        owner: String,
        container: String,
    },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
}

/// A resolved point: the tree `(branch, version)` shows the container as it was then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub branch: BranchId,
    pub version: Version,
    /// When (seconds since the epoch).
    pub time: i64,
    /// How the user named it, for messages and records.
    pub label: String,
    /// What kind of name it was.
    pub kind: PointKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    Time,
    Bookmark,
    Snapshot,
}

/// Formats seconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(sec: i64) -> String {
    let days = sec.div_euclid(86_400);
    let rem = sec.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Formats seconds since the epoch in the local time zone with its offset, as
/// `YYYY-MM-DD HH:MM:SS+HH:MM` — a form `parse_time` reads back to the same instant.
pub fn format_local(sec: i64) -> String {
    let off = local_offset(sec);
    let local = sec + off;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let rem = local.rem_euclid(86_400);
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{sign}{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        off.abs() / 3600,
        off.abs() % 3600 / 60
    )
}

/// Rewrites a time expression as the instant it means here and now (`@SECONDS.NANOS`);
/// anything that is not a time (a bookmark or snapshot name) is returned unchanged.
/// The CLI calls this before sending a request, so a local time or `-15m` means the
/// caller's zone and clock, not the daemon's.
pub fn to_instant(spec: &str, now: Timestamp) -> String {
    match parse_time(spec, now) {
        Some(t) => format!("@{}.{:09}", t.sec, t.nsec),
        None => spec.to_string(),
    }
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The local time zone's offset from UTC, in seconds, at the given UTC moment.
fn local_offset(at: i64) -> i64 {
    let t: libc::time_t = at as libc::time_t;
    // SAFETY: localtime_r only writes into the zeroed `tm` we own; `t` lives for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

/// Parses a duration such as `15m`, `2h`, `90s`, `3d`, `1w` into seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let mul = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Parses a time expression relative to `now`.
pub fn parse_time(s: &str, now: Timestamp) -> Option<Timestamp> {
    let s = s.trim();
    if s == "now" {
        return Some(now);
    }
    if let Some(epoch) = s.strip_prefix('@') {
        let (sec, frac) = epoch.split_once('.').unwrap_or((epoch, ""));
        let sec: i64 = sec.parse().ok()?;
        let nsec = parse_frac(frac)?;
        return Some(Timestamp { sec, nsec });
    }
    if let Some(d) = s.strip_prefix('-').and_then(parse_duration) {
        return Some(Timestamp {
            sec: now.sec - d,
            nsec: now.nsec,
        });
    }
    if let Some(d) = s.strip_suffix("ago").and_then(parse_duration) {
        return Some(Timestamp {
            sec: now.sec - d,
            nsec: now.nsec,
        });
    }
    parse_datetime(s)
}

fn parse_frac(frac: &str) -> Option<u32> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u32 = frac.parse().ok()?;
    for _ in frac.len()..9 {
        n *= 10;
    }
    Some(n)
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space and `HH:MM[:SS[.frac]]`, optionally
/// followed by `Z` or `±HH:MM`. Without a zone the time is local.
fn parse_datetime(s: &str) -> Option<Timestamp> {
    let (date, rest) = if s.len() > 10 {
        (&s[..10], &s[10..])
    } else {
        (s, "")
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || date.len() != 10 || !(1..=12).contains(&mo) || !(1..=31).contains(&d)
    {
        return None;
    }
    let rest = rest.strip_prefix(['T', ' ', '_']).unwrap_or(rest);
    let (clock, zone) = match rest.find(['Z', 'z', '+']).or_else(|| rest.rfind('-')) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (mut h, mut mi, mut sec, mut nsec) = (0u32, 0u32, 0u32, 0u32);
    if !clock.is_empty() {
        let mut cp = clock.split(':');
        h = cp.next()?.parse().ok()?;
        mi = cp.next()?.parse().ok()?;
        if let Some(sp) = cp.next() {
            let (sp, frac) = sp.split_once('.').unwrap_or((sp, ""));
            sec = sp.parse().ok()?;
            nsec = parse_frac(frac)?;
        }
        if cp.next().is_some() || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
    } else if !rest.is_empty() && zone.is_none() {
        return None;
    }
    let naive = days_from_civil(y, mo, d) * 86_400 + (h * 3600 + mi * 60 + sec) as i64;
    let offset = match zone {
        Some("Z") | Some("z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "00"));
            let zh: i64 = zh.parse().ok()?;
            let zm: i64 = zm.parse().ok()?;
            sign * (zh * 3600 + zm * 60)
        }
        // The local offset at (about) that moment; DST edges resolve to one of the two.
        None => local_offset(naive - local_offset(naive)),
    };
    Some(Timestamp {
        sec: naive - offset,
        nsec,
    })
}

/// Resolves what a user typed (bookmark name, snapshot name, or time) to a point of
/// `container`'s history. Bookmarks win over snapshots, which win over times.
pub fn resolve(
    store: &Store,
    container: &ContainerRecord,
    spec: &str,
) -> Result<Point, PointError> {
    let cid = ContainerId(container.id);
    if let Some(b) = containers::bookmarks(store, cid)?
        .into_iter()
        .find(|b| b.name == spec)
    {
        return Ok(Point {
            branch: BranchId(b.branch),
            version: Version(b.version),
            time: b.time,
            label: format!("bookmark '{}'", b.name),
            kind: PointKind::Bookmark,
        });
    }
    if let Some(s) = store.registry().snapshot_by_name(spec) {
        let rec = s
            .snapshot
            .clone()
            .ok_or_else(|| PointError::Unrecognised(spec.into()))?;
        if rec.container != container.id {
            return Err(PointError::OtherContainer {
                snapshot: spec.into(),
                owner: s.rec.name.clone(),
                container: container.name.clone(),
            });
        }
        let (branch, version) = match rec.branch {
            Some(b) => (BranchId(b), store.committer.head()),
            None => (BranchId(rec.base_branch), Version(rec.base_version)),
        };
        return Ok(Point {
            branch,
            version,
            time: rec.at_time,
            label: format!("snapshot '{}'", rec.name),
            kind: PointKind::Snapshot,
        });
    }
    let now = store.committer.clock().wall();
    let t = parse_time(spec, now).ok_or_else(|| PointError::Unrecognised(spec.into()))?;
    let when = format_time(t.sec);
    if t > now {
        return Err(PointError::Future {
            when,
            now: format_time(now.sec),
        });
    }
    let v = store
        .committer
        .version_at(t)?
        .filter(|v| v.0 >= container.created_version)
        .ok_or_else(|| PointError::BeforeCreation {
            container: container.name.clone(),
            when: when.clone(),
        })?;
    // Retention keeps the state at `history_floor - 1` whole (its kept point), so only
    // older versions are gone.
    if v.0 + 1 < container.history_floor {
        // Below the floor only the points retention kept remain: the newest one at or
        // before the requested time stands for it.
        if let Some(&(pt, pv)) = container
            .kept_points
            .iter()
            .rev()
            .find(|(pt, _)| *pt <= t.sec)
        {
            let v = Version(pv);
            return Ok(Point {
                branch: container.branch_at(v),
                version: v,
                time: pt,
                label: format!("{when} (kept point {})", format_time(pt)),
                kind: PointKind::Time,
            });
        }
        return Err(PointError::Pruned {
            container: container.name.clone(),
            when,
            floor: format_time(container.history_floor_time),
        });
    }
    // A time later than the newest commit reads the newest state.
    let v = v.min(store.committer.head());
    Ok(Point {
        branch: container.branch_at(v),
        version: v,
        time: t.sec,
        label: when,
        kind: PointKind::Time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 19_000, 20_414, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn time_expressions() {
        let now = Timestamp {
            sec: 1_795_000_000,
            nsec: 5,
        };
        let p = |s| parse_time(s, now).map(|t| t.sec);
        assert_eq!(p("now"), Some(now.sec));
        assert_eq!(p("@1700000000"), Some(1_700_000_000));
        assert_eq!(
            parse_time("@1700000000.25", now),
            Some(Timestamp {
                sec: 1_700_000_000,
                nsec: 250_000_000
            })
        );
        assert_eq!(p("-15m"), Some(now.sec - 900));
        assert_eq!(p("2h ago"), Some(now.sec - 7200));
        assert_eq!(p("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(p("2026-11-18 12:06:40+01:00"), Some(1_795_000_000));
        assert_eq!(p("2026-11-18T10:06:40-01:00"), Some(1_795_000_000));
        assert_eq!(p("2026-11-18T11:06Z"), Some(1_795_000_000 - 40));
        assert_eq!(p("2026-11-18Z"), Some(1_794_960_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-18T25:00",
            "@x",
            "-5y",
            "12:00",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        // Local times differ from UTC by the zone's offset only.
        let local = p("2026-11-18 11:06:40").unwrap();
        assert!((local - 1_795_000_000).abs() <= 14 * 3600);
        assert_eq!(parse_duration("3d"), Some(3 * 86_400));
        assert_eq!(parse_duration("1w"), Some(604_800));
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn local_times_read_back_as_the_same_instant() {
        for sec in [0i64, 1_795_000_000, 1_795_000_000 + 86_399, 1_711_846_800] {
            let text = format_local(sec);
            assert_eq!(
                parse_time(&text, Timestamp::default()).map(|t| t.sec),
                Some(sec),
                "{text}"
            );
        }
    }

    #[test]
    fn instants_replace_times_and_leave_names_alone() {
        let now = Timestamp {
            sec: 1_795_000_000,
            nsec: 7,
        };
        assert_eq!(to_instant("-15m", now), "@1794999100.000000007");
        assert_eq!(
            to_instant("2026-11-18T11:06:40Z", now),
            "@1795000000.000000000"
        );
        assert_eq!(to_instant("before-upgrade", now), "before-upgrade");
        let back = parse_time(&to_instant("2h ago", now), now);
        assert_eq!(
            back,
            Some(Timestamp {
                sec: now.sec - 7200,
                nsec: 7
            })
        );
    }
}
