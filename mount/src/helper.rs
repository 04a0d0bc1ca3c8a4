//! `mount.fuse.dedupfs`: the helper mount(8) runs for `mount -t fuse.dedupfs` and fstab lines.
//!
//! The `dedupfs` binary acts as the helper when started under that name (`dedupfs install`
//! creates the link). mount(8) calls `mount.fuse.dedupfs SOURCE DIR [-sfnv] -o OPTS`, where
//! SOURCE is the store path, or any name when `source=STORE` is among the options (xfstests
//! names its devices with free strings that must then show as the mount's source).
//!
//! Invariants:
//! - A remount never starts a second daemon: it is handed back to mount(8) with `-i`, which
//!   changes the mount flags in the kernel.
//! - A live mount on DIR is never stacked upon; a dead one (daemon gone, ENOTCONN) is
//!   detached first.
//! - The helper returns only once the mount is visible (or failed), and waits up to
//!   `lock_wait` (default 60 s) for a previous daemon to release the store, since `umount`
//!   returns before that daemon has exited.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// mount(8)'s exit code for a failed mount.
const MOUNT_FAILED: i32 = 32;
/// mount(8)'s exit code for bad usage.
const USAGE: i32 = 1;
const DEFAULT_LOCK_WAIT: &str = "lock_wait=60";

/// What mount(8) asked for.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub source: String,
    pub dir: PathBuf,
    pub options: Vec<String>,
    pub fake: bool,
}

/// Parses `SOURCE DIR [-s] [-f] [-n] [-v] [-o OPTS]…` (options may also be `-oOPTS`).
pub fn parse(args: &[OsString]) -> Result<Request, String> {
    let mut pos = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let v = it.next().ok_or("-o needs a value")?;
                options.extend(split(&v.to_string_lossy()));
            }
            "-f" => fake = true,
            "-s" | "-n" | "-v" => {}
            "-t" => {
                it.next();
            }
            o if o.starts_with("-o") => options.extend(split(&o[2..])),
            o if o.starts_with('-') && o.len() > 1 => return Err(format!("unknown flag {o}")),
            _ => pos.push(a.clone()),
        }
    }
    if pos.len() != 2 {
        return Err("usage: mount.fuse.dedupfs STORE|NAME MOUNTPOINT [-o OPTIONS]".into());
    }
    Ok(Request {
        source: pos[0].to_string_lossy().into_owned(),
        dir: PathBuf::from(&pos[1]),
        options,
        fake,
    })
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(String::from)
        .collect()
}

fn has(opts: &[String], key: &str) -> bool {
    opts.iter()
        .any(|o| o == key || o.split_once('=').is_some_and(|(k, _)| k == key))
}

/// The store and the options to mount it with: the source names the store unless
/// `source=` does; the source becomes the fsname (so `findmnt -S SOURCE` and `umount
/// SOURCE` find the mount); mount(8) drops `dev` and `suid` before calling helpers, so they
/// are restored unless the caller said `nodev`/`nosuid`.
pub fn plan(req: &Request) -> (PathBuf, Vec<String>) {
    let mut opts: Vec<String> = req
        .options
        .iter()
        .filter(|o| !o.starts_with("source="))
        .cloned()
        .collect();
    let store = req
        .options
        .iter()
        .rev()
        .find_map(|o| o.strip_prefix("source=").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(&req.source));
    if !has(&opts, "fsname") {
        opts.push(format!("fsname={}", req.source));
    }
    if !has(&opts, "nodev") && !has(&opts, "dev") {
        opts.push("dev".into());
    }
    if !has(&opts, "nosuid") && !has(&opts, "suid") {
        opts.push("suid".into());
    }
    if !has(&opts, "lock_wait") {
        opts.push(DEFAULT_LOCK_WAIT.into());
    }
    (store, opts)
}

/// Runs the helper; returns mount(8)'s exit code.
pub fn run(args: &[OsString]) -> i32 {
    let req = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mount.fuse.dedupfs: {e}");
            return USAGE;
        }
    };
    if req.fake {
        return 0;
    }
    if has(&req.options, "remount") {
        // The daemon keeps running; only the kernel's mount flags change, and only those
        // may: anything else is refused by name rather than accepted and ignored.
        let kernel = match check_remount(&req) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("mount.fuse.dedupfs: {e}");
                return USAGE;
            }
        };
        return match std::process::Command::new("mount")
            .arg("-i")
            .arg("-o")
            .arg(kernel.join(","))
            .arg(&req.source)
            .arg(&req.dir)
            .status()
        {
            Ok(s) => s.code().unwrap_or(MOUNT_FAILED),
            Err(e) => {
                eprintln!("mount.fuse.dedupfs: cannot run mount -i for remount: {e}");
                MOUNT_FAILED
            }
        };
    }
    if let Err(e) = clean_dead_mount(&req.dir) {
        eprintln!("mount.fuse.dedupfs: {e}");
        return MOUNT_FAILED;
    }
    let (store, opts) = plan(&req);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("mount.fuse.dedupfs: cannot find the dedupfs binary: {e}");
            return MOUNT_FAILED;
        }
    };
    match std::process::Command::new(exe)
        .arg("mount")
        .arg(&store)
        .arg(&req.dir)
        .arg("-o")
        .arg(opts.join(","))
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => 0,
        Ok(s) if s.code() == Some(2) => USAGE,
        Ok(_) => MOUNT_FAILED,
        Err(e) => {
            eprintln!("mount.fuse.dedupfs: cannot start dedupfs: {e}");
            MOUNT_FAILED
        }
    }
}

