//! The `dedupfs` command.

mod adapter;
mod cli;
mod control;
mod daemon;
mod errno;
mod exporter;
mod fuse;
mod helper;
mod history;
mod install;
mod kmount;
mod locate;
mod maint;
mod metrics_http;
mod ops;
mod options;
mod output;
mod protocol;
mod report;
mod status;
mod watch;

use clap::Parser;
use cli::{BookmarkCmd, Cli, Cmd, ContainerCmd, RetentionCmd, SnapshotCmd};
use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::store::{InitOptions, OpenOptions, Store, StoreError};
use ops::{ErrorKind, OpError, Request};
use options::{parse_size, MountOpts};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the command failed, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Failed,
    Usage,
    Store,
    Mount,
    NotFound,
    Denied,
}

impl ExitKind {
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Failed => 1,
            ExitKind::Usage => 2,
            ExitKind::Store => 3,
            ExitKind::Mount => 4,
            ExitKind::NotFound => 5,
            ExitKind::Denied => 6,
        }
    }
    pub fn from_code(c: i32) -> ExitKind {
        match c {
            2 => ExitKind::Usage,
            3 => ExitKind::Store,
            4 => ExitKind::Mount,
            5 => ExitKind::NotFound,
            6 => ExitKind::Denied,
            _ => ExitKind::Failed,
        }
    }
}

#[derive(Debug)]
pub struct CliError {
    pub kind: ExitKind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: ExitKind, message: String) -> CliError {
        CliError { kind, message }
    }
    pub fn usage(message: String) -> CliError {
        CliError::new(ExitKind::Usage, message)
    }
    pub fn from_store(e: StoreError) -> CliError {
        CliError::from_op(OpError::from(e))
    }
    pub fn from_op(e: OpError) -> CliError {
        let kind = match e.kind {
            ErrorKind::NotFound => ExitKind::NotFound,
            ErrorKind::Invalid => ExitKind::Usage,
            ErrorKind::Store => ExitKind::Store,
            ErrorKind::Denied => ExitKind::Denied,
            ErrorKind::Exists | ErrorKind::Busy | ErrorKind::Io => ExitKind::Failed,
        };
        CliError::new(kind, e.message)
    }
}

