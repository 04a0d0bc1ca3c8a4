//! Printers of the store's figures for a person: `stats`, `stats --watch`, `container
//! show`/`list`. Each takes the typed answer (`protocol`), never untyped JSON, and labels
//! every figure with what it is: live, held (live and history) or ingest (see
//! `dedupfs_core::stats` for the definitions).

use crate::output::{ratio, size, table};
use crate::protocol::{ContainerEntry, ContainerReport, StoreReport};
use dedupfs_core::containers::lock::{duration_text, LockWindow};
use dedupfs_core::points::format_local;
use dedupfs_core::stats::{ContainerStats, IngestStats};

/// A retention lock for a person: mode, duration, the window, when its oldest state
/// leaves it. Times are the compliance clock's.
pub fn lock_text(w: &LockWindow) -> String {
    let oldest = match w.oldest_expires {
        Some(t) => format!("the oldest locked state is released at {}", format_local(t)),
        None => "no change since its start: the live state is the oldest locked one".into(),
    };
    format!(
        "{} for {}: every state since {} stays; {oldest} (compliance clock)",
        w.mode.as_str(),
        duration_text(w.secs),
        format_local(w.start)
    )
}

/// "written … since …" and "kept …" lines of an ingest.
fn ingest_lines(i: &IngestStats, pad: usize) -> Vec<String> {
    if i.since == 0 {
        return vec![format!("{:<pad$}nothing yet", "written")];
    }
    vec![
        format!(
            "{:<pad$}{}  since {}",
            "written",
            size(i.written_bytes),
            dedupfs_core::points::format_local(i.since)
        ),
        format!(
            "{:<pad$}{}  (dedup {}, compression {}: reduction {}, savings {:.1} %)",
            "kept",
            size(i.new_stored_bytes),
            ratio(i.dedup_ratio),
            ratio(i.compression_ratio),
            ratio(i.reduction_factor),
            i.savings_pct
        ),
    ]
}

fn history(c: &ContainerStats) -> String {
    c.history_held_bytes.map(size).unwrap_or_else(|| "-".into())
}

pub fn container_stats(s: &ContainerStats) {
    const PAD: usize = 12;
    println!(
        "{:<PAD$}{} files, {}",
        "live",
        s.files,
        size(s.logical_bytes)
    );
    println!(
        "{:<PAD$}{} unique in {} chunks, {} stored  (live data and kept history; {} stored \
         first by this container)",
        "held",
        size(s.unique_bytes),
        s.chunks,
        size(s.stored_bytes),
        size(s.added_bytes)
    );
    if let Some(h) = s.history_held_bytes {
        println!(
            "{:<PAD$}{} referenced only by history, at the last gc (`dedupfs retention show`)",
            "history",
            size(h)
        );
    }
    if let Some(w) = &s.lock {
        println!("{:<PAD$}{}", "lock", lock_text(w));
    }
    for l in ingest_lines(&s.ingest, PAD) {
        println!("{l}");
    }
}

pub fn container(r: &ContainerReport) {
    println!("{:<12}{}", "container", r.name);
    println!("{:<12}{}", "compression", r.settings.compression);
    println!(
        "{:<12}{}",
        "retention",
        r.settings.retention.as_deref().unwrap_or("forever")
    );
    if let Some(rp) = &r.replica {
        let at = match &rp.last {
            Some(p) => format!("as of {}", dedupfs_core::points::format_time(p.source_time)),
            None => "nothing received yet".into(),
        };
        println!(
            "{:<12}read-only replica of '{}' (store {}), {at}",
            "replica", rp.source_container, rp.source_store
        );
    }
    if let Some(rp) = &r.promoted_from {
        println!(
            "{:<12}promoted; was a replica of '{}' (store {})",
            "origin", rp.source_container, rp.source_store
        );
    }
    container_stats(&r.stats);
}

pub fn list(list: &[ContainerEntry]) {
    if list.is_empty() {
        println!("no containers (create one with `dedupfs container create NAME` or mkdir at the mount root)");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let s = &c.stats;
            vec![
                c.name.clone(),
                c.settings.compression.to_string(),
                s.files.to_string(),
                size(s.logical_bytes),
                size(s.ingest.written_bytes),
                size(s.ingest.new_stored_bytes),
                format!("{:.1} %", s.ingest.savings_pct),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "COMPRESSION",
            "FILES",
            "LOGICAL",
            "WRITTEN",
            "KEPT",
            "SAVINGS",
        ],
        &rows,
    );
}

