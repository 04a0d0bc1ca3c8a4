//! The kernel side of mounting: `mount(2)` of `/dev/fuse` with the filesystem type
//! `fuse.dedupfs`, so that `mount`, `findmnt -t fuse.dedupfs` and `mount -o remount`
//! (which finds the helper by that type) see what the mount is.
//!
//! fuser mounts as root with the bare type `fuse` (it passes the subtype only to
//! fusermount3), so a daemon running as root mounts here and hands the connection to
//! fuser (`Session::from_fd`); one that may not mount (an unprivileged user) lets fuser go
//! through fusermount3, which sets the subtype itself.
//!
//! Invariant: the kernel options and flags are fuser's for the same `MountOpts` (the
//! connection's `fd`, `rootmode`, `user_id`, `group_id`, `default_permissions`,
//! `allow_other` for any ACL wider than the owner; `nodev`/`nosuid` unless asked otherwise),
//! so the two paths give the same mount but for its type.

use crate::options::MountOpts;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The filesystem type the mount shows: `fuse.SUBTYPE` (`fuse.dedupfs` by default), or
/// plain `fuse` for `subtype=` (xfstests' FSTYP=fuse).
pub fn fstype(opts: &MountOpts) -> String {
    match opts.fs_subtype() {
        None => "fuse".into(),
        Some(s) => format!("fuse.{s}"),
    }
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Mounts a new FUSE connection at `mnt` and returns its `/dev/fuse` descriptor, or `None`
/// when this process may not mount (EPERM: the caller then lets fuser use fusermount3).
pub fn mount(mnt: &Path, opts: &MountOpts, source: &str) -> std::io::Result<Option<OwnedFd>> {
    let root_mode = std::fs::metadata(mnt)?.mode();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd: OwnedFd = dev.into();
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={uid},group_id={gid},default_permissions",
        fd.as_raw_fd()
    );
    if opts.allow_other || opts.allow_root {
        // allow_root is enforced by fuser (its ACL), on top of the kernel's allow_other.
        data.push_str(",allow_other");
    }
    let mut flags: libc::c_ulong = 0;
    for (on, flag) in [
        (!opts.dev, libc::MS_NODEV),
        (!opts.suid, libc::MS_NOSUID),
        (!opts.exec, libc::MS_NOEXEC),
        (opts.read_only, libc::MS_RDONLY),
        (opts.noatime, libc::MS_NOATIME),
        (opts.sync, libc::MS_SYNCHRONOUS),
        (opts.dirsync, libc::MS_DIRSYNC),
    ] {
        if on {
            flags |= flag;
        }
    }
    let (src, target, fstype, data_c) = (
        cstr(source)?,
        path_cstr(mnt)?,
        cstr(&fstype(opts))?,
        cstr(&data)?,
    );
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; mount(2)
    // copies what it needs.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_c.as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(fd))
}

/// A path as the kernel takes it (its bytes as they are, not a lossy UTF-8 rendering).
pub fn path_cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// `umount2(p, flags)`.
pub fn umount(p: &Path, flags: libc::c_int) -> std::io::Result<()> {
    let c = path_cstr(p)?;
    // SAFETY: c is a valid NUL-terminated path; umount2 does not keep the pointer.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches the mount on `p` now, whatever still uses it (`MNT_DETACH`).
pub fn detach(p: &Path) -> std::io::Result<()> {
    umount(p, libc::MNT_DETACH)
}

/// Whether `dir` is a FUSE mount whose daemon is gone. statfs always reaches the daemon
/// (a mount point's attributes may be cached by the kernel), and answers ENOTCONN once the
/// connection is dead.
pub fn is_dead(dir: &Path) -> bool {
    let Ok(c) = path_cstr(dir) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// Unmounts `mnt`, or detaches it if that fails (busy); for mounts made by [`mount`].
pub fn unmount(mnt: &Path) -> std::io::Result<()> {
    match umount(mnt, 0) {
        Ok(()) => Ok(()),
        Err(first) => {
            log::warn!(
                "unmount of {} failed ({first}); detaching lazily",
                mnt.display()
            );
            detach(mnt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_names_the_subtype() {
        let mut o = MountOpts::default();
        assert_eq!(fstype(&o), "fuse.dedupfs");
        o.subtype = Some(String::new());
        assert_eq!(fstype(&o), "fuse");
        o.subtype = Some("x".into());
        assert_eq!(fstype(&o), "fuse.x");
    }
}