fn main() {
    // Die quietly on a closed pipe (`dedupfs stats | head`), as Unix tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "mount.fuse.dedupfs")
    {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        std::process::exit(helper::run(&args.collect::<Vec<_>>()));
    }
    let cli = Cli::parse();
    let default_level = match &cli.cmd {
        Cmd::Mount(m) if m.foreground => "info,fuser=error",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    let json = cli.json;
    if let Err(e) = run(cli) {
        if json {
            println!(
                "{}",
                serde_json::json!({ "error": { "code": e.kind.code(), "message": e.message } })
            );
        } else {
            eprintln!("dedupfs: error: {}", e.message);
        }
        std::process::exit(e.kind.code());
    }
}

fn chunk_size(name: &str, v: &str) -> Result<u32, CliError> {
    let n = parse_size(v).map_err(|e| CliError::usage(format!("--{name}: {e}")))?;
    u32::try_from(n).map_err(|_| CliError::usage(format!("--{name}: {v} is too large")))
}

fn run(cli: Cli) -> Result<(), CliError> {
    if !matches!(cli.cmd, Cmd::Install { .. } | Cmd::Completions { .. }) {
        // Everything this process creates in a store, its run directory and its log is
        // for its user alone (RocksDB creates its files 0644 minus the umask).
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe { libc::umask(0o077) };
    }
    match cli.cmd {
        Cmd::Init(a) => {
            let opts = InitOptions {
                chunking: ChunkParams {
                    min: chunk_size("chunk-min", &a.chunk_min)?,
                    avg: chunk_size("chunk-avg", &a.chunk_avg)?,
                    max: chunk_size("chunk-max", &a.chunk_max)?,
                },
                pack_target_size: parse_size(&a.pack_size)
                    .map_err(|e| CliError::usage(format!("--pack-size: {e}")))?,
                verify_dedup: a.verify_dedup,
            };
            let cfg = Store::init(&a.store, &opts).map_err(|e| match e {
                StoreError::BadConfig { reason, .. } => CliError::usage(reason),
                other => CliError::from_store(other),
            })?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "store": a.store, "format": cfg.format, "chunking": cfg.chunking })
                );
            } else {
                println!(
                    "initialized dedupfs store {} (chunks {}/{}/{} min/avg/max)",
                    a.store.display(),
                    output::size(cfg.chunking.min as u64),
                    output::size(cfg.chunking.avg as u64),
                    output::size(cfg.chunking.max as u64)
                );
            }
            Ok(())
        }
        Cmd::Mount(m) => {
            let opts = MountOpts::parse(&m.options).map_err(CliError::usage)?;
            let store = m
                .store
                .clone()
                .or(opts.source.clone())
                .ok_or_else(|| CliError::usage("mount needs STORE and MOUNTPOINT".into()))?;
            let mnt = m
                .mountpoint
                .clone()
                .ok_or_else(|| CliError::usage("mount needs a MOUNTPOINT".into()))?;
            // Fail fast, in the caller's terminal, on what can be checked before forking.
            let store = std::fs::canonicalize(&store)
                .map_err(|_| CliError::from_store(StoreError::NotFound(store.clone())))?;
            Store::read_config(&store).map_err(CliError::from_store)?;
            daemon::clear_own_dead_mount(&store, &mnt)?;
            daemon::check_mountpoint(&mnt)?;
            daemon::check_fuse()?;
            if m.foreground {
                // A foreground mount is a daemon (systemd's Type=notify waits for it to
                // serve); a second view of a served store would exit at once instead.
                if let Some(r) = locate::mounts().into_iter().find(|r| r.store == store) {
                    return Err(CliError::new(
                        ExitKind::Store,
                        format!(
                            "{} is already served by daemon {} at {}; a foreground mount would \
                             not serve it (mount without -f to add a view of that mount)",
                            store.display(),
                            r.pid,
                            r.mountpoint.display()
                        ),
                    ));
                }
            }
            if daemon::mount_another_view(&store, &mnt, &opts)? {
                return Ok(());
            }
            if let Some(holder) = dedupfs_core::store::lock::holder(&store) {
                if opts.lock_wait.is_zero() {
                    return Err(CliError::from_store(StoreError::Locked {
                        path: store,
                        holder,
                    }));
                }
            }
            if m.foreground {
                daemon::mount_foreground(&store, &mnt, &opts)
            } else {
                daemon::mount_background(&store, &mnt, &opts)
            }
        }
        Cmd::Umount {
            mountpoint,
            lazy,
            timeout,
        } => daemon::umount(&mountpoint, lazy, timeout),
        Cmd::Completions { shell } => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&install::completions(shell))
                .map_err(|e| CliError::new(ExitKind::Failed, format!("stdout: {e}")))
        }
        Cmd::Install {
            prefix,
            sbin,
            systemd_dir,
            no_systemd,
        } => {
            let layout = install::Layout {
                prefix,
                sbin,
                systemd: (!no_systemd).then_some(systemd_dir),
            };
            let done = install::install(&layout).map_err(|e| CliError::new(ExitKind::Failed, e))?;
            if cli.json {
                println!("{}", serde_json::json!({ "done": done }));
            } else {
                for d in done {
                    println!("{d}");
                }
            }
            Ok(())
        }
        Cmd::Container(c) => {
            let json = cli.json;
            let store = resolve_store(cli.store)?;
            match c {
                ContainerCmd::Create { name, compression } => {
                    let v = store_cmd(
                        &store,
                        Request::ContainerCreate {
                            name,
                            compression: Some(compression),
                        },
                        "container create",
                    )?;
                    show_as(v, "container create", json, report::container)?;
                }
                ContainerCmd::List => {
                    let v = store_cmd(&store, Request::ContainerList, "container list")?;
                    show_as(v, "container list", json, |l: &Vec<_>| report::list(l))?;
                }
                ContainerCmd::Show { name } => show_as(
                    store_cmd(&store, Request::ContainerShow { name }, "container show")?,
                    "container show",
                    json,
                    report::container,
                )?,
                ContainerCmd::Set {
                    name,
                    compression,
                    retention,
                } => {
                    if compression.is_none() && retention.is_none() {
                        return Err(CliError::usage(
                            "container set needs a setting to change (e.g. --compression zstd:3)"
                                .into(),
                        ));
                    }
                    show_as(
                        store_cmd(
                            &store,
                            Request::ContainerSet {
                                name,
                                compression,
                                retention,
                            },
                            "container set",
                        )?,
                        "container set",
                        json,
                        report::container,
                    )?
                }
                ContainerCmd::Delete { name, force } => {
                    let v = store_cmd(
                        &store,
                        Request::ContainerDelete {
                            name: name.clone(),
                            force,
                        },
                        "container delete",
                    )?;
                    if json {
                        println!("{v}");
                    } else {
                        println!("deleted container '{name}'");
                    }
                }
            }
            Ok(())
        }
        Cmd::Bookmark(b) => {
            let store = resolve_store(cli.store)?;
            let (req, what) = match b {
                BookmarkCmd::Create {
                    container,
                    name,
                    kind,
                } => (
                    Request::BookmarkCreate {
                        container,
                        name,
                        kind,
                    },
                    "bookmark create",
                ),
                BookmarkCmd::List { container } => {
                    (Request::BookmarkList { container }, "bookmark list")
                }
                BookmarkCmd::Delete { container, name } => (
                    Request::BookmarkDelete { container, name },
                    "bookmark delete",
                ),
            };
            let v = store_cmd(&store, req, what)?;
            history::print(&v, what, cli.json);
            Ok(())
        }
        Cmd::Snapshot(sc) => {
            let store = resolve_store(cli.store)?;
            let (req, what) = match sc {
                SnapshotCmd::Mount { name, mountpoint } => {
                    let rec = store_cmd(
                        &store,
                        Request::SnapshotShow { name: name.clone() },
                        "snapshot show",
                    )?;
                    let read_only = rec.get("mode").and_then(|m| m.as_str()) == Some("ro");
                    return history::mount_snapshot(&store, &name, &mountpoint, read_only);
                }
                SnapshotCmd::Create {
                    container,
                    name,
                    mode,
                    at,
                    no_flush,
                } => {
                    if !no_flush && at.is_none() {
                        history::sync_mount(&store);
                    }
                    (
                        Request::SnapshotCreate {
                            container,
                            name,
                            mode,
                            at: at.map(|a| to_instant(&a)),
                            no_flush,
                        },
                        "snapshot create",
                    )
                }
                SnapshotCmd::List { container } => {
                    (Request::SnapshotList { container }, "snapshot list")
                }
                SnapshotCmd::Show { name } => (Request::SnapshotShow { name }, "snapshot show"),
                SnapshotCmd::Delete { name } => {
                    (Request::SnapshotDelete { name }, "snapshot delete")
                }
                SnapshotCmd::Changes { name } => {
                    history::sync_mount(&store);
                    (Request::SnapshotChanges { name }, "snapshot changes")
                }
                SnapshotCmd::Apply { name, onto, force } => {
                    history::sync_mount(&store);
                    (
                        Request::SnapshotApply { name, onto, force },
                        "snapshot apply",
                    )
                }
            };
            let v = store_cmd(&store, req, what)?;
            history::print(&v, what, cli.json);
            // A conflict is a failure the caller must see.
            if what == "snapshot apply"
                && v.get("conflicts")
                    .and_then(|c| c.as_array())
                    .is_some_and(|c| !c.is_empty())
            {
                return Err(CliError::new(
                    ExitKind::Failed,
                    "some changes conflicted with the target and were not applied".into(),
                ));
            }
            Ok(())
        }
        Cmd::Rollback {
            container,
            to,
            dry_run,
        } => {
            let store = resolve_store(cli.store)?;
            history::sync_mount(&store);
            let v = store_cmd(
                &store,
                Request::Rollback {
                    container,
                    to: to_instant(&to),
                    dry_run,
                },
                "rollback",
            )?;
            history::print(&v, "rollback", cli.json);
            Ok(())
        }
        Cmd::Retention(r) => {
            let store = resolve_store(cli.store)?;
            let (req, what) = match r {
                RetentionCmd::Show { container } => {
                    (Request::RetentionShow { container }, "retention show")
                }
                RetentionCmd::Prune { container } => {
                    (Request::RetentionPrune { container }, "retention prune")
                }
            };
            let v = store_cmd(&store, req, what)?;
            history::print(&v, what, cli.json);
            Ok(())
        }
        Cmd::Gc {
            path,
            dry_run,
            grace,
            min_reclaim,
            verbose,
        } => {
            let store = resolve_store(path.or(cli.store))?;
            let v = store_cmd(
                &store,
                Request::Gc {
                    dry_run,
                    grace_secs: grace,
                    min_reclaim,
                },
                "gc",
            )?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                maint::print_gc(&v, verbose || dry_run);
            }
            Ok(())
        }
        Cmd::Fsck {
            path,
            scrub,
            repair,
        } => {
            let store = resolve_store(path.or(cli.store))?;
            let v = store_cmd(&store, Request::Fsck { scrub, repair }, "fsck")?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                maint::print_fsck(&v);
            }
            let left = num(&v, "unrepaired");
            if left > 0 {
                if cli.json {
                    std::process::exit(ExitKind::Failed.code());
                }
                return Err(CliError::new(
                    ExitKind::Failed,
                    format!("fsck found {left} problem(s) it could not repair"),
                ));
            }
            Ok(())
        }
        Cmd::Status => {
            // With --store (or $DEDUPFS_STORE), only that store; else every mounted one.
            let only = match cli.store.is_some() || std::env::var_os("DEDUPFS_STORE").is_some() {
                true => Some(resolve_store(cli.store)?),
                false => None,
            };
            status::run(only.as_deref(), cli.json)
        }
        Cmd::Sync => {
            let store = resolve_store(cli.store)?;
            history::sync_mount(&store);
            let v = store_cmd(&store, Request::Sync, "sync")?;
            if cli.json {
                println!("{v}");
            }
            Ok(())
        }
        Cmd::Stats { container, watch } => {
            let store = resolve_store(cli.store)?;
            if let Some(every) = watch {
                return watch::run(&store, container, every, cli.json);
            }
            let v = store_cmd(
                &store,
                Request::Stats {
                    container: container.clone(),
                    no_flush: false,
                },
                "stats",
            )?;
            match container {
                Some(_) => show_as(v, "stats", cli.json, report::container_stats),
                None => show_as(v, "stats", cli.json, report::store),
            }
        }
    }
}

