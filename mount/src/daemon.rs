//! `dedupfs mount`: the background daemon, signals and the FUSE session.
//!
//! In the background mode (the default) the command re-executes itself in the foreground
//! mode as a detached child (new session, stdin from /dev/null, output to the store's log)
//! and returns once the child reports over a pipe that the mount is live — or prints the
//! child's error. SIGINT/SIGTERM/SIGHUP unmount cleanly: buffered writes are flushed and
//! made durable before the process exits.
//!
//! Owns the daemon's life: [`mount_background`] (fork and wait for the verdict),
//! [`mount_foreground`]/`serve` (open, mount, serve, and close in order at the end),
//! [`mount_another_view`] (a second mount of a served store), the signal thread, and what
//! the daemon tells whoever waits for it (the ready pipe, systemd). Mount-point checks
//! are [`crate::mountpoint`], the background work [`crate::background`], `umount`
//! [`crate::unmount`].
//!
//! Invariants: the daemon reports at most once on the ready pipe (`ok`, or `error CODE
//! MESSAGE`); at the end every holder of the store (background work, control socket,
//! metrics endpoint, the filesystem core) is stopped before the store is closed, and the
//! exit report left for `dedupfs umount` says whether everything reached the disk.

use crate::background::Background;
use crate::fuse::{AdapterOptions, DedupFuse};
use crate::locate::{self, MountRecord};
use crate::mountpoint::{bind_mount, check_fuse, check_mountpoint, mount_err};
use crate::ops;
use crate::options::MountOpts;
use crate::{CliError, ExitKind};
use dedupfs_core::fs::{Fs, FsOptions};
use dedupfs_core::store::{OpenOptions, Store};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;

const READY_FD_ENV: &str = "DEDUPFS_READY_FD";

/// Tells systemd (a `Type=notify` unit) how the daemon is doing: `READY=1` once the mount
/// is live, `STOPPING=1` when it begins to unmount. Nothing without `$NOTIFY_SOCKET`.
pub fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    // '@' names a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        log::warn!("cannot notify systemd ({state:?}) at {path:?}: {e}");
    }
}

/// Blocks the termination signals in this thread and every thread it starts, so that one
/// thread can take them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask only
    // changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is a valid, initialised signal set; `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn report_ready(msg: &str) {
    if let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<RawFd>().ok())
    {
        // SAFETY: the parent handed us this pipe fd for exactly this message; we own it now
        // and close it after writing.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = f.write_all(msg.as_bytes());
        std::env::remove_var(READY_FD_ENV);
    }
}

/// A store a live daemon already serves is mounted again the way Linux mounts a block
/// device twice: the new mount point is another view of the same filesystem (a bind mount
/// of the live one, or of one of its containers for `container=`), served by the same
/// daemon, which exits once the last view is unmounted. Returns false when no daemon
/// serves the store.
pub fn mount_another_view(store: &Path, mnt: &Path, opts: &MountOpts) -> Result<bool, CliError> {
    let Ok(canon) = std::fs::canonicalize(store) else {
        return Ok(false);
    };
    let Some(rec) = locate::served(&canon) else {
        return Ok(false);
    };
    let src = match (&rec.container, &opts.container) {
        (None, None) => rec.mountpoint.clone(),
        (Some(a), Some(b)) if a == b => rec.mountpoint.clone(),
        (None, Some(c)) => rec.mountpoint.join(c),
        (Some(a), _) => {
            return Err(mount_err(format!(
                "store {} is mounted at {} showing only container '{a}', so it cannot also be \
                 mounted {}; unmount it first",
                canon.display(),
                rec.mountpoint.display(),
                match &opts.container {
                    Some(c) => format!("with container={c}"),
                    None => "whole".to_string(),
                }
            )))
        }
    };
    if !src.exists() && opts.container.is_some() && !opts.read_only {
        // As for a first mount, `container=` creates the container (mkdir at the root).
        let _ = std::fs::create_dir(&src);
    }
    if !src.is_dir() {
        return Err(mount_err(format!(
            "{} does not exist in the mount of {} at {}",
            src.display(),
            canon.display(),
            rec.mountpoint.display()
        )));
    }
    let target = check_mountpoint(mnt)?;
    bind_mount(&src, &target, opts.read_only && !rec.read_only)?;
    log::info!(
        "{} is served by pid {} at {}; mounted another view at {}",
        canon.display(),
        rec.pid,
        rec.mountpoint.display(),
        target.display()
    );
    Ok(true)
}

