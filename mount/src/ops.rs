//! Store commands (containers, stats, sync) executed against an open store, by the CLI
//! directly or by the daemon on the CLI's behalf. Results are JSON values that the CLI
//! prints as text or passes through with `--json`.

use dedupfs_core::admin::{self, SettingsChange};
use dedupfs_core::chunks::Compression;
use dedupfs_core::containers::{ContainerError, ContainerSettings, RootOwner};
use dedupfs_core::fs::Fs;
use dedupfs_core::ids::ContainerId;
use dedupfs_core::stats;
use dedupfs_core::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the CLI asks for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    Stats {
        container: Option<String>,
    },
    ContainerCreate {
        name: String,
        compression: Option<String>,
    },
    ContainerList,
    ContainerShow {
        name: String,
    },
    ContainerSet {
        name: String,
        compression: Option<String>,
    },
    ContainerDelete {
        name: String,
        force: bool,
    },
    Sync,
}

/// A step of a long operation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Progress {
    pub what: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// Kinds of failure, which decide the CLI's exit code.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Exists,
    Invalid,
    Busy,
    Store,
    Io,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn io(message: String) -> OpError {
        OpError {
            kind: ErrorKind::Io,
            message,
        }
    }
    pub fn invalid(message: String) -> OpError {
        OpError {
            kind: ErrorKind::Invalid,
            message,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::Container(ContainerError::NotFound(_)) => ErrorKind::NotFound,
            StoreError::Container(ContainerError::Exists(_)) => ErrorKind::Exists,
            StoreError::Container(ContainerError::InvalidName { .. }) => ErrorKind::Invalid,
            StoreError::Container(ContainerError::Busy { .. })
            | StoreError::Container(ContainerError::NotEmpty { .. }) => ErrorKind::Busy,
            StoreError::NotFound(_)
            | StoreError::NotAStore(_)
            | StoreError::NewerFormat { .. }
            | StoreError::BadConfig { .. }
            | StoreError::NotEmpty { .. }
            | StoreError::AlreadyAStore { .. }
            | StoreError::Locked { .. } => ErrorKind::Store,
            _ => ErrorKind::Io,
        };
        OpError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<ContainerError> for OpError {
    fn from(e: ContainerError) -> Self {
        StoreError::from(e).into()
    }
}

/// What a request runs against.
pub struct Ctx {
    pub store: Arc<Store>,
    /// Present when mounted: open files matter and the kernel's caches must be told.
    pub fs: Option<Arc<Fs>>,
    pub notifier: Option<fuser::Notifier>,
}

impl Ctx {
    fn invalidate_root_entry(&self, name: &str) {
        if let Some(n) = &self.notifier {
            let _ = n.inval_entry(fuser::INodeNo(1), std::ffi::OsStr::new(name));
        }
    }
}

fn compression(s: &Option<String>) -> Result<Option<Compression>, OpError> {
    s.as_deref()
        .map(|c| c.parse::<Compression>().map_err(OpError::invalid))
        .transpose()
}

fn show(store: &Store, name: &str) -> Result<serde_json::Value, OpError> {
    let ci = store
        .registry()
        .by_name(name)
        .ok_or_else(|| ContainerError::NotFound(name.into()))?;
    let st = stats::container_stats(store, ci.id());
    Ok(serde_json::json!({
        "name": ci.rec.name,
        "id": ci.rec.id,
        "created": ci.rec.created,
        "settings": ci.rec.settings,
        "stats": st,
    }))
}

pub fn execute(
    ctx: &Ctx,
    req: Request,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
    match req {
        Request::Ping => Ok(serde_json::json!({ "store": store.root() })),
        Request::Sync => {
            if let Some(fs) = &ctx.fs {
                fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
            }
            store.sync()?;
            Ok(serde_json::json!({}))
        }
        Request::Stats { container } => {
            // Figures describe committed data: commit what is buffered first.
            if let Some(fs) = &ctx.fs {
                fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
            }
            match container {
                Some(name) => {
                    let ci = store
                        .registry()
                        .by_name(&name)
                        .ok_or_else(|| ContainerError::NotFound(name.clone()))?;
                    Ok(serde_json::to_value(stats::container_stats(store, ci.id()))
                        .unwrap_or_default())
                }
                None => Ok(serde_json::to_value(stats::store_stats(store)?).unwrap_or_default()),
            }
        }
        Request::ContainerCreate {
            name,
            compression: c,
        } => {
            let settings = ContainerSettings {
                compression: compression(&c)?.unwrap_or_default(),
            };
            admin::create_container(store, &name, settings, RootOwner::default())?;
            ctx.invalidate_root_entry(&name);
            show(store, &name)
        }
        Request::ContainerList => {
            let list: Vec<serde_json::Value> = store
                .registry()
                .list()
                .iter()
                .map(|ci| {
                    serde_json::json!({
                        "name": ci.rec.name,
                        "id": ci.rec.id,
                        "settings": ci.rec.settings,
                        "stats": stats::container_stats(store, ci.id()),
                    })
                })
                .collect();
            Ok(serde_json::Value::Array(list))
        }
        Request::ContainerShow { name } => show(store, &name),
        Request::ContainerSet {
            name,
            compression: c,
        } => {
            let change = SettingsChange {
                compression: compression(&c)?,
            };
            admin::set_container(store, &name, &change)?;
            show(store, &name)
        }
        Request::ContainerDelete { name, force } => {
            let ci = store
                .registry()
                .by_name(&name)
                .ok_or_else(|| ContainerError::NotFound(name.clone()))?;
            let files = store.committer.container_counters(ci.id()).files;
            if files > 0 && !force {
                return Err(OpError {
                    kind: ErrorKind::Busy,
                    message: format!("container '{name}' holds {files} files; pass --force to delete it with its data"),
                });
            }
            if let Some(fs) = &ctx.fs {
                let open = fs.open_handles_in(ContainerId(ci.rec.id));
                if open > 0 {
                    return Err(OpError {
                        kind: ErrorKind::Busy,
                        message: format!("container '{name}' has {open} open files or directories; close them first"),
                    });
                }
                fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
            }
            admin::delete_container(store, &name, true, &mut |n| {
                progress(&Progress {
                    what: format!("deleting '{name}' (extent records released)"),
                    done: n,
                    total: None,
                })
            })?;
            ctx.invalidate_root_entry(&name);
            Ok(serde_json::json!({ "deleted": name }))
        }
    }
}
