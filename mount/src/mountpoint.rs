//! Mount points: the checks before a mount (the mount point exists, is a directory, is
//! not a mount already, is not dead; FUSE is usable), the detaching of this store's own
//! dead mount after a crash, and bind mounts (another view of a live mount, a snapshot).
//!
//! Invariants: only a dead mount of this very store is ever detached without being asked
//! (any other is named and left alone); a bind mount that cannot be made read-only as
//! asked is undone, so nothing stays mounted writable by mistake. Every failure is an
//! `ExitKind::Mount` error naming the path.

use crate::locate::{self, MountRecord};
use crate::{CliError, ExitKind};
use std::path::{Path, PathBuf};

/// A mount failure (exit code 4).
pub fn mount_err(msg: String) -> CliError {
    CliError::new(ExitKind::Mount, msg)
}

/// A crashed daemon leaves its mount point dead (every access fails with ENOTCONN) until
/// it is unmounted, so a restart by systemd's `Restart=` or any watcher could not mount
/// again. A dead mount that is this very store's — its mountinfo source is the store, or
/// the store's own (stale) registry record names this mount point — is detached, with a
/// warning; any other dead mount is left for the admin, and `check_mountpoint` names it.
pub fn clear_own_dead_mount(store: &Path, mnt: &Path) -> Result<(), CliError> {
    if !crate::kmount::is_dead(mnt) {
        return Ok(());
    }
    // No canonicalize: resolving a dead mount point itself fails with ENOTCONN.
    let abs = std::path::absolute(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let Some(m) = locate::mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == abs)
    else {
        return Ok(());
    };
    let recorded_here = std::fs::read(locate::record_path(store))
        .ok()
        .and_then(|raw| serde_json::from_slice::<MountRecord>(&raw).ok())
        .is_some_and(|r| r.mountpoint == abs && !locate::records().contains(&r));
    if !(m.fstype.starts_with("fuse") && (Path::new(&m.source) == store || recorded_here)) {
        return Ok(());
    }
    if let Err(e) = crate::kmount::detach(&abs) {
        return Err(mount_err(format!(
            "{} is a dead mount of this store (its daemon is gone) and cannot be detached: {e}",
            abs.display()
        )));
    }
    log::warn!(
        "detached the dead mount of {} on {} (its daemon had exited without unmounting)",
        store.display(),
        abs.display()
    );
    Ok(())
}

/// Checks the mount point: exists, is a directory, is not already a mount.
pub fn check_mountpoint(mnt: &Path) -> Result<PathBuf, CliError> {
    match std::fs::metadata(mnt) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(mount_err(format!(
                "{} is a dead FUSE mount (transport endpoint is not connected); clean it with `dedupfs umount {}`",
                mnt.display(),
                mnt.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(mount_err(format!("mount point {} does not exist", mnt.display())))
        }
        Err(e) => return Err(mount_err(format!("mount point {}: {e}", mnt.display()))),
        Ok(m) if !m.is_dir() => return Err(mount_err(format!("mount point {} is not a directory", mnt.display()))),
        Ok(_) => {}
    }
    let canon = std::fs::canonicalize(mnt)
        .map_err(|e| mount_err(format!("mount point {}: {e}", mnt.display())))?;
    if let Some(m) = locate::mount_at(&canon) {
        if m.mountpoint == canon {
            return Err(mount_err(format!(
                "mount point {} is busy: {} ({}) is already mounted there",
                canon.display(),
                m.source,
                m.fstype
            )));
        }
    }
    Ok(canon)
}

/// Checks that FUSE is usable by this process.
pub fn check_fuse() -> Result<(), CliError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(mount_err(
                "no /dev/fuse: load the fuse kernel module (modprobe fuse) or install fuse3".into(),
            ))
        }
        Err(e) => return Err(mount_err(format!("cannot open /dev/fuse: {e}"))),
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
            .unwrap_or(false);
        if !found {
            return Err(mount_err(
                "fusermount3 not found in PATH: install fuse3 (apt-get install fuse3)".into(),
            ));
        }
    }
    Ok(())
}

/// Bind-mounts `src` on `target`, then makes the bind read-only if asked (the kernel then
/// refuses writes before they reach the daemon). On a failure nothing stays mounted.
pub fn bind_mount(src: &Path, target: &Path, read_only: bool) -> Result<(), CliError> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| mount_err(format!("{}: path contains NUL", p.display())))
    };
    let (s, t) = (c(src)?, c(target)?);
    // SAFETY: both paths are NUL-terminated and outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(mount_err(format!(
            "bind mount of {} on {}: {}",
            src.display(),
            target.display(),
            std::io::Error::last_os_error()
        )));
    }
    if read_only {
        // SAFETY: as above; a remount of the bind just made.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                t.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let _ = crate::kmount::detach(target);
            return Err(mount_err(format!(
                "could not make {} read-only: {e}",
                target.display()
            )));
        }
    }
    Ok(())
}