/// Threads serving FUSE requests: `threads=N`, else twice the cores within 4..=16.
fn session_threads(opts: &MountOpts) -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    opts.threads.unwrap_or((n * 2).clamp(4, 16))
}

/// `dedupfs mount` in the background: start the daemon and wait for its verdict.
pub fn mount_background(store: &Path, mnt: &Path, opts: &MountOpts) -> Result<(), CliError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe writes two fds into the array we pass.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(CliError::new(
            ExitKind::Failed,
            format!("pipe: {}", std::io::Error::last_os_error()),
        ));
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    let log_path = opts
        .log
        .clone()
        .unwrap_or_else(|| store.join("dedupfs.log"));
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
    }
    .map_err(|e| {
        CliError::new(
            ExitKind::Store,
            format!("cannot open log {}: {e}", log_path.display()),
        )
    })?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(ExitKind::Failed, format!("current_exe: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount").arg(store).arg(mnt).arg("--foreground");
    if !opts.raw.is_empty() {
        cmd.arg("-o").arg(opts.raw.join(","));
    }
    cmd.env(READY_FD_ENV, wfd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| CliError::new(ExitKind::Failed, e.to_string()))?,
        )
        .stderr(log);
    if std::env::var_os("RUST_LOG").is_none() {
        // fuser warns when its own unmount finds the mount already gone (after `umount`).
        cmd.env("RUST_LOG", "info,fuser=error");
    }
    // SAFETY: setsid and fcntl are async-signal-safe and touch only the child's own state.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::close(rfd);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| CliError::new(ExitKind::Failed, format!("cannot start the daemon: {e}")));
    // SAFETY: wfd is our copy of the pipe's write end; the child has its own.
    unsafe { libc::close(wfd) };
    // SAFETY: rfd is the pipe's read end, owned here from now on.
    let mut r = unsafe { std::fs::File::from_raw_fd(rfd) };
    let mut child = child?;
    let mut msg = String::new();
    let _ = r.read_to_string(&mut msg);
    let msg = msg.trim();
    if msg == "ok" {
        return Ok(());
    }
    let status = child.wait();
    if let Some(rest) = msg.strip_prefix("error ") {
        let (code, text) = rest.split_once(' ').unwrap_or(("1", rest));
        return Err(CliError::new(
            ExitKind::from_code(code.parse().unwrap_or(1)),
            text.to_string(),
        ));
    }
    Err(CliError::new(
        ExitKind::Failed,
        format!(
            "the daemon exited before mounting ({}); see {}",
            match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("its status is unknown: {e}"),
            },
            log_path.display()
        ),
    ))
}

/// `dedupfs mount --foreground`: mount and serve until unmounted or signalled.
pub fn mount_foreground(store_path: &Path, mnt: &Path, opts: &MountOpts) -> Result<(), CliError> {
    // `-o log=PATH` in the foreground: the log goes there rather than to stderr (without
    // it, stderr stays, which is what systemd's journal wants). The background parent
    // already pointed our stderr at the same file; opening it again changes nothing.
    // The terminal's stderr comes back before returning, so the final error shows there.
    let mut saved = None;
    let r = (|| {
        if let Some(path) = &opts.log {
            saved = Some(redirect_stderr(path)?);
        }
        serve(store_path, mnt, opts)
    })();
    if let Err(e) = &r {
        report_ready(&format!("error {} {}\n", e.kind.code(), e.message));
        if saved.is_some() {
            log::error!("{}", e.message);
        }
    }
    if let Some(fd) = saved {
        // SAFETY: dup2 of the descriptor redirect_stderr saved (open: we own it) back
        // onto fd 2.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), 2) };
    }
    r
}

/// Points stderr (where the logger writes) at `path`, appending, created private; returns
/// the previous stderr.
fn redirect_stderr(path: &Path) -> Result<std::os::fd::OwnedFd, CliError> {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CliError::new(
                ExitKind::Store,
                format!("cannot open log {}: {e}", path.display()),
            )
        })?;
    let saved = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| CliError::new(ExitKind::Failed, format!("cannot keep stderr: {e}")))?;
    // SAFETY: dup2 of an open descriptor we own onto fd 2; `f` stays valid for the call
    // and fd 2 keeps its own reference after `f` is dropped.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(CliError::new(
            ExitKind::Failed,
            format!(
                "cannot log to {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(saved)
}