/// A time the user typed, as the instant it means in this process's zone and clock
/// (the daemon's zone may differ); names of bookmarks and snapshots pass unchanged (they
/// can never read as times: `validate_point_name`).
fn to_instant(spec: &str) -> String {
    dedupfs_core::points::to_instant(spec, dedupfs_core::records::Timestamp::now())
}

/// Which store a command means: --store (a store or a mount point), $DEDUPFS_STORE, or
/// the only mounted store.
fn resolve_store(arg: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let arg = arg.or_else(|| {
        std::env::var_os("DEDUPFS_STORE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    match arg {
        Some(p) => {
            // statfs always reaches a FUSE daemon (attributes may be cached by the kernel).
            if helper::is_dead_mount(&p) {
                return Err(CliError::new(
                    ExitKind::Mount,
                    format!(
                        "{} is a dead dedupfs mount (its daemon is gone): `umount {}`, \
                         then mount the store again",
                        p.display(),
                        p.display()
                    ),
                ));
            }
            match std::fs::metadata(&p) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                    return Err(CliError::new(
                        ExitKind::Mount,
                        format!(
                            "{} is a dead dedupfs mount (its daemon is gone): `umount {}`, \
                             then mount the store again",
                            p.display(),
                            p.display()
                        ),
                    ))
                }
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
            // A second view (a bind mount, a second `dedupfs mount` of the store) shares
            // the daemon's device number.
            if let Some(view) = locate::mount_at(&canon).filter(|m| m.mountpoint == canon) {
                if let Some(m) = mounts
                    .iter()
                    .find(|m| !m.dev.is_empty() && m.dev == view.dev)
                {
                    return Ok(m.store.clone());
                }
            }
            // Someone else's dedupfs mount: say so, rather than "not a store".
            if let Some(m) = locate::mount_at(&canon).filter(|m| m.mountpoint == canon) {
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
fn store_cmd(store: &Path, req: Request, what: &str) -> Result<serde_json::Value, CliError> {
    let pb = output::progress(what);
    let mut on_progress = |p: &ops::Progress| {
        if pb.message() != p.what {
            pb.set_message(p.what.clone());
            pb.reset_eta();
        }
        pb.set_length(p.total.unwrap_or(0).max(p.done));
        pb.set_position(p.done);
    };
    let r = if let Some(conn) = control::connect(store) {
        control::call(conn, &req, &mut on_progress).map_err(CliError::from_op)
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
        };
        ops::execute(&ctx, req, &mut on_progress).map_err(CliError::from_op)
    };
    pb.finish_and_clear();
    r
}

/// Prints an answer: as it came with `--json`, else decoded into its type for a person.
fn show_as<T: serde::de::DeserializeOwned>(
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

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}
