//! `dedupfs umount`: unmount a dedupfs mount (umount2 as root, else fusermount3), then
//! wait for its daemon's final flush and report how it went.
//!
//! Invariants: only a dedupfs mount is unmounted (anything else is refused, named); the
//! command waits for the daemon only when the last view of its mount is gone (until then
//! the daemon keeps serving the other views), and then succeeds only when the daemon's
//! exit report says that everything reached the disk.

use crate::locate;
use crate::mountpoint::mount_err;
use crate::{CliError, ExitKind};
use std::os::fd::RawFd;
use std::path::Path;

/// `dedupfs umount`: unmount and wait for the daemon to release the store.
pub fn umount(mnt: &Path, lazy: bool, timeout_secs: u64) -> Result<(), CliError> {
    let info = locate::mount_at(mnt)
        .filter(|m| {
            let canon = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
            m.mountpoint == canon || m.mountpoint == mnt
        })
        .ok_or_else(|| mount_err(format!("{} is not mounted", mnt.display())))?;
    if !info.is_dedupfs() {
        return Err(mount_err(format!(
            "{} is not a dedupfs mount (it is {} from {}); use umount(8) for it",
            info.mountpoint.display(),
            info.fstype,
            info.source
        )));
    }
    let target = info.mountpoint.clone();
    // The daemon recorded for exactly this mount point and device; else (another view of
    // the mount, its recorded point unmounted) the one recorded for this device.
    let recs = locate::records();
    let rec = recs
        .iter()
        .find(|m| m.mountpoint == target && (m.dev.is_empty() || m.dev == info.dev))
        .or_else(|| recs.iter().find(|m| !m.dev.is_empty() && m.dev == info.dev))
        .cloned();
    // SAFETY: geteuid has no preconditions.
    let unmounted = if unsafe { libc::geteuid() } == 0 {
        crate::kmount::umount(&target, if lazy { libc::MNT_DETACH } else { 0 })
    } else {
        let mut cmd = std::process::Command::new("fusermount3");
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        let st = cmd
            .arg(&target)
            .status()
            .map_err(|e| mount_err(format!("fusermount3: {e}")))?;
        match st.success() {
            true => Ok(()),
            // fusermount3 has said why on stderr; its errno is not ours to read.
            false => Err(std::io::Error::other(format!(
                "fusermount3 -u failed ({st})"
            ))),
        }
    };
    if let Err(e) = unmounted {
        if e.raw_os_error() == Some(libc::EBUSY) {
            return Err(mount_err(format!(
                "{} is busy (files are open); close them or use --lazy",
                target.display()
            )));
        }
        return Err(mount_err(format!(
            "unmounting {} failed: {e}",
            target.display()
        )));
    }
    if let Some(r) = rec.filter(|r| !locate::any_view_of(&r.dev)) {
        // The daemon flushes and syncs after the kernel lets go (once no other view of the
        // mount is left); wait for it to finish, then say how that went.
        let limit = (timeout_secs > 0).then(|| std::time::Duration::from_secs(timeout_secs));
        if !wait_exit(r.pid, limit) {
            return Err(CliError::new(
                ExitKind::Failed,
                format!(
                    "daemon {} did not exit within {timeout_secs} s (still flushing? it goes \
                     on; `dedupfs status`, STORE/dedupfs.log)",
                    r.pid
                ),
            ));
        }
        let path = locate::exit_report_path(&r.store);
        let report: Option<locate::ExitReport> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|x: &locate::ExitReport| x.pid == r.pid);
        let _ = std::fs::remove_file(&path);
        return match report {
            Some(x) if x.clean => Ok(()),
            Some(x) => Err(CliError::new(
                ExitKind::Failed,
                format!(
                    "{} was unmounted, but {}",
                    target.display(),
                    x.message
                        .unwrap_or_else(|| "the daemon reported a failure".into())
                ),
            )),
            None => Err(CliError::new(
                ExitKind::Failed,
                format!(
                    "{} was unmounted, but the daemon (pid {}) exited without saying whether \
                     everything reached the disk; see {}",
                    target.display(),
                    r.pid,
                    r.store.join("dedupfs.log").display()
                ),
            )),
        };
    }
    Ok(())
}

/// Waits for process `pid` to exit, at most `timeout` (`None`: as long as it runs): true
/// once it has exited (or no such process exists), false when the time ran out.
pub fn wait_exit(pid: u32, timeout: Option<std::time::Duration>) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as RawFd;
    if fd < 0 {
        return true; // no such process
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd for the duration of the call; fd is closed after.
    let n = unsafe {
        libc::poll(
            &mut pfd,
            1,
            timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32),
        )
    };
    unsafe { libc::close(fd) };
    n > 0
}
