//! The Prometheus exporter of a mounted store (`-o metrics=ADDR`): what a scrape shows.
//!
//! Owns the store-level gauges — per container logical, unique, stored bytes and files,
//! ratios, retention window; store-wide physical, pack and metadata bytes, reclaimable
//! bytes, GC's last run, free space, halted — rendered after the process-wide counters
//! and histograms of `dedupfs_core::metrics`. The figures are the ones `dedupfs stats`
//! shows, computed by the same functions (`stats::store_stats`), so a dashboard and the
//! CLI never disagree on a definition.
//!
//! Invariants:
//! - A scrape never changes the store: unlike `dedupfs stats` it does not commit buffered
//!   writes first (scrapes every few seconds would otherwise change when data is
//!   committed), so figures lag buffered writes by at most the flush interval.
//! - A scrape never walks history (retention's history-byte figure scans extents and is
//!   left to `dedupfs retention show`); everything here is counters, registry fields, GC's
//!   status record, a listing of the pack files and one walk of the store directory (the
//!   `du` figures).
//! - A figure that cannot be read is left out of the scrape and counted in
//!   `dedupfs_scrape_errors_total`, never reported as zero.

use crate::metrics_http::{MetricsServer, Render};
use dedupfs_core::metrics::{self, Exposition};
use dedupfs_core::stats::ContainerStats;
use dedupfs_core::store::Store;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Scrapes in which some figure could not be read.
static SCRAPE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Starts the endpoint; the server stops when the returned value is dropped.
pub fn start(addr: SocketAddr, store: Arc<Store>) -> std::io::Result<MetricsServer> {
    let render: Render = Arc::new(move || render(&store));
    let server = MetricsServer::start(addr, render)?;
    log::info!("metrics at http://{}/metrics", server.local_addr());
    Ok(server)
}

