//! Text output of `gc` (its plan, what the run did, what only history holds) and `fsck`,
//! from their typed answers (`dedupfs_gc::sweep::Report`, `dedupfs_gc::fsck::Report<String>`,
//! decoded by the caller). (The GC lines of `stats` come from the typed `GcStatus`:
//! [`super::stats::gc_status`].)

use crate::output::{size, table};
use dedupfs_gc::fsck;
use dedupfs_gc::plan::{Action, Plan};
use dedupfs_gc::sweep;

/// The plan (every pack with `list_packs`), then what the run did unless it was a dry run.
pub fn gc(r: &sweep::Report, list_packs: bool) {
    let p = &r.plan;
    println!(
        "plan: {} packs ({}): keep {}, rewrite {}, delete {}",
        p.pack_files,
        size(p.pack_bytes),
        p.keep,
        p.rewrite,
        p.delete
    );
    println!(
        "      live {}, dead {} in {} chunks, garbage {}; reclaimable {} (copying {})",
        size(p.live_bytes),
        size(p.dead_bytes),
        p.dead_chunks,
        size(p.garbage_bytes),
        size(p.reclaimable_bytes),
        size(p.copy_bytes)
    );
    if !p.containers.is_empty() {
        let rows: Vec<Vec<String>> = p
            .containers
            .iter()
            .map(|c| {
                vec![
                    c.container.clone(),
                    c.dead_chunks.to_string(),
                    size(c.dead_bytes),
                ]
            })
            .collect();
        table(&["DEAD DATA OF", "CHUNKS", "BYTES"], &rows);
    }
    if list_packs {
        let rows: Vec<Vec<String>> = p
            .packs
            .iter()
            .map(|k| {
                vec![
                    k.pack.to_string(),
                    size(k.size),
                    size(k.live_bytes),
                    size(k.dead_bytes),
                    size(k.garbage_bytes),
                    action_name(k.action).to_string(),
                    k.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &["PACK", "SIZE", "LIVE", "DEAD", "GARBAGE", "ACTION", ""],
            &rows,
        );
    }
    print_history_held(p);
    if r.dry_run {
        println!("dry run: nothing changed");
        return;
    }
    println!(
        "done: removed {} dead chunks, rewrote {} packs (copied {}), deleted {} packs",
        r.dead_chunks_removed,
        r.packs_rewritten,
        size(r.bytes_copied),
        r.packs_deleted
    );
    println!(
        "      packs {} -> {}: reclaimed {} in {:.1} s",
        size(r.pack_bytes_before),
        size(r.pack_bytes_after),
        size(r.reclaimed_bytes),
        r.duration_ms as f64 / 1000.0
    );
    if !r.waiting.is_empty() {
        println!(
            "      {} condemned packs wait out their grace period (the next run deletes them)",
            r.waiting.len()
        );
    }
    for s in &r.skipped {
        println!("skipped: {s}");
    }
}

/// A pack's action as the plan's JSON names it.
fn action_name(a: Action) -> &'static str {
    match a {
        Action::Keep => "keep",
        Action::Rewrite => "rewrite",
        Action::Delete => "delete",
    }
}

/// What only history holds (GC cannot free it), and how to release it.
fn print_history_held(p: &Plan) {
    for l in &p.locked {
        println!(
            "      locked: {} ({}) — GC cannot free what that history references until it leaves the window",
            l.container,
            super::stats::lock_text(&l.window)
        );
    }
    let held = p.history_held_bytes;
    if held == 0 {
        return;
    }
    let list: Vec<String> = p
        .history_held
        .iter()
        .map(|(c, b)| format!("{c} {}", size(*b)))
        .collect();
    println!(
        "      held by history: {} that no live file uses ({}); retention keeps it readable",
        size(held),
        list.join(", ")
    );
    if let Some((c, _)) = p
        .history_held
        .iter()
        .find(|(c, _)| !p.locked.iter().any(|l| &l.container == c))
    {
        println!(
            "      to release it: dedupfs container set {c} --retention all=24h (or shorter), \
             then dedupfs retention prune {c} and dedupfs gc"
        );
    }
}

/// Each problem (marked when repaired), the notes, and a summary line.
pub fn fsck(r: &fsck::Report<String>) {
    for p in &r.problems {
        println!(
            "{}{}: {}",
            if p.repaired { "REPAIRED " } else { "" },
            p.kind,
            p.message
        );
    }
    for s in &r.notes {
        println!("note: {s}");
    }
    let problems = r.problems.len();
    let scrub = if r.scrub {
        format!(", scrubbed {}", size(r.bytes_scrubbed))
    } else {
        String::new()
    };
    println!(
        "checked {} extent records, {} chunks, {} packs{scrub} in {:.1} s: {}",
        r.extents,
        r.chunks,
        r.packs,
        r.duration_ms as f64 / 1000.0,
        if problems == 0 {
            "clean".to_string()
        } else {
            format!("{problems} problems, {} left unrepaired", r.unrepaired)
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_as_in_the_json() {
        for a in [Action::Keep, Action::Rewrite, Action::Delete] {
            assert_eq!(serde_json::to_value(a).unwrap(), action_name(a));
        }
    }
}
