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
        // The daemon keeps running; only the kernel's mount flags change.
        return match std::process::Command::new("mount")
            .arg("-i")
            .arg("-o")
            .arg(req.options.join(","))
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

/// Whether `dir` is a FUSE mount whose daemon died. statfs always reaches the daemon
/// (attributes of the mount point may be cached), and answers ENOTCONN once it is gone.
fn is_dead_mount(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// Detaches a FUSE mount whose daemon died (every access fails with ENOTCONN).
fn clean_dead_mount(dir: &Path) -> Result<(), String> {
    match is_dead_mount(dir) {
        true => {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{}: bad path", dir.display()))?;
            // SAFETY: c is a valid NUL-terminated path; umount2 does not keep the pointer.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(format!(
                    "{} is a dead FUSE mount and cannot be detached: {}",
                    dir.display(),
                    std::io::Error::last_os_error()
                ));
            }
            log::warn!("detached the dead mount on {}", dir.display());
            Ok(())
        }
        false => Ok(()),
    }
}

/// `dedupfs install`: copies this binary to PREFIX/bin and links the mount helper.
pub fn install(prefix: &Path, sbin: &Path) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let bin_dir = prefix.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| format!("{}: {e}", bin_dir.display()))?;
    std::fs::create_dir_all(sbin).map_err(|e| format!("{}: {e}", sbin.display()))?;
    let target = bin_dir.join("dedupfs");
    let mut done = Vec::new();
    if std::fs::canonicalize(&exe).ok() != std::fs::canonicalize(&target).ok() {
        // Copy then rename, so a running daemon's binary is never overwritten in place.
        let tmp = bin_dir.join(".dedupfs.install");
        std::fs::copy(&exe, &tmp).map_err(|e| format!("copy to {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        done.push(format!("installed {}", target.display()));
    }
    let helper = sbin.join("mount.fuse.dedupfs");
    let _ = std::fs::remove_file(&helper);
    std::os::unix::fs::symlink(&target, &helper)
        .map_err(|e| format!("{}: {e}", helper.display()))?;
    done.push(format!(
        "linked {} -> {}",
        helper.display(),
        target.display()
    ));
    Ok(done)
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
