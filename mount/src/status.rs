//! `dedupfs status`: the stores mounted on this machine (as the caller may see them),
//! every view of each (bind mounts, second mounts, `container=` views), the options each
//! daemon was started with, and whether it answers and takes writes.
//!
//! Invariant: a daemon is asked through its control socket with a deadline, so a hung
//! daemon shows as "not answering" instead of hanging the command; the exit code is 0
//! only when every listed daemon answered and takes writes.

use crate::locate::{self, MountRecord};
use crate::ops::Request;
use crate::output::{size, table};
use crate::protocol::{decode, Health};
use crate::{CliError, ExitKind};
use serde::Serialize;
use std::time::Duration;

/// How long a daemon may take to answer.
const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Entry {
    store: std::path::PathBuf,
    mountpoint: std::path::PathBuf,
    /// Every mount point showing this daemon's filesystem.
    views: Vec<std::path::PathBuf>,
    fstype: String,
    pid: u32,
    uptime_secs: Option<u64>,
    options: Vec<String>,
    container: Option<String>,
    read_only: bool,
    /// "ok", "halted" or "not answering".
    health: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Seconds since the process started (its start time in clock ticks since boot).
fn uptime(started_ticks: u64) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let boot_secs: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    if hz <= 0 || started_ticks == 0 {
        return None;
    }
    Some((boot_secs - started_ticks as f64 / hz as f64).max(0.0) as u64)
}

fn ask(r: &MountRecord) -> Result<Health, String> {
    let conn = crate::control::connect(&r.store).ok_or("control socket refused")?;
    conn.set_read_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    let v = crate::control::call(conn, &Request::Ping, &mut |_| {}).map_err(|e| e.message)?;
    decode::<Health>(v, "status").map_err(|e| e.message)
}

fn entry(r: MountRecord) -> Entry {
    let info = locate::mountinfo();
    let views = info
        .iter()
        .filter(|m| !r.dev.is_empty() && m.dev == r.dev)
        .map(|m| m.mountpoint.clone())
        .collect();
    let fstype = info
        .iter()
        .find(|m| m.dev == r.dev)
        .map(|m| m.fstype.clone())
        .unwrap_or_default();
    let (health, detail, error) = match ask(&r) {
        Ok(h) => (
            if h.halted.is_some() { "halted" } else { "ok" }.to_string(),
            Some(h),
            None,
        ),
        Err(e) => ("not answering".to_string(), None, Some(e)),
    };
    Entry {
        uptime_secs: uptime(r.started),
        store: r.store,
        mountpoint: r.mountpoint,
        views,
        fstype,
        pid: r.pid,
        options: r.options,
        container: r.container,
        read_only: r.read_only,
        health,
        detail,
        error,
    }
}

fn duration(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

pub fn run(only: Option<&std::path::Path>, json: bool) -> Result<(), CliError> {
    let entries: Vec<Entry> = locate::mounts()
        .into_iter()
        .filter(|r| only.is_none_or(|s| r.store == s))
        .map(entry)
        .collect();
    let unhealthy = entries.iter().filter(|e| e.health != "ok").count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else if entries.is_empty() {
        println!("no dedupfs store is mounted (that this user can see)");
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.mountpoint.display().to_string(),
                    e.store.display().to_string(),
                    e.pid.to_string(),
                    e.uptime_secs.map(duration).unwrap_or_else(|| "-".into()),
                    e.detail
                        .as_ref()
                        .map(|d| size(d.buffered_bytes))
                        .unwrap_or_else(|| "-".into()),
                    e.health.clone(),
                ]
            })
            .collect();
        table(
            &["MOUNTPOINT", "STORE", "PID", "UP", "BUFFERED", "HEALTH"],
            &rows,
        );
        for e in &entries {
            println!();
            println!("{}:", e.mountpoint.display());
            println!("  type      {}", e.fstype);
            let views: Vec<String> = e.views.iter().map(|v| v.display().to_string()).collect();
            println!("  views     {}", views.join(", "));
            println!(
                "  options   {}",
                if e.options.is_empty() {
                    "(defaults)".to_string()
                } else {
                    e.options.join(",")
                }
            );
            if let Some(d) = &e.detail {
                println!(
                    "  daemon    dedupfs {} (protocol {}), pid {}",
                    d.version, d.protocol, d.pid
                );
                if let Some(h) = &d.halted {
                    println!("  HALTED    {h}");
                }
                for u in &d.unflushed {
                    println!("  unflushed {u}");
                }
            }
            if let Some(err) = &e.error {
                println!("  error     {err}");
            }
        }
    }
    if unhealthy > 0 {
        return Err(CliError::new(
            ExitKind::Failed,
            format!(
                "{unhealthy} of {} mounted stores are not healthy",
                entries.len()
            ),
        ));
    }
    Ok(())
}
