//! Finding stores and mounts: the runtime registry of running daemons and
//! `/proc/self/mountinfo`.
//!
//! A mounted daemon writes `RUNDIR/<id>.json` (store, mount point, pid) and listens on
//! `RUNDIR/<id>.sock`, where `<id>` is a hash of the store's canonical path. RUNDIR is
//! `$DEDUPFS_RUN_DIR` if set, else `/run/dedupfs` for root, else
//! `$XDG_RUNTIME_DIR/dedupfs`, else `/run/user/UID/dedupfs` — never a predictable path in
//! a world-writable directory. The socket lives there rather than in the store because
//! socket paths are limited to 108 bytes.
//!
//! Invariant: the run directory is a real directory (not a link) owned by the user and
//! reachable by nobody else (0700); one that is not is refused, by name, never used.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MountRecord {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub pid: u32,
    /// The mount's device id ("MAJOR:MINOR" in mountinfo): every view of the same FUSE
    /// connection (bind mounts, a second `mount` of the store) shares it.
    #[serde(default)]
    pub dev: String,
    /// The `container=` option the daemon was mounted with.
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    /// When the daemon process started (field 22 of `/proc/PID/stat`, clock ticks since
    /// boot): with the pid, it names the process, so a record left by a killed daemon is
    /// never taken for a live one whose pid happens to be the same. 0 in records written
    /// before it existed (then only the pid is checked).
    #[serde(default)]
    pub started: u64,
    /// Set by the daemon the moment the kernel lets go of its mount, before the final
    /// flush: from then on the daemon owns no mount (its device number may already belong
    /// to a new one), so it is no record of a live mount, only a store still being closed.
    #[serde(default)]
    pub unmounting: bool,
    /// The mount options the daemon was started with (as given).
    #[serde(default)]
    pub options: Vec<String>,
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

pub fn run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEDUPFS_RUN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let uid = euid();
    if uid == 0 {
        return PathBuf::from("/run/dedupfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("dedupfs"),
        _ => PathBuf::from(format!("/run/user/{uid}/dedupfs")),
    }
}

/// Creates the run directory (0700) or checks the one there: a directory, not a link,
/// owned by this user, closed to others. Returns why not, by name.
pub fn ensure_run_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let d = run_dir();
    match std::fs::DirBuilder::new().mode(0o700).create(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create the run directory {}: {e}",
                d.display()
            ))
        }
    }
    let md =
        std::fs::symlink_metadata(&d).map_err(|e| format!("run directory {}: {e}", d.display()))?;
    if !md.file_type().is_dir() {
        return Err(format!(
            "run directory {} is not a directory (a link or a file is there); refusing to use it",
            d.display()
        ));
    }
    if md.uid() != euid() {
        return Err(format!(
            "run directory {} belongs to uid {}, not to uid {}; refusing to use it (remove it, or set DEDUPFS_RUN_DIR)",
            d.display(),
            md.uid(),
            euid()
        ));
    }
    if md.mode() & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        log::warn!(
            "run directory {} was open to other users (mode {:04o}); made it 0700",
            d.display(),
            md.mode() & 0o7777
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("run directory {}: {e}", d.display()))?;
    }
    Ok(d)
}

pub fn store_key(store: &Path) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(store.as_os_str().as_encoded_bytes())
    )
}

pub fn socket_path(store: &Path) -> PathBuf {
    run_dir().join(format!("{}.sock", store_key(store)))
}

pub fn record_path(store: &Path) -> PathBuf {
    run_dir().join(format!("{}.json", store_key(store)))
}

/// A process's state letter and start time, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything, so parse after the last ')'.
    let (_, rest) = s.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let state = f.first()?.chars().next()?;
    let started = f.get(19)?.parse().ok()?;
    Some((state, started))
}

/// This process's start time, for its record.
pub fn own_start_time() -> u64 {
    proc_stat(std::process::id()).map(|(_, t)| t).unwrap_or(0)
}

/// Whether the daemon a record names is still running: its pid exists, is not a zombie
/// (a killed daemon stays one until it is reaped), and started when the record says.
fn daemon_alive(r: &MountRecord) -> bool {
    match proc_stat(r.pid) {
        Some((state, started)) => {
            state != 'Z' && state != 'X' && (r.started == 0 || started == r.started)
        }
        None => false,
    }
}

