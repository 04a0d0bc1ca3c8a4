//! Finding stores and mounts: the runtime registry of running daemons and
//! `/proc/self/mountinfo`.
//!
//! A mounted daemon writes `RUNDIR/<id>.json` (store, mount point, pid) and listens on
//! `RUNDIR/<id>.sock`, where `<id>` is a hash of the store's canonical path and RUNDIR is
//! `/run/dedupfs` for root (else `$XDG_RUNTIME_DIR/dedupfs` or `/tmp/dedupfs-UID`). The
//! socket lives there rather than in the store because socket paths are limited to 108 bytes.

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
}

pub fn run_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/dedupfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("dedupfs"),
        _ => PathBuf::from(format!("/tmp/dedupfs-{uid}")),
    }
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

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Registry entries of running daemons, as recorded.
pub fn records() -> Vec<MountRecord> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(run_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "json") {
            if let Ok(raw) = std::fs::read(e.path()) {
                if let Ok(r) = serde_json::from_slice::<MountRecord>(&raw) {
                    if pid_alive(r.pid) {
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
            if is_mountpoint(&r.mountpoint) {
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
    std::fs::create_dir_all(run_dir())?;
    let p = record_path(&rec.store);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(rec).unwrap_or_default())?;
    std::fs::rename(tmp, p)
}

pub fn unregister(store: &Path) {
    let _ = std::fs::remove_file(record_path(store));
    let _ = std::fs::remove_file(socket_path(store));
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq)]
pub struct MountInfo {
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
                dev: f.get(2)?.to_string(),
                root: unescape(f.get(3)?),
                mountpoint: PathBuf::from(unescape(f.get(4)?)),
                fstype: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
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
        .find(|m| m.dev == dev && m.root == "/")
}

/// Whether any mount (whole or a subdirectory) of filesystem `dev` is left.
pub fn any_view_of(dev: &str) -> bool {
    !dev.is_empty() && mountinfo().iter().any(|m| m.dev == dev)
}

pub fn is_mountpoint(p: &Path) -> bool {
    mount_at(p).is_some()
}