/// Options the kernel reports for every FUSE mount (mount(8) merges them into a remount's
/// options from mountinfo); they describe the connection and change nothing.
const KERNEL_REPORTED: &[&str] = &[
    "user_id",
    "group_id",
    "rootmode",
    "fd",
    "max_read",
    "blksize",
    "default_permissions",
    "remount",
];

/// Mount flags the kernel changes on a live mount (`MS_REMOUNT`).
const LIVE_FLAGS: &[&str] = &[
    "ro", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "sync", "async", "dirsync",
];

/// Checks a remount against the daemon serving `req.dir`: mount flags may change (but not
/// `rw` of a daemon started read-only, which refuses writes itself); every other option
/// must be what the daemon runs with, else it is named and refused. Returns the options to
/// hand to the kernel.
fn check_remount(req: &Request) -> Result<Vec<String>, String> {
    let abs = std::path::absolute(&req.dir).unwrap_or_else(|_| req.dir.clone());
    let dev = crate::locate::mount_at(&abs)
        .map(|m| m.dev)
        .ok_or_else(|| format!("{} is not mounted", abs.display()))?;
    let rec = crate::locate::mounts()
        .into_iter()
        .find(|r| r.dev == dev)
        .ok_or_else(|| {
            format!(
                "no dedupfs daemon of this user serves {}; remount it as the user who mounted it",
                abs.display()
            )
        })?;
    let cur = crate::options::MountOpts::parse(&rec.options)
        .map_err(|e| format!("the daemon's recorded options do not parse: {e}"))?;
    let mut kernel = vec!["remount".to_string()];
    for opt in &req.options {
        let key = opt.split_once('=').map_or(opt.as_str(), |(k, _)| k);
        // The kernel shows allow_root as allow_other (fuser enforces the narrower one).
        if KERNEL_REPORTED.contains(&key) || (key == "allow_other" && cur.allow_root) {
            continue;
        }
        let mut changed = cur.clone();
        changed.apply(opt)?;
        if LIVE_FLAGS.contains(&key) {
            if key == "rw" && cur.read_only {
                return Err(format!(
                    "rw: the daemon of {} was started read-only and refuses writes itself; \
                     unmount and mount it rw",
                    abs.display()
                ));
            }
            kernel.push(opt.clone());
            continue;
        }
        changed.raw.clone_from(&cur.raw);
        if changed != cur {
            return Err(format!(
                "{opt} cannot change on a live mount (the daemon of {} runs with {}); \
                 unmount and mount again to change it",
                abs.display(),
                if rec.options.is_empty() {
                    "the default options".to_string()
                } else {
                    rec.options.join(",")
                }
            ));
        }
    }
    Ok(kernel)
}

/// Detaches a FUSE mount whose daemon died (every access fails with ENOTCONN): mount(8)
/// was asked to mount on DIR, and a dead mount there is nothing anyone can use. (`dedupfs
/// mount` alone detaches only its own store's dead mount, `mountpoint::clear_own_dead_mount`.)
fn clean_dead_mount(dir: &Path) -> Result<(), String> {
    if !crate::kmount::is_dead(dir) {
        return Ok(());
    }
    crate::kmount::detach(dir).map_err(|e| {
        format!(
            "{} is a dead FUSE mount and cannot be detached: {e}",
            dir.display()
        )
    })?;
    log::warn!("detached the dead mount on {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_what_mount_passes() {
        let r = parse(&args(&["/srv/s", "/mnt/b", "-o", "rw,allow_other", "-n"])).unwrap();
        assert_eq!(r.source, "/srv/s");
        assert_eq!(r.dir, PathBuf::from("/mnt/b"));
        assert_eq!(r.options, vec!["rw", "allow_other"]);
        let r = parse(&args(&["dd", "/mnt/t", "-osource=/srv/t,ro", "-f"])).unwrap();
        assert!(r.fake);
        assert_eq!(r.options, vec!["source=/srv/t", "ro"]);
        assert!(parse(&args(&["only-one"])).is_err());
        assert!(parse(&args(&["a", "b", "-o"])).is_err());
        assert!(parse(&args(&["a", "b", "-x"])).is_err());
    }

    #[test]
    fn plan_names_the_store_and_restores_dev_suid() {
        let r = parse(&args(&["dd_test", "/mnt/t", "-o", "source=/srv/t,nosuid"])).unwrap();
        let (store, opts) = plan(&r);
        assert_eq!(store, PathBuf::from("/srv/t"));
        assert!(opts.contains(&"fsname=dd_test".to_string()));
        assert!(opts.contains(&"dev".to_string()));
        assert!(!opts.contains(&"suid".to_string()), "nosuid is kept");
        assert!(opts.contains(&"lock_wait=60".to_string()));
        assert!(!opts.iter().any(|o| o.starts_with("source=")));
        let r = parse(&args(&["/srv/x", "/mnt/x", "-o", "lock_wait=5,fsname=n"])).unwrap();
        let (store, opts) = plan(&r);
        assert_eq!(store, PathBuf::from("/srv/x"));
        assert_eq!(
            opts.iter().filter(|o| o.starts_with("lock_wait")).count(),
            1
        );
        assert!(!opts.contains(&"fsname=/srv/x".to_string()));
    }
}
