//! What the commands share: which store a command means ([`resolve_store`]), running a
//! request through the store's daemon or on the store itself ([`store_cmd`]), handing the
//! kernel's dirty pages to the daemon first ([`sync_mount`]), and printing an answer
//! ([`show_as`], or [`decode_show`] when the answer also decides the exit status).
//!
//! Invariants: a store named by a dead mount, another user's mount or a path that is no
//! store is refused with a message saying which, never opened; a request runs in the
//! daemon whenever one serves the store (its store lock would refuse a second opener),
//! and on a store opened here only when none does.

use crate::ops::{self, Request};
use crate::{control, locate, output, protocol, CliError, ExitKind};
use dedupfs_core::store::{OpenOptions, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A time the user typed, as the instant it means in this process's zone and clock
/// (the daemon's zone may differ); names of bookmarks and snapshots pass unchanged (they
/// can never read as times: `validate_point_name`).
pub fn to_instant(spec: &str) -> String {
    dedupfs_core::points::to_instant(spec, dedupfs_core::records::Timestamp::now())
}

/// The store the user named: `--store`, else a non-empty `$DEDUPFS_STORE`.
pub fn named_store(arg: Option<PathBuf>) -> Option<PathBuf> {
    arg.or_else(|| {
        std::env::var_os("DEDUPFS_STORE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    })
}

/// Which store a command means: --store (a store or a mount point), $DEDUPFS_STORE, or
/// the only mounted store.
pub fn resolve_store(arg: Option<PathBuf>) -> Result<PathBuf, CliError> {
    match named_store(arg) {
        Some(p) => {
            // statfs always reaches a FUSE daemon (attributes may be cached by the kernel).
            if crate::kmount::is_dead(&p) {
                return Err(CliError::new(
                    ExitKind::Mount,
                    format!(
                        "{} is a dead dedupfs mount (its daemon is gone): `dedupfs umount {}`, \
                         then mount the store again",
                        p.display(),
                        p.display()
                    ),
                ));
            }
            match std::fs::metadata(&p) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(CliError::new(
                        ExitKind::Denied,
                        format!("{}: permission denied", p.display()),
                    ))
                }
                Err(_) => return Err(CliError::from_store(StoreError::NotFound(p))),
            }
            match std::fs::metadata(p.join(dedupfs_core::store::config::CONFIG_FILE)) {
                Ok(_) => {
                    return std::fs::canonicalize(&p).map_err(|e| {
                        CliError::new(ExitKind::Store, format!("{}: {e}", p.display()))
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(CliError::from_store(StoreError::NotPermitted {
                        owner: dedupfs_core::store::perms::owner(&p).unwrap_or(0),
                        path: p,
                    }))
                }
                Err(_) => {}
            }
            let canon = std::fs::canonicalize(&p).unwrap_or(p.clone());
            let mounts = locate::mounts();
            if let Some(m) = mounts.iter().find(|m| m.mountpoint == canon) {
                return Ok(m.store.clone());
            }
            let view = locate::mount_at(&canon);
            // A second view (a bind mount, a second `dedupfs mount` of the store) shares
            // the daemon's device number.
            if let Some(v) = &view {
                if let Some(m) = mounts.iter().find(|m| !m.dev.is_empty() && m.dev == v.dev) {
                    return Ok(m.store.clone());
                }
            }
            // Someone else's dedupfs mount: say so, rather than "not a store".
            if let Some(m) = view {
                let owner = m.fuse_owner();
                if (m.fstype == "fuse" || m.fstype.starts_with("fuse."))
                    && owner.is_some_and(|o| o != locate::euid())
                    && locate::euid() != 0
                {
                    return Err(CliError::new(
                        ExitKind::Denied,
                        format!(
                            "permission denied: {} is mounted by uid {} ({}); only that user or root may control it",
                            canon.display(),
                            owner.unwrap_or(0),
                            m.source
                        ),
                    ));
                }
            }
            Err(CliError::from_store(StoreError::NotAStore(p)))
        }
        None => {
            let mounts = locate::mounts();
            match mounts.len() {
                1 => Ok(mounts[0].store.clone()),
                0 => Err(CliError::usage(
                    "which store? pass --store STORE|MOUNTPOINT (or set DEDUPFS_STORE); no \
                     dedupfs is mounted"
                        .into(),
                )),
                _ => Err(CliError::usage(format!(
                    "several stores are mounted ({}); pass --store STORE|MOUNTPOINT (or set \
                     DEDUPFS_STORE)",
                    mounts
                        .iter()
                        .map(|m| m.mountpoint.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

/// Runs a store command through the mounted daemon, or on the store directly.
pub fn store_cmd(store: &Path, req: Request, what: &str) -> Result<serde_json::Value, CliError> {
    store_cmd_io(store, req, Vec::new(), what)
}

/// Like [`store_cmd`], handing the command open descriptors (a replication's stream).
pub fn store_cmd_io(
    store: &Path,
    req: Request,
    fds: Vec<std::os::fd::OwnedFd>,
    what: &str,
) -> Result<serde_json::Value, CliError> {
    let pb = output::progress(what);
    // A new step (the text before ':') restarts the ETA; counts after it just update.
    let step = |s: &str| s.split(':').next().unwrap_or_default().to_string();
    let mut on_progress = |p: &ops::Progress| {
        if pb.message() != p.what {
            if step(&pb.message()) != step(&p.what) {
                pb.reset_eta();
            }
            pb.set_message(p.what.clone());
        }
        pb.set_length(p.total.unwrap_or(0).max(p.done));
        pb.set_position(p.done);
    };
    let r = if let Some(conn) = control::connect(store) {
        control::call_with_fds(conn, &req, fds, &mut on_progress).map_err(CliError::from_op)
    } else {
        let s = Store::open(
            store,
            &OpenOptions {
                purpose: format!("dedupfs {what}"),
                ..Default::default()
            },
        )
        .map_err(CliError::from_store)?;
        let ctx = ops::Ctx {
            store: Arc::new(s),
            fs: None,
            notifier: None,
            known: None,
            cancel: None,
        };
        ops::execute(&ctx, local_caller(), req, fds, &mut on_progress).map_err(CliError::from_op)
    };
    pb.finish_and_clear();
    r
}

/// Prints an answer: as it came with `--json`, else decoded into its type for a person.
pub fn show_as<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    what: &str,
    json: bool,
    print: impl FnOnce(&T),
) -> Result<(), CliError> {
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    print(&protocol::decode::<T>(v, what).map_err(CliError::from_op)?);
    Ok(())
}

/// Decodes an answer whose content decides more than what is printed (an exit status),
/// then prints it like [`show_as`]; with `--json` too, an answer that does not decode is
/// an error, since nothing could be decided from it.
pub fn decode_show<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    what: &str,
    json: bool,
    print: impl FnOnce(&T),
) -> Result<T, CliError> {
    let t = protocol::decode::<T>(v.clone(), what).map_err(CliError::from_op)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print(&t);
    }
    Ok(t)
}

/// Where the store is mounted (by its daemon's record), if it is.
pub fn mountpoint_of(store: &Path) -> Option<PathBuf> {
    locate::served(store).map(|m| m.mountpoint)
}

/// Hands the kernel's dirty pages of a mounted store to its daemon (`syncfs`), so that a
/// bookmark, snapshot or rollback that follows includes every completed write.
pub fn sync_mount(store: &Path) {
    let Some(mnt) = mountpoint_of(store) else {
        return;
    };
    match std::fs::File::open(&mnt) {
        Ok(f) => {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
            let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
            // The kernel writes dirty pages back before it asks the filesystem to sync;
            // only that first part matters here, so the reply to the second is ignored.
            if rc != 0 {
                log::debug!(
                    "syncfs {}: {}",
                    mnt.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Err(e) => log::warn!("cannot open {}: {e}", mnt.display()),
    }
}

/// The caller's uid for the store's rules (`--bypass-governance` needs root). Root inside a
/// user namespace (`unshare -Ur`) is not root on this machine: such a caller counts as
/// `nobody`.
fn local_caller() -> u32 {
    let uid = crate::locate::euid();
    let initial_ns = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(false);
    if uid == 0 && !initial_ns {
        65_534
    } else {
        uid
    }
}
