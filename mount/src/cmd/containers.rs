//! `dedupfs container create|list|show|set|delete`: each one request to the store, its
//! answer printed with the typed printers of [`crate::print::stats`].
//!
//! Invariant: `container set` without a setting is refused here, before the store is
//! asked, so a no-op never reaches (or waits on) the daemon.

use super::common::{resolve_store, show_as, store_cmd};
use crate::cli::ContainerCmd;
use crate::ops::Request;
use crate::print::stats;
use crate::CliError;
use std::path::PathBuf;

pub fn run(c: ContainerCmd, store: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    match c {
        ContainerCmd::Create {
            name,
            compression,
            lock,
            lock_for,
        } => {
            let v = store_cmd(
                &store,
                Request::ContainerCreate {
                    name,
                    compression: Some(compression),
                    lock,
                    lock_for,
                },
                "container create",
            )?;
            show_as(v, "container create", json, stats::container)?;
        }
        ContainerCmd::Promote { name } => super::replicate::promote(&store, name, json)?,
        ContainerCmd::List => {
            let v = store_cmd(&store, Request::ContainerList, "container list")?;
            show_as(v, "container list", json, |l: &Vec<_>| stats::list(l))?;
        }
        ContainerCmd::Show { name } => show_as(
            store_cmd(&store, Request::ContainerShow { name }, "container show")?,
            "container show",
            json,
            stats::container,
        )?,
        ContainerCmd::Set {
            name,
            compression,
            retention,
            lock,
            lock_for,
            bypass_governance,
        } => {
            if compression.is_none() && retention.is_none() && lock.is_none() && lock_for.is_none()
            {
                return Err(CliError::usage(
                    "container set needs a setting to change (e.g. --compression zstd:3)".into(),
                ));
            }
            show_as(
                store_cmd(
                    &store,
                    Request::ContainerSet {
                        name,
                        compression,
                        retention,
                        lock,
                        lock_for,
                        bypass_governance,
                    },
                    "container set",
                )?,
                "container set",
                json,
                stats::container,
            )?
        }
        ContainerCmd::Delete {
            name,
            force,
            bypass_governance,
        } => {
            let v = store_cmd(
                &store,
                Request::ContainerDelete {
                    name: name.clone(),
                    force,
                    bypass_governance,
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
