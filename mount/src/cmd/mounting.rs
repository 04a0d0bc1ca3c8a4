//! Commands that set a store up and make it reachable: `init`, `mount` (its checks up to
//! the fork; the daemon itself is [`crate::daemon`]), `install`, `completions` and
//! `status`. (`umount` is [`crate::unmount`], called from the dispatch.)
//!
//! Invariant: `mount` checks in the caller's terminal whatever can be checked before it
//! forks a daemon (the store, the mount point, FUSE, the store lock), so a mistake is
//! reported there with its exit code rather than only in the daemon's log.

use super::common::{named_store, resolve_store};
use crate::cli::{InitArgs, MountArgs};
use crate::options::{parse_size, MountOpts};
use crate::{daemon, install, locate, mountpoint, output, status, CliError, ExitKind};
use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::pack::remote::RemoteSpec;
use dedupfs_core::store::{InitOptions, Store, StoreError};
use std::path::PathBuf;

fn chunk_size(name: &str, v: &str) -> Result<u32, CliError> {
    let n = parse_size(v).map_err(|e| CliError::usage(format!("--{name}: {e}")))?;
    u32::try_from(n).map_err(|_| CliError::usage(format!("--{name}: {v} is too large")))
}

fn remote_spec(url: &str, a: &InitArgs) -> Result<RemoteSpec, CliError> {
    let endpoint = a.s3_endpoint.clone().or_else(|| {
        std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let spec = RemoteSpec {
        url: url.to_string(),
        endpoint,
        region: a.s3_region.clone(),
    };
    spec.bucket_and_prefix()
        .map_err(|e| CliError::usage(e.to_string()))?;
    Ok(spec)
}

/// `dedupfs init --recover-from URL`.
fn recover(a: &InitArgs, url: &str, json: bool) -> Result<(), CliError> {
    let spec = remote_spec(url, a)?;
    let r =
        dedupfs_core::store::checkpoint::recover(&a.store, &spec).map_err(CliError::from_store)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "store": a.store, "recovered": r }))
                .unwrap_or_default()
        );
    } else {
        println!(
            "recovered store {} from {url}: metadata as of {} (store version {}), {} packs ({}) in the bucket",
            a.store.display(),
            dedupfs_core::points::format_time(r.checkpoint.at),
            r.checkpoint.version,
            r.packs_in_bucket,
            output::size(r.bytes_in_bucket)
        );
        println!(
            "  changes made after {} are not in this copy",
            dedupfs_core::points::format_time(r.checkpoint.at)
        );
    }
    if !r.missing_packs.is_empty() {
        return Err(CliError::new(
            ExitKind::Store,
            format!(
                "the recovered metadata names {} packs the bucket does not hold ({:?});                  `dedupfs fsck` lists the files affected",
                r.missing_packs.len(),
                r.missing_packs
            ),
        ));
    }
    Ok(())
}

/// `dedupfs init`.
pub fn init(a: InitArgs, json: bool) -> Result<(), CliError> {
    if let Some(url) = a.recover_from.clone() {
        return recover(&a, &url, json);
    }
    let packs = match &a.packs {
        None => None,
        Some(url) => Some(remote_spec(url, &a)?),
    };
    let like = match &a.like {
        None => None,
        Some(src) => Some(Store::read_config(src).map_err(CliError::from_store)?),
    };
    let mut opts = InitOptions {
        chunking: ChunkParams {
            min: chunk_size("chunk-min", &a.chunk_min)?,
            avg: chunk_size("chunk-avg", &a.chunk_avg)?,
            max: chunk_size("chunk-max", &a.chunk_max)?,
        },
        pack_target_size: parse_size(&a.pack_size)
            .map_err(|e| CliError::usage(format!("--pack-size: {e}")))?,
        verify_dedup: a.verify_dedup,
        gear_seed: None,
        packs,
    };
    if let Some(src) = like {
        opts.chunking = src.chunking;
        opts.gear_seed = Some(src.gear_seed);
    }
    let cfg = Store::init(&a.store, &opts).map_err(|e| match e {
        StoreError::BadConfig { reason, .. } => CliError::usage(reason),
        other => CliError::from_store(other),
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "store": a.store, "format": cfg.format, "chunking": cfg.chunking,
                "packs": cfg.packs.as_ref().map(|p| &p.url) })
        );
    } else {
        println!(
            "initialized dedupfs store {} (chunks {}/{}/{} min/avg/max)",
            a.store.display(),
            output::size(cfg.chunking.min as u64),
            output::size(cfg.chunking.avg as u64),
            output::size(cfg.chunking.max as u64)
        );
        if let Some(p) = &cfg.packs {
            println!(
                "  packs go to {} once sealed; metadata stays here, checkpointed there",
                p.url
            );
        }
    }
    Ok(())
}

/// `dedupfs mount`: checks, then another view of a served store, or a new daemon.
pub fn mount(m: MountArgs) -> Result<(), CliError> {
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
    mountpoint::clear_own_dead_mount(&store, &mnt)?;
    mountpoint::check_mountpoint(&mnt)?;
    mountpoint::check_fuse()?;
    if m.foreground {
        // A foreground mount is a daemon (systemd's Type=notify waits for it to
        // serve); a second view of a served store would exit at once instead.
        if let Some(r) = locate::served(&store) {
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

/// `dedupfs completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    use std::io::Write;
    std::io::stdout()
        .write_all(&install::completions(shell))
        .map_err(|e| CliError::new(ExitKind::Failed, format!("stdout: {e}")))
}

/// `dedupfs install`.
pub fn install(layout: install::Layout, json: bool) -> Result<(), CliError> {
    let done = install::install(&layout).map_err(|e| CliError::new(ExitKind::Failed, e))?;
    if json {
        println!("{}", serde_json::json!({ "done": done }));
    } else {
        for d in done {
            println!("{d}");
        }
    }
    Ok(())
}

/// `dedupfs status`.
pub fn status(store: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    // With --store (or $DEDUPFS_STORE), only that store; else every mounted one.
    let only = match named_store(store) {
        Some(s) => Some(resolve_store(Some(s))?),
        None => None,
    };
    status::run(only.as_deref(), json)
}
