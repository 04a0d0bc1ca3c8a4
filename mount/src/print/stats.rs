//! Printers of the store's figures for a person: `stats`, `stats --watch`, `container
//! show`/`list`. Each takes the typed answer (`protocol`), never untyped JSON, and labels
//! every figure with what it is: live, held (live and history) or ingest (see
//! `dedupfs_core::stats` for the definitions).

use crate::output::{ratio, size, table};
use crate::protocol::{ContainerEntry, ContainerReport, StoreReport};
use dedupfs_core::stats::{ContainerStats, IngestStats};

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
    for l in ingest_lines(&s.ingest, PAD) {
        println!("{l}");
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
