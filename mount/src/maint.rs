//! Text output of `gc`, `fsck` and the GC lines of `stats`.

use crate::output::{size, table};
use serde_json::Value;

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}

pub fn print_gc(v: &Value, list_packs: bool) {
    let p = &v["plan"];
    println!(
        "plan: {} packs ({}): keep {}, rewrite {}, delete {}",
        n(p, "pack_files"),
        size(n(p, "pack_bytes")),
        n(p, "keep"),
        n(p, "rewrite"),
        n(p, "delete")
    );
    println!(
        "      live {}, dead {} in {} chunks, garbage {}; reclaimable {} (copying {})",
        size(n(p, "live_bytes")),
        size(n(p, "dead_bytes")),
        n(p, "dead_chunks"),
        size(n(p, "garbage_bytes")),
        size(n(p, "reclaimable_bytes")),
        size(n(p, "copy_bytes"))
    );
    if let Some(cs) = p["containers"].as_array().filter(|c| !c.is_empty()) {
        let rows: Vec<Vec<String>> = cs
            .iter()
            .map(|c| {
                vec![
                    c["container"].as_str().unwrap_or("?").to_string(),
                    n(c, "dead_chunks").to_string(),
                    size(n(c, "dead_bytes")),
                ]
            })
            .collect();
        table(&["DEAD DATA OF", "CHUNKS", "BYTES"], &rows);
    }
    if list_packs {
        let rows: Vec<Vec<String>> = p["packs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|k| {
                        vec![
                            k["pack"].to_string(),
                            size(n(k, "size")),
                            size(n(k, "live_bytes")),
                            size(n(k, "dead_bytes")),
                            size(n(k, "garbage_bytes")),
                            k["action"].as_str().unwrap_or("?").to_string(),
                            k["note"].as_str().unwrap_or("").to_string(),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        table(
            &["PACK", "SIZE", "LIVE", "DEAD", "GARBAGE", "ACTION", ""],
            &rows,
        );
    }
    print_history_held(p);
    if v["dry_run"].as_bool() == Some(true) {
        println!("dry run: nothing changed");
        return;
    }
    println!(
        "done: removed {} dead chunks, rewrote {} packs (copied {}), deleted {} packs",
        n(v, "dead_chunks_removed"),
        n(v, "packs_rewritten"),
        size(n(v, "bytes_copied")),
        n(v, "packs_deleted")
    );
    println!(
        "      packs {} -> {}: reclaimed {} in {:.1} s",
        size(n(v, "pack_bytes_before")),
        size(n(v, "pack_bytes_after")),
        size(n(v, "reclaimed_bytes")),
        n(v, "duration_ms") as f64 / 1000.0
    );
    if let Some(w) = v["waiting"].as_array().filter(|w| !w.is_empty()) {
        println!(
            "      {} condemned packs wait out their grace period (the next run deletes them)",
            w.len()
        );
    }
    for s in v["skipped"].as_array().into_iter().flatten() {
        println!("skipped: {}", s.as_str().unwrap_or("?"));
    }
}

/// What only history holds (GC cannot free it), and how to release it.
fn print_history_held(p: &Value) {
    let held = n(p, "history_held_bytes");
    if held == 0 {
        return;
    }
    let by: Vec<(String, u64)> = p["history_held"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| Some((x[0].as_str()?.to_string(), x[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let list: Vec<String> = by
        .iter()
        .map(|(c, b)| format!("{c} {}", size(*b)))
        .collect();
    println!(
        "      held by history: {} that no live file uses ({}); retention keeps it readable",
        size(held),
        list.join(", ")
    );
    if let Some((c, _)) = by.first() {
        println!(
            "      to release it: dedupfs container set {c} --retention all=24h (or shorter), \
             then dedupfs retention prune {c} and dedupfs gc"
        );
    }
}

pub fn print_fsck(v: &Value) {
    for p in v["problems"].as_array().into_iter().flatten() {
        println!(
            "{}{}: {}",
            if p["repaired"].as_bool() == Some(true) {
                "REPAIRED "
            } else {
                ""
            },
            p["kind"].as_str().unwrap_or("?"),
            p["message"].as_str().unwrap_or("?")
        );
    }
    for s in v["notes"].as_array().into_iter().flatten() {
        println!("note: {}", s.as_str().unwrap_or("?"));
    }
    let problems = v["problems"].as_array().map(|a| a.len()).unwrap_or(0);
    let scrub = if v["scrub"].as_bool() == Some(true) {
        format!(", scrubbed {}", size(n(v, "bytes_scrubbed")))
    } else {
        String::new()
    };
    println!(
        "checked {} extent records, {} chunks, {} packs{scrub} in {:.1} s: {}",
        n(v, "extents"),
        n(v, "chunks"),
        n(v, "packs"),
        n(v, "duration_ms") as f64 / 1000.0,
        if problems == 0 {
            "clean".to_string()
        } else {
            format!(
                "{problems} problems, {} left unrepaired",
                n(v, "unrepaired")
            )
        }
    );
}