pub fn store(r: &StoreReport) {
    const PAD: usize = 13;
    let s = &r.stats;
    println!("{:<PAD$}{}", "store", s.store);
    if let Some(h) = &s.halted {
        println!(
            "{:<PAD$}HALTED, takes no writes: {h}; unmount and mount again, then run \
             `dedupfs fsck --scrub`",
            "HEALTH"
        );
    }
    if s.counters_drifted {
        println!(
            "{:<PAD$}a live-file counter went out of step; run `dedupfs fsck --repair`",
            "counters"
        );
    }
    println!(
        "{:<PAD$}{} files, {}",
        "live",
        s.files,
        size(s.logical_bytes)
    );
    println!(
        "{:<PAD$}{} unique in {} chunks, {} stored  (live data and kept history)",
        "held",
        size(s.unique_bytes),
        s.chunks,
        size(s.stored_bytes)
    );
    println!(
        "{:<PAD$}{}  (packs {} in {} files, metadata {}, other {}; as du counts)",
        "on disk",
        size(s.physical_bytes),
        size(s.pack_bytes),
        s.packs,
        size(s.metadata_bytes),
        size(s.other_bytes)
    );
    println!(
        "{:<PAD$}{}  (`dedupfs gc` frees it)",
        "reclaimable",
        size(s.reclaimable_bytes)
    );
    if let Some(r) = &s.remote {
        let t = &r.tier;
        println!(
            "{:<PAD$}{}: {} packs uploaded this session ({}), {} waiting ({})",
            "packs in",
            t.url,
            t.uploaded_packs,
            size(t.uploaded_bytes),
            t.pending_packs,
            size(t.pending_bytes)
        );
        if let Some(e) = &t.last_error {
            println!("{:<PAD$}uploads failing, retried: {e}", "UPLOADS");
        }
        println!(
            "{:<PAD$}{} of {} used; {} hits, {} fetches ({})",
            "cache",
            size(t.cache.used),
            size(t.cache.budget),
            t.cache.hits,
            t.cache.misses,
            size(t.cache.fetched_bytes)
        );
        match &r.last_checkpoint {
            Some(c) => println!(
                "{:<PAD$}{} (store version {}, {})",
                "checkpoint",
                dedupfs_core::points::format_time(c.at),
                c.version,
                size(c.bytes)
            ),
            None => println!(
                "{:<PAD$}none yet: the bucket alone cannot restore this store",
                "checkpoint"
            ),
        }
    }
    for l in ingest_lines(&s.ingest, PAD) {
        println!("{l}");
    }
    let locked: Vec<&ContainerStats> = s.containers.iter().filter(|c| c.lock.is_some()).collect();
    if !locked.is_empty() || s.clock.skew().abs() > 60 {
        let skew = match s.clock.skew() {
            d if d.abs() <= 60 => "with the system clock".to_string(),
            d if d > 0 => format!(
                "system clock {} ahead (downtime or a clock change; it catches up at most 7 days a year)",
                dedupfs_core::clock::human(d)
            ),
            d => format!("system clock {} behind", dedupfs_core::clock::human(-d)),
        };
        println!(
            "{:<PAD$}compliance {} ({skew})",
            "clock",
            format_local(s.clock.compliance)
        );
    }
    for c in locked {
        if let Some(w) = &c.lock {
            println!("{:<PAD$}{}: {}", "locked", c.name, lock_text(w));
        }
    }
    gc_status(&r.gc);
    if s.containers.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = s
        .containers
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.files.to_string(),
                size(c.logical_bytes),
                size(c.stored_bytes),
                size(c.ingest.written_bytes),
                size(c.ingest.new_stored_bytes),
                ratio(c.ingest.dedup_ratio),
                format!("{:.1} %", c.ingest.savings_pct),
                history(c),
            ]
        })
        .collect();
    table(
        &[
            "CONTAINER",
            "FILES",
            "LOGICAL",
            "HELD",
            "WRITTEN",
            "KEPT",
            "DEDUP",
            "SAVINGS",
            "HISTORY",
        ],
        &rows,
    );
}

/// GC's record: when it last ran and what it reclaimed.
pub fn gc_status(g: &dedupfs_core::reclaim::GcStatus) {
    const PAD: usize = 13;
    if g.runs == 0 {
        println!("{:<PAD$}never run", "gc");
        return;
    }
    if g.history_held_bytes > 0 {
        let list: Vec<String> = g
            .history_held
            .iter()
            .map(|(name, bytes)| format!("{name} {}", size(*bytes)))
            .collect();
        println!(
            "{:<PAD$}{} at the last gc ({}): prune history to release it (`dedupfs retention show`)",
            "held by history  ",
            size(g.history_held_bytes),
            list.join(", ")
        );
    }
    let ago = dedupfs_gc::state::now() - g.last_run;
    println!(
        "{:<PAD$}last run {} ago{}: reclaimed {}; {} in {} runs{}",
        "gc",
        if ago < 120 {
            format!("{ago} s")
        } else if ago < 7200 {
            format!("{} min", ago / 60)
        } else {
            format!("{} h", ago / 3600)
        },
        if g.last_background {
            " (background, idle store)"
        } else {
            ""
        },
        size(g.last_reclaimed_bytes),
        size(g.total_reclaimed_bytes),
        g.runs,
        g.last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    );
}