/// One scrape: process metrics, then the store's figures.
pub fn render(store: &Store) -> String {
    let mut e = Exposition::new();
    metrics::render_process_metrics(&mut e);
    let mut failed = false;
    e.gauge(
        "dedupfs_build_info",
        "The dedupfs version serving this store (always 1).",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    e.gauge(
        "dedupfs_halted",
        "1 when a failed sync stopped the store from taking writes (remount to clear).",
        &[],
        if store.committer.halted().is_some() {
            1.0
        } else {
            0.0
        },
    );
    match dedupfs_core::stats::store_stats(store) {
        Ok(s) => {
            let per = |e: &mut Exposition, name: &str, help: &str, f: &dyn Fn(usize) -> f64| {
                for (i, c) in s.containers.iter().enumerate() {
                    e.gauge(name, help, &[("container", &c.name)], f(i));
                }
            };
            let c = &s.containers;
            per(
                &mut e,
                "dedupfs_logical_bytes",
                "Bytes of the container's live files (sum of their sizes).",
                &|i| c[i].logical_bytes as f64,
            );
            per(
                &mut e,
                "dedupfs_files",
                "Live regular files of the container.",
                &|i| c[i].files as f64,
            );
            per(
                &mut e,
                "dedupfs_unique_bytes",
                "Uncompressed bytes of the distinct chunks the container references (live and history).",
                &|i| c[i].unique_bytes as f64,
            );
            per(
                &mut e,
                "dedupfs_stored_bytes",
                "Pack bytes of the distinct chunks the container references (live and history).",
                &|i| c[i].stored_bytes as f64,
            );
            for (name, help, f) in [
                (
                    "dedupfs_written_bytes_total",
                    "Bytes applications wrote into the container (since ingest_since).",
                    (|c: &ContainerStats| c.ingest.written_bytes) as fn(&ContainerStats) -> u64,
                ),
                (
                    "dedupfs_new_bytes_total",
                    "Uncompressed bytes of the chunks the container's writes stored first.",
                    |c: &ContainerStats| c.ingest.new_bytes,
                ),
                (
                    "dedupfs_new_stored_bytes_total",
                    "Pack bytes of the chunks the container's writes stored first.",
                    |c: &ContainerStats| c.ingest.new_stored_bytes,
                ),
            ] {
                for x in c {
                    e.counter(name, help, &[("container", &x.name)], f(x));
                }
            }
            per(
                &mut e,
                "dedupfs_dedup_ratio",
                "Bytes written over the new (uncompressed) bytes they stored, per container.",
                &|i| c[i].ingest.dedup_ratio,
            );
            per(
                &mut e,
                "dedupfs_compression_ratio",
                "New uncompressed bytes over their pack bytes, per container.",
                &|i| c[i].ingest.compression_ratio,
            );
            for x in c {
                if let Some(h) = x.history_held_bytes {
                    e.gauge(
                        "dedupfs_history_held_bytes",
                        "Pack bytes only the container's history references, as the last GC run found.",
                        &[("container", &x.name)],
                        h as f64,
                    );
                }
            }
            e.gauge(
                "dedupfs_store_logical_bytes",
                "Bytes of all live files of the store.",
                &[],
                s.logical_bytes as f64,
            );
            e.gauge(
                "dedupfs_store_unique_bytes",
                "Uncompressed bytes of all distinct chunks stored.",
                &[],
                s.unique_bytes as f64,
            );
            e.gauge(
                "dedupfs_store_stored_bytes",
                "Pack bytes of all distinct chunks stored.",
                &[],
                s.stored_bytes as f64,
            );
            e.counter(
                "dedupfs_store_written_bytes_total",
                "Bytes applications wrote into the store (deleted containers included).",
                &[],
                s.ingest.written_bytes,
            );
            e.counter(
                "dedupfs_store_new_stored_bytes_total",
                "Pack bytes of the chunks the store's writes stored first.",
                &[],
                s.ingest.new_stored_bytes,
            );
            e.gauge(
                "dedupfs_physical_bytes",
                "Bytes the store occupies on disk, as du counts them (packs, metadata, other).",
                &[],
                s.physical_bytes as f64,
            );
            e.gauge(
                "dedupfs_pack_bytes",
                "Bytes of pack files on disk.",
                &[],
                s.pack_bytes as f64,
            );
            e.gauge(
                "dedupfs_metadata_bytes",
                "Bytes of the metadata database on disk.",
                &[],
                s.metadata_bytes as f64,
            );
            e.gauge(
                "dedupfs_reclaimable_bytes",
                "Pack bytes GC can reclaim now (unreferenced chunks and garbage).",
                &[],
                s.reclaimable_bytes as f64,
            );
            if let Some(r) = &s.remote {
                let t = &r.tier;
                e.gauge(
                    "dedupfs_remote_pending_packs",
                    "Sealed packs waiting for upload to object storage.",
                    &[],
                    t.pending_packs as f64,
                );
                e.gauge(
                    "dedupfs_remote_pending_bytes",
                    "Bytes of sealed packs waiting for upload to object storage.",
                    &[],
                    t.pending_bytes as f64,
                );
                e.counter(
                    "dedupfs_remote_uploaded_bytes_total",
                    "Pack bytes uploaded to object storage since the daemon started.",
                    &[],
                    t.uploaded_bytes,
                );
                e.gauge(
                    "dedupfs_remote_upload_failing",
                    "1 while uploads to object storage fail (retried), else 0.",
                    &[],
                    if t.last_error.is_some() { 1.0 } else { 0.0 },
                );
                e.gauge(
                    "dedupfs_remote_cache_bytes",
                    "Bytes in the local cache of pack bytes from object storage.",
                    &[],
                    t.cache.used as f64,
                );
                e.counter(
                    "dedupfs_remote_fetched_bytes_total",
                    "Bytes fetched from object storage by reads since the daemon started.",
                    &[],
                    t.cache.fetched_bytes,
                );
                e.gauge(
                    "dedupfs_remote_last_checkpoint_timestamp_seconds",
                    "When the newest metadata checkpoint in object storage was taken (0: none).",
                    &[],
                    r.last_checkpoint
                        .as_ref()
                        .map(|c| c.at as f64)
                        .unwrap_or(0.0),
                );
            }
        }
        Err(err) => {
            log::warn!("metrics: store statistics: {err}");
            failed = true;
        }
    }
    let clock = store.committer.clock().reading();
    e.gauge(
        "dedupfs_compliance_clock_timestamp_seconds",
        "The store's compliance clock, which retention locks are measured by (seconds since the epoch).",
        &[],
        clock.compliance as f64,
    );
    e.gauge(
        "dedupfs_clock_skew_seconds",
        "How far the system clock is ahead of the compliance clock (negative: behind).",
        &[],
        clock.skew() as f64,
    );
    for ci in store.registry().list() {
        match dedupfs_core::containers::lock::window(store, &ci.rec) {
            Ok(Some(w)) => {
                let l = [
                    ("container", ci.rec.name.as_str()),
                    ("mode", w.mode.as_str()),
                ];
                e.gauge(
                    "dedupfs_retention_lock_seconds",
                    "The container's retention lock: how long every state stays immutable.",
                    &l,
                    w.secs as f64,
                );
                e.gauge(
                    "dedupfs_retention_lock_window_start_timestamp_seconds",
                    "Every state of the container since this moment (compliance clock) is locked.",
                    &l,
                    w.start as f64,
                );
                if let Some(t) = w.oldest_expires {
                    e.gauge(
                        "dedupfs_retention_lock_oldest_expiry_timestamp_seconds",
                        "When the oldest locked state of the container is released (compliance clock).",
                        &l,
                        t as f64,
                    );
                }
            }
            Ok(None) => {}
            Err(err) => {
                log::warn!("metrics: retention lock of '{}': {err}", ci.rec.name);
                failed = true;
            }
        }
    }
    let now = dedupfs_gc::state::now();
    let reg = store.registry();
    for ci in reg.list() {
        let start = ci.rec.window_start();
        e.gauge(
            "dedupfs_retention_window_seconds",
            "How far back the container can be read, browsed or rolled back to now.",
            &[("container", &ci.rec.name)],
            (now - start).max(0) as f64,
        );
    }
    match dedupfs_gc::state::status(store) {
        Ok(g) => {
            if g.runs > 0 {
                e.gauge(
                    "dedupfs_gc_last_run_timestamp_seconds",
                    "When the last GC run ended (seconds since the epoch).",
                    &[],
                    g.last_run as f64,
                );
                e.gauge(
                    "dedupfs_gc_last_run_reclaimed_bytes",
                    "Bytes the last GC run reclaimed.",
                    &[],
                    g.last_reclaimed_bytes as f64,
                );
                e.gauge(
                    "dedupfs_gc_last_run_failed",
                    "1 when the last GC run ended with an error.",
                    &[],
                    if g.last_error.is_some() { 1.0 } else { 0.0 },
                );
            }
            e.counter(
                "dedupfs_gc_runs_total",
                "GC runs recorded in the store.",
                &[],
                g.runs,
            );
        }
        Err(err) => {
            log::warn!("metrics: GC status: {err}");
            failed = true;
        }
    }
    match dedupfs_core::pack::fs_space(store.root()) {
        Ok((size, free)) => {
            e.gauge(
                "dedupfs_filesystem_size_bytes",
                "Size of the filesystem holding the store.",
                &[],
                size as f64,
            );
            e.gauge(
                "dedupfs_filesystem_free_bytes",
                "Bytes free on the filesystem holding the store (for the daemon's user).",
                &[],
                free as f64,
            );
        }
        Err(err) => {
            log::warn!("metrics: statvfs of {}: {err}", store.root().display());
            failed = true;
        }
    }
    if failed {
        SCRAPE_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    e.counter(
        "dedupfs_scrape_errors_total",
        "Scrapes that left out a figure because it could not be read (see the daemon log).",
        &[],
        SCRAPE_ERRORS.load(Ordering::Relaxed),
    );
    e.finish()
}
