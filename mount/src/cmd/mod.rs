//! The CLI's commands: [`run`] hands each parsed command to the module of its group —
//! [`mounting`] (init, mount, install, completions, status; `umount` is `crate::unmount`),
//! [`containers`],
//! [`history`] (bookmark, snapshot, rollback, retention) and [`maint`] (gc, fsck, sync,
//! stats) — which share the helpers of [`common`] (which store is meant, running a
//! request through the daemon or on the store, printing an answer).
//!
//! Invariants: every store command goes through [`store_cmd`], so it means the same
//! whether the store is mounted (the daemon runs it) or not (this process opens the
//! store); a command's output and exit code do not depend on which of the two ran it.

mod common;
mod containers;
mod history;
mod maint;
mod mounting;
mod replicate;

use crate::cli::{Cli, Cmd};
use crate::CliError;

pub fn run(cli: Cli) -> Result<(), CliError> {
    if !matches!(cli.cmd, Cmd::Install { .. } | Cmd::Completions { .. }) {
        // Everything this process creates in a store, its run directory and its log is
        // for its user alone (RocksDB creates its files 0644 minus the umask).
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe { libc::umask(0o077) };
    }
    let (json, store) = (cli.json, cli.store);
    match cli.cmd {
        Cmd::Init(a) => mounting::init(a, json),
        Cmd::Mount(m) => mounting::mount(m),
        Cmd::Umount {
            mountpoint,
            lazy,
            timeout,
        } => crate::unmount::umount(&mountpoint, lazy, timeout),
        Cmd::Completions { shell } => mounting::completions(shell),
        Cmd::Install {
            prefix,
            sbin,
            systemd_dir,
            no_systemd,
        } => mounting::install(
            crate::install::Layout {
                prefix,
                sbin,
                systemd: (!no_systemd).then_some(systemd_dir),
            },
            json,
        ),
        Cmd::Status => mounting::status(store, json),
        Cmd::Container(c) => containers::run(c, store, json),
        Cmd::Replicate {
            container,
            to,
            as_name,
            bwlimit,
            failback,
            remote_cmd,
            verify,
        } => replicate::replicate(
            store,
            container,
            to,
            replicate::Options {
                as_name,
                bwlimit,
                failback,
                remote_cmd,
                verify,
            },
            json,
        ),
        Cmd::Send {
            container,
            as_name,
            since,
            bwlimit,
        } => replicate::send_cmd(store, container, as_name, since, bwlimit, json),
        Cmd::Receive {
            path,
            container,
            abort,
        } => replicate::receive_cmd(store, path, container, abort, json),
        Cmd::Serve => replicate::serve(store),
        Cmd::Bookmark(b) => history::bookmark(b, store, json),
        Cmd::Snapshot(s) => history::snapshot(s, store, json),
        Cmd::Rollback {
            container,
            to,
            dry_run,
        } => history::rollback(container, &to, dry_run, store, json),
        Cmd::Retention(r) => history::retention(r, store, json),
        Cmd::Gc {
            path,
            dry_run,
            grace,
            min_reclaim,
            verbose,
        } => maint::gc(path.or(store), dry_run, grace, min_reclaim, verbose, json),
        Cmd::Fsck {
            path,
            scrub,
            repair,
        } => maint::fsck(path.or(store), scrub, repair, json),
        Cmd::Sync => maint::sync(store, json),
        Cmd::Checkpoint { path, wait } => maint::checkpoint(path.or(store), wait, json),
        Cmd::Stats { container, watch } => maint::stats(store, container, watch, json),
    }
}