/// Keeps daemon memory proportional to live data. glibc otherwise raises its mmap
/// threshold after the first large free and then keeps freed multi-megabyte buffers in
/// per-thread arenas, which grows the resident set with the number of threads. Large
/// buffers that are worth keeping are recycled explicitly (the write-buffer pool).
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// How the daemon opens its store: `cache_size=` bounds the local pack cache of a store
/// with packs in a bucket, and is the chunk cache's older name on a local store.
pub fn store_open_options(
    store_path: &Path,
    opts: &MountOpts,
    purpose: String,
) -> Result<OpenOptions, CliError> {
    let remote = Store::read_config(store_path)
        .map_err(CliError::from_store)?
        .packs
        .is_some();
    let mut open = OpenOptions {
        lock_wait: opts.lock_wait,
        purpose,
        cache_bytes: opts.chunk_cache.unwrap_or(32 << 20),
        ..Default::default()
    };
    match (remote, opts.cache_size) {
        (true, Some(n)) => open.tier.cache_size = n,
        (false, Some(n)) if opts.chunk_cache.is_none() => open.cache_bytes = n as usize,
        _ => {}
    }
    if let Some(n) = opts.upload_backlog {
        open.tier.backlog = n;
    }
    open.tier.wait = opts.upload_wait;
    open.remote.retry_timeout = opts.remote_timeout;
    Ok(open)
}

