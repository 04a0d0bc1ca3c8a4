//! `dedupfs stats --watch`: the store's figures refreshed in place for a person at a
//! terminal, with the ingest rates (bytes written, bytes kept) since the previous refresh.
//!
//! Invariants: a refresh never forces buffered writes out (`no_flush`), so watching
//! does not change when data is committed; on a terminal the screen is redrawn in place,
//! elsewhere (a pipe, a log) each refresh is appended, and with `--json` each is one line
//! of JSON. It follows a mounted store only, through its daemon, and ends with an error as
//! soon as a refresh fails (store unmounted, daemon gone), naming why.

use crate::ops::Request;
use crate::output::size;
use crate::print::stats as report;
use crate::protocol::{decode, StoreReport};
use crate::{CliError, ExitKind};
use dedupfs_core::stats::ContainerStats;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a rate is computed from: written and kept bytes of the ingest at an instant.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    written: u64,
    kept: u64,
}

fn rate(bytes_now: u64, bytes_then: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!(
        "{}/s",
        size((bytes_now.saturating_sub(bytes_then) as f64 / secs) as u64)
    )
}

pub fn run(
    store: &Path,
    container: Option<String>,
    every: f64,
    json: bool,
) -> Result<(), CliError> {
    if !(every.is_finite() && every >= 0.1) {
        return Err(CliError::usage(format!(
            "--watch {every}: expected an interval of at least 0.1 seconds"
        )));
    }
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<Sample> = None;
    loop {
        // Only through a daemon: opening the store again at every refresh would take its
        // lock and replay its log each time (`dedupfs stats` reads an unmounted store once).
        let conn = crate::control::connect(store).ok_or_else(|| {
            CliError::new(
                ExitKind::Store,
                format!(
                    "{} is not mounted (or its daemon is gone): --watch follows a mounted \
                     store; `dedupfs stats` reads an unmounted one",
                    store.display()
                ),
            )
        })?;
        let req = Request::Stats {
            container: container.clone(),
            no_flush: true,
        };
        let v = crate::control::call(conn, &req, &mut |_| {}).map_err(CliError::from_op)?;
        let now = Instant::now();
        if json {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            let (ingest, lines): (_, Box<dyn Fn()>) = match &container {
                Some(_) => {
                    let s: ContainerStats = decode(v, "stats").map_err(CliError::from_op)?;
                    let i = s.ingest.clone();
                    (i, Box::new(move || report::container_stats(&s)))
                }
                None => {
                    let r: StoreReport = decode(v, "stats").map_err(CliError::from_op)?;
                    let i = r.stats.ingest.clone();
                    (i, Box::new(move || report::store(&r)))
                }
            };
            let cur = Sample {
                at: now,
                written: ingest.written_bytes,
                kept: ingest.new_stored_bytes,
            };
            if tty {
                // Home and clear: redraw in place.
                print!("\x1b[H\x1b[2J");
            }
            println!(
                "dedupfs stats{} — every {every} s — {} (Ctrl-C ends)",
                container
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default(),
                dedupfs_core::points::format_local(dedupfs_gc::state::now())
            );
            if let Some(prev) = last {
                let secs = now.duration_since(prev.at).as_secs_f64();
                println!(
                    "{:<13}written {}, kept {}",
                    "now",
                    rate(cur.written, prev.written, secs),
                    rate(cur.kept, prev.kept, secs)
                );
            }
            println!();
            lines();
            if !tty {
                println!();
            }
            last = Some(cur);
        }
        use std::io::Write;
        if std::io::stdout().flush().is_err() {
            return Err(CliError::new(ExitKind::Failed, "stdout closed".into()));
        }
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}