/// Registry entries of running daemons that still own a mount, as recorded (a daemon
/// finishing its final flush after the kernel let go is left out).
pub fn records() -> Vec<MountRecord> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(run_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "json") {
            if let Ok(raw) = std::fs::read(e.path()) {
                if let Ok(r) = serde_json::from_slice::<MountRecord>(&raw) {
                    if !r.unmounting && daemon_alive(&r) {
                        out.push(r);
                    }
                }
            }
        }
    }
    out
}

/// Live mounts known to the registry (stale entries of dead daemons are skipped). When
/// the recorded mount point was unmounted while another view of the same mount remains,
/// that view is reported instead.
pub fn mounts() -> Vec<MountRecord> {
    let mut out: Vec<MountRecord> = records()
        .into_iter()
        .filter_map(|r| {
            // The recorded mount point still shows this daemon's filesystem (not another
            // mounted there since), or another view of that filesystem is left.
            if mount_at(&r.mountpoint).is_some_and(|m| r.dev.is_empty() || m.dev == r.dev) {
                Some(r)
            } else {
                view_of(&r.dev).map(|m| MountRecord {
                    mountpoint: m.mountpoint,
                    ..r
                })
            }
        })
        .collect();
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

pub fn register(rec: &MountRecord) -> std::io::Result<()> {
    let p = record_path(&rec.store);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(rec).unwrap_or_default())?;
    std::fs::rename(tmp, p)
}

pub fn unregister(store: &Path) {
    let _ = std::fs::remove_file(record_path(store));
    let _ = std::fs::remove_file(socket_path(store));
}

/// Where a daemon leaves the outcome of its unmount for `dedupfs umount` to report.
pub fn exit_report_path(store: &Path) -> PathBuf {
    run_dir().join(format!("{}.exit.json", store_key(store)))
}

/// How a daemon's unmount ended: everything on disk, or what was not.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ExitReport {
    pub pid: u32,
    pub clean: bool,
    /// What went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq)]
pub struct MountInfo {
    /// The filesystem's super options (FUSE: `user_id=`, the mounting user).
    pub super_opts: String,
    /// "MAJOR:MINOR" of the mounted filesystem.
    pub dev: String,
    /// The directory of that filesystem shown at the mount point ("/" unless a bind mount
    /// of a subdirectory).
    pub root: String,
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mountinfo() -> Vec<MountInfo> {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountInfo {
                super_opts: f.get(sep + 3).map(|s| s.to_string()).unwrap_or_default(),
                dev: f.get(2)?.to_string(),
                root: unescape(f.get(3)?),
                mountpoint: PathBuf::from(unescape(f.get(4)?)),
                fstype: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

/// The live mount record of `store` (canonical path), if a daemon serves it.
pub fn served(store: &Path) -> Option<MountRecord> {
    mounts().into_iter().find(|r| r.store == store)
}

pub fn mount_at(p: &Path) -> Option<MountInfo> {
    let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == canon || m.mountpoint == p)
}

/// A mount showing the whole of filesystem `dev` (root "/"), if one is left.
pub fn view_of(dev: &str) -> Option<MountInfo> {
    if dev.is_empty() {
        return None;
    }
    mountinfo()
        .into_iter()
        .find(|m| m.dev == dev && m.root == "/" && m.fstype.starts_with("fuse"))
}

/// Whether any mount (whole or a subdirectory) of filesystem `dev` is left.
pub fn any_view_of(dev: &str) -> bool {
    !dev.is_empty() && mountinfo().iter().any(|m| m.dev == dev)
}

impl MountInfo {
    /// Whether this is a dedupfs mount: a FUSE mount that a daemon registered, or whose
    /// source is a dedupfs store (a dead mount left by a killed daemon is one too).
    pub fn is_dedupfs(&self) -> bool {
        if !(self.fstype == "fuse" || self.fstype.starts_with("fuse.")) {
            return false;
        }
        if self.fstype == "fuse.dedupfs" {
            return true;
        }
        records()
            .iter()
            .any(|r| r.mountpoint == self.mountpoint || (!r.dev.is_empty() && r.dev == self.dev))
            || Path::new(&self.source)
                .join(dedupfs_core::store::config::CONFIG_FILE)
                .exists()
    }

    /// The uid that mounted a FUSE filesystem (its `user_id=` option).
    pub fn fuse_owner(&self) -> Option<u32> {
        self.super_opts
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|u| u.parse().ok())
    }
}