fn serve(store_path: &Path, mnt: &Path, opts: &MountOpts) -> Result<(), CliError> {
    tune_allocator();
    let sigset = block_signals();
    let mnt = check_mountpoint(mnt)?;
    check_fuse()?;
    // Before anything is opened or mounted: the control socket's directory must be ours.
    let run_dir = locate::ensure_run_dir().map_err(mount_err)?;
    let open = store_open_options(store_path, opts, format!("mounted at {}", mnt.display()))?;
    let store = Arc::new(Store::open(store_path, &open).map_err(CliError::from_store)?);
    let store_root = store.root().to_path_buf();
    // Before anything is mounted: a port already in use fails the mount loudly, rather
    // than leaving a mount nobody can monitor. Stopped with the other holders of the
    // store, before it is closed.
    let metrics = match opts.metrics {
        Some(addr) => Some(
            crate::exporter::start(addr, store.clone())
                .map_err(|e| mount_err(format!("metrics endpoint {addr}: {e}")))?,
        ),
        None => None,
    };
    if let Some(name) = &opts.container {
        if store.registry().by_name(name).is_none() {
            if opts.read_only {
                return Err(mount_err(format!(
                    "container '{name}' does not exist (a read-only mount cannot create it)"
                )));
            }
            dedupfs_core::admin::create_container(
                &store,
                name,
                Default::default(),
                dedupfs_core::containers::RootOwner::default(),
            )
            .map_err(CliError::from_store)?;
        }
    }
    let mut fs_opts = FsOptions {
        read_only: opts.read_only,
        atime: match (opts.noatime, opts.strictatime) {
            (true, _) => dedupfs_core::fs::Atime::Off,
            (false, true) => dedupfs_core::fs::Atime::Strict,
            (false, false) => dedupfs_core::fs::Atime::Relatime,
        },
        ..Default::default()
    };
    if let Some(d) = opts.dirty_limit {
        fs_opts.dirty_limit = d;
    }
    let fs = Arc::new(Fs::new(store.clone(), fs_opts));
    let adapter = DedupFuse::new(
        fs.clone(),
        AdapterOptions {
            attr_ttl: opts.attr_timeout,
            entry_ttl: opts.entry_timeout,
            writeback_cache: opts.writeback && !opts.read_only,
            readdirplus: opts.readdirplus,
            root_container: opts.container.clone(),
            threads: session_threads(opts),
            ..Default::default()
        },
    );
    let known = adapter.known_nodes();
    let shutdown_report = adapter.shutdown_slot();
    let unmount_hook = adapter.unmount_hook_slot();
    let notifier_slot = adapter.notifier_slot();
    let config = fuse_config(opts, &store_root);
    let mount_failed = |e: std::io::Error| {
        mount_err(match e.raw_os_error() {
            Some(libc::EBUSY) => format!("mount point {} is busy", mnt.display()),
            Some(libc::EPERM) | Some(libc::EACCES) => {
                format!("not allowed to mount at {}: {e}", mnt.display())
            }
            _ => format!("mounting at {} failed: {e}", mnt.display()),
        })
    };
    // Mounted here (type fuse.dedupfs) when this process may mount; else by fuser through
    // fusermount3, which sets the subtype itself. auto_unmount needs fusermount3 anyway.
    let own_fd = if opts.auto_unmount {
        None
    } else {
        crate::kmount::mount(&mnt, opts, &opts.fsname_or(&store_root)).map_err(mount_failed)?
    };
    let own_mount = own_fd.is_some();
    let mut session = match own_fd {
        Some(fd) => {
            let acl = config.acl;
            fuser::Session::from_fd(adapter, fd, acl, config).map_err(|e| {
                let _ = crate::kmount::unmount(&mnt);
                mount_failed(e)
            })?
        }
        None => fuser::Session::new(adapter, &mnt, &config).map_err(mount_failed)?,
    };
    let mut unmounter = session.unmount_callable();
    let notifier = session.notifier();
    let _ = notifier_slot.set(session.notifier());

    // Control socket and registry entry, in the run directory only we can reach.
    let sock = locate::socket_path(&store_root);
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ctx = Arc::new(ops::Ctx {
        store: store.clone(),
        fs: Some(fs.clone()),
        notifier: Some(notifier),
        known: Some(known),
        cancel: Some(cancel.clone()),
    });
    let control = match crate::control::bind(&sock)
        .and_then(|l| crate::control::Server::start(l, ctx.clone()))
    {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!(
                "control socket {}: {e}; store commands will not reach this mount",
                sock.display()
            );
            None
        }
    };
    drop(ctx);
    let rec = MountRecord {
        store: store_root.clone(),
        mountpoint: mnt.clone(),
        pid: std::process::id(),
        dev: locate::mount_at(&mnt).map(|m| m.dev).unwrap_or_default(),
        container: opts.container.clone(),
        read_only: opts.read_only,
        started: locate::own_start_time(),
        unmounting: false,
        options: opts.raw.clone(),
    };
    let _ = std::fs::remove_file(locate::exit_report_path(&store_root));
    if let Err(e) = locate::register(&rec) {
        log::warn!("cannot register the mount in {}: {e}", run_dir.display());
    }
    // Once the kernel lets go, the mount's device number is free for the next mount; the
    // record says so before the (possibly long) final flush, so that `dedupfs umount` of
    // that next mount never waits on this daemon or takes its report for its own.
    let unmounting = MountRecord {
        unmounting: true,
        ..rec.clone()
    };
    *unmount_hook.lock() = Some(Box::new(move || {
        // The kernel has let go: the final flush begins.
        notify_systemd("STOPPING=1");
        if let Err(e) = locate::register(&unmounting) {
            log::warn!("cannot mark the mount as unmounting: {e}");
        }
    }));

    // Signals unmount.
    let mnt_sig = mnt.clone();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = wait_signal(&sigset);
            log::info!("signal {sig}: unmounting {}", mnt_sig.display());
            if own_mount {
                if let Err(e) = crate::kmount::unmount(&mnt_sig) {
                    log::error!("cannot unmount {}: {e}", mnt_sig.display());
                }
            } else if let Err(e) = unmounter.unmount() {
                log::warn!("unmount failed ({e}); detaching lazily");
                if let Err(e) = crate::kmount::detach(&mnt_sig) {
                    log::error!("cannot detach {}: {e}", mnt_sig.display());
                }
            }
            // Once unmounting, a second signal (systemd's SIGTERM after a long ExecStop)
            // must not unmount the mount point again: by then it may hold another mount.
            loop {
                let sig = wait_signal(&sigset);
                log::info!("signal {sig}: already unmounting, finishing the final flush");
            }
        });

    let background = Background::start(&store, opts);

    log::info!("{} mounted at {}", store_root.display(), mnt.display());
    report_ready("ok\n");
    notify_systemd(&format!(
        "READY=1\nSTATUS=serving {} at {}",
        store_root.display(),
        mnt.display()
    ));
    let r = session.run();
    // A session that ended on an error may leave our own mount behind (fuser unmounts
    // only what it mounted itself).
    if own_mount && r.is_err() && locate::mount_at(&mnt).is_some_and(|m| m.dev == rec.dev) {
        if let Err(e) = crate::kmount::unmount(&mnt) {
            log::error!(
                "cannot unmount {} after the session failed: {e}",
                mnt.display()
            );
        }
    }
    // The kernel has let go and `destroy` flushed. Stop everything that holds the store,
    // then close it, so RocksDB shuts down cleanly and nothing writes after we report.
    // A GC asked for over the control socket may be waiting out its grace period: it
    // stops (the next run finishes it) rather than holding the unmount up.
    cancel.store(true, std::sync::atomic::Ordering::Release);
    background.stop();
    if let Some(c) = control {
        c.stop();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    locate::unregister(&store_root);
    let mut problems: Vec<String> = shutdown_report.lock().take().into_iter().collect();
    if problems.is_empty() {
        // `destroy` did not run (the session ended otherwise) or flushed everything.
        if let Err(e) = fs.shutdown() {
            problems.push(format!("the final flush failed: {e}"));
        }
    }
    drop(fs);
    // Packs in a bucket: seal, upload and checkpoint, so the bucket alone holds this
    // state. An outage does not fail the unmount (everything is on local disk and the next
    // mount uploads it); the log says what is not in the bucket yet.
    if store.tier().is_some() && !opts.read_only && problems.is_empty() {
        let wait = opts.upload_wait.min(std::time::Duration::from_secs(300));
        match dedupfs_core::store::checkpoint::take(&store, wait) {
            Ok(c) => log::info!("unmount checkpoint {} uploaded", c.key),
            Err(e) => log::error!(
                "unmount checkpoint not uploaded (the data is safe on local disk and goes up \
                 at the next mount): {e}"
            ),
        }
    }
    match Arc::try_unwrap(store) {
        Ok(s) => drop(s),
        Err(s) => {
            problems.push(format!(
                "the store is still in use by {} holders and was not closed cleanly",
                Arc::strong_count(&s) - 1
            ));
        }
    }
    if let Err(e) = &r {
        problems.push(format!("the FUSE session ended with an error: {e}"));
    }
    let report = locate::ExitReport {
        pid: std::process::id(),
        clean: problems.is_empty(),
        message: (!problems.is_empty()).then(|| problems.join("; ")),
    };
    let path = locate::exit_report_path(&store_root);
    if let Err(e) = std::fs::write(&path, serde_json::to_vec(&report).unwrap_or_default()) {
        log::warn!("cannot leave the unmount report at {}: {e}", path.display());
    }
    match report.message {
        None => {
            log::info!("{} unmounted; the store is closed", mnt.display());
            Ok(())
        }
        Some(m) => {
            log::error!("{} unmounted, but {m}", mnt.display());
            Err(CliError::new(
                ExitKind::Failed,
                format!("unmounted, but {m}"),
            ))
        }
    }
}

fn fuse_config(opts: &MountOpts, store_root: &Path) -> fuser::Config {
    use fuser::MountOption as M;
    let mut mo = vec![M::FSName(opts.fsname_or(store_root)), M::DefaultPermissions];
    if let Some(s) = opts.fs_subtype() {
        mo.push(M::Subtype(s.to_string()));
    }
    if opts.read_only {
        mo.push(M::RO);
    }
    mo.push(if opts.dev { M::Dev } else { M::NoDev });
    mo.push(if opts.suid { M::Suid } else { M::NoSuid });
    mo.push(if opts.exec { M::Exec } else { M::NoExec });
    if opts.noatime {
        mo.push(M::NoAtime);
    }
    if opts.sync {
        mo.push(M::Sync);
    }
    if opts.dirsync {
        mo.push(M::DirSync);
    }
    if opts.auto_unmount {
        mo.push(M::AutoUnmount);
    }
    let mut c = fuser::Config::default();
    c.mount_options = mo;
    c.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else if opts.allow_root || opts.auto_unmount {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    c.n_threads = Some(session_threads(opts));
    c.clone_fd = true;
    c
}
