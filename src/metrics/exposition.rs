//! The Prometheus text exposition (format 0.0.4): the [`Exposition`] builder, its escaping
//! and number formatting, and [`render_process_metrics`], which renders the statics of
//! [`crate::metrics`].
//!
//! Invariants: within one exposition a family's samples are contiguous under a single
//! HELP/TYPE pair (callers keep calls for one name adjacent; debug builds assert it); a
//! histogram's `le="+Inf"` bucket and `_count` come from one read of its buckets, so they
//! are equal in every scrape. Nothing here does I/O.
//!
//! Metrics rendered by [`render_process_metrics`]:
//! - `dedupfs_fuse_requests_total{op}`, `dedupfs_fuse_request_duration_seconds{op}`
//!   (histogram), `dedupfs_fuse_errors_total{op,errno}`: only ops with requests and only
//!   nonzero error series, to keep scrapes small;
//! - `dedupfs_write_bytes_total`, `dedupfs_read_bytes_total` (bytes through the mount),
//!   `dedupfs_ingest_new_bytes_total`,
//!   `dedupfs_ingest_deduplicated_bytes_total` (raw chunk bytes new / matched);
//! - `dedupfs_commits_total`, `dedupfs_commit_duration_seconds`, `dedupfs_syncs_total`,
//!   `dedupfs_sync_duration_seconds`, `dedupfs_errors_total{kind}` (every kind, always).
//!
//! The store's own figures are rendered by the daemon through the same [`Exposition`]
//! (`mount/src/exporter.rs` lists them).

use super::{
    Counter, Histogram, OpStats, COMMITS, COMMIT_SECONDS, ERRNOS, ERRORS_BY_KIND, ERROR_KINDS,
    FUSE, FUSE_OPS, INGEST_DEDUP_BYTES, INGEST_NEW_CHUNK_BYTES, READ_BYTES, SYNCS, SYNC_SECONDS,
    WRITE_BYTES,
};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Builds a text exposition (format 0.0.4). Calls for one metric name must be adjacent:
/// the format wants a family's samples together under a single HELP/TYPE pair.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    headed: HashSet<String>,
    last: String,
}

/// `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.head(name, help, "counter");
        self.sample(name, "", labels, None, &value.to_string());
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.head(name, help, "gauge");
        self.sample(name, "", labels, None, &fmt_f64(value));
    }

    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.head(name, help, "histogram");
        // Read the buckets once: `+Inf` and `_count` then come from the same snapshot.
        let cumulative = h.cumulative();
        let count = cumulative.last().copied().unwrap_or(0);
        for (le, n) in h.bounds().iter().zip(&cumulative) {
            self.sample(name, "_bucket", labels, Some(&fmt_f64(*le)), &n.to_string());
        }
        self.sample(name, "_bucket", labels, Some("+Inf"), &count.to_string());
        self.sample(name, "_sum", labels, None, &fmt_f64(h.sum_secs()));
        self.sample(name, "_count", labels, None, &count.to_string());
    }

    pub fn as_str(&self) -> &str {
        &self.out
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn head(&mut self, name: &str, help: &str, kind: &str) {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        if self.headed.contains(name) {
            debug_assert!(self.last == name, "samples of {name} not grouped");
            return;
        }
        self.headed.insert(name.to_owned());
        self.last = name.to_owned();
        // Writing to a String cannot fail; the fmt::Result is ignored for that reason.
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: &str,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let extra = le.map(|v| ("le", v));
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_some() {
            self.out.push('{');
            for (i, (k, v)) in all.enumerate() {
                debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k:?}");
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v, true));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }
}

/// Escapes backslash and newline (HELP text), and double quote too in label values.
pub fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as the format wants it: `+Inf`, `-Inf`, `NaN`, otherwise Rust's
/// shortest round-trip decimal, which never uses an exponent (`1`, `0.00001`, `2.5`).
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Emits every process-wide static. Callers append the daemon's gauges to `out` after.
pub fn render_process_metrics(out: &mut Exposition) {
    // One snapshot of which ops are active, then a pass per family: a family's samples
    // must be contiguous, and every family must list the same ops within one scrape.
    let active: Vec<(&str, &OpStats)> = FUSE_OPS
        .iter()
        .copied()
        .zip(&FUSE)
        .filter(|(_, s)| s.requests.get() > 0)
        .collect();
    let help = "FUSE requests handled, by operation.";
    for &(op, s) in &active {
        let n = s.requests.get();
        out.counter("dedupfs_fuse_requests_total", help, &[("op", op)], n);
    }
    let (name, help) = (
        "dedupfs_fuse_request_duration_seconds",
        "Time to handle a FUSE request, by operation.",
    );
    for &(op, s) in &active {
        out.histogram(name, help, &[("op", op)], &s.duration);
    }
    let help = "FUSE requests answered with an error, by operation and errno.";
    for &(op, s) in &active {
        for (&(_, errno), c) in ERRNOS.iter().zip(&s.errors) {
            let n = c.get();
            if n > 0 {
                let labels = [("op", op), ("errno", errno)];
                out.counter("dedupfs_fuse_errors_total", help, &labels, n);
            }
        }
    }
    #[rustfmt::skip]
    let counters: [(&str, &str, &Counter); 6] = [
        ("dedupfs_write_bytes_total", "Logical bytes written.", &WRITE_BYTES),
        ("dedupfs_read_bytes_total", "Logical bytes read.", &READ_BYTES),
        ("dedupfs_ingest_new_bytes_total", "Raw bytes of new chunks.", &INGEST_NEW_CHUNK_BYTES),
        ("dedupfs_ingest_deduplicated_bytes_total", "Raw bytes deduplicated.", &INGEST_DEDUP_BYTES),
        ("dedupfs_commits_total", "Metadata commits.", &COMMITS),
        ("dedupfs_syncs_total", "Syncs of the store to disk.", &SYNCS),
    ];
    for (name, help, c) in counters {
        out.counter(name, help, &[], c.get());
    }
    #[rustfmt::skip]
    let histograms: [(&str, &str, &Histogram); 2] = [
        ("dedupfs_commit_duration_seconds", "Time to commit a metadata batch.", &COMMIT_SECONDS),
        ("dedupfs_sync_duration_seconds", "Time to sync the store.", &SYNC_SECONDS),
    ];
    for (name, help, h) in histograms {
        out.histogram(name, help, &[], h);
    }
    let help = "Errors, by kind.";
    for (kind, c) in ERROR_KINDS.iter().zip(&ERRORS_BY_KIND) {
        out.counter("dedupfs_errors_total", help, &[("kind", kind)], c.get());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{count_error, op, record, ErrorKind};
    use std::collections::HashMap;
    use std::time::Duration;

    /// A regex-free checker of the exposition: comments are `# HELP`/`# TYPE`, one TYPE
    /// per family and before its samples; samples are `name[{k="v",...}] value` and belong
    /// to the family typed last. Returns the samples keyed by `name{labels}`.
    fn check(text: &str) -> HashMap<String, f64> {
        assert!(text.ends_with('\n'), "no final newline");
        let (mut families, mut samples) = (Vec::<(&str, &str)>::new(), HashMap::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let parts: Vec<&str> = rest.splitn(3, ' ').collect();
                assert!(parts.len() == 3 && valid_name(parts[1]), "{line:?}");
                if parts[0] == "TYPE" {
                    let kinds = ["counter", "gauge", "histogram"];
                    assert!(kinds.contains(&parts[2]), "{line:?}");
                    assert!(
                        families.iter().all(|f| f.0 != parts[1]),
                        "2nd TYPE {line:?}"
                    );
                    families.push((parts[1], parts[2]));
                } else {
                    assert_eq!(parts[0], "HELP", "{line:?}");
                }
                continue;
            }
            let end = line.find(['{', ' ']).expect("a value");
            let (name, mut rest) = line.split_at(end);
            let &(family, kind) = families.last().expect("a TYPE first");
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            let ok = suffixes.iter().any(|s| name == format!("{family}{s}"));
            assert!(ok, "{name} outside its family {family}");
            if let Some(labels) = rest.strip_prefix('{') {
                rest = check_labels(labels, line);
            }
            let value = rest.strip_prefix(' ').expect("a space before the value");
            let v = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("bad value {line:?}")),
            };
            let key = &line[..line.len() - value.len() - 1];
            assert!(
                samples.insert(key.to_owned(), v).is_none(),
                "duplicate {key}"
            );
        }
        samples
    }

    /// Checks `k="v",...}` (escapes included) and returns what follows the `}`.
    fn check_labels<'a>(mut s: &'a str, line: &str) -> &'a str {
        loop {
            let eq = s.find("=\"").expect("label=\"value\"");
            assert!(valid_name(&s[..eq]), "label name in {line:?}");
            let mut chars = s[eq + 2..].char_indices();
            let close = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => {
                        let esc = chars.next().map(|(_, c)| c);
                        assert!(matches!(esc, Some('\\' | '"' | 'n')), "escape {line:?}");
                    }
                    (i, '"') => break eq + 2 + i,
                    (_, c) => assert!(c != '\n', "raw newline"),
                }
            };
            s = &s[close + 1..];
            match s.strip_prefix(',') {
                Some(r) => s = r,
                None => return s.strip_prefix('}').expect("closing brace"),
            }
        }
    }

    #[test]
    fn histogram_renders_cumulative_buckets_and_inf_is_count() {
        static H: Histogram = Histogram::new(&[0.001, 0.01, 1.0]);
        for ms in [0, 1, 5, 10, 500, 1000, 3000] {
            H.observe(Duration::from_millis(ms));
        }
        H.observe_secs(-1.0); // clamped to 0
        let mut e = Exposition::new();
        e.histogram("t_seconds", "h", &[("op", "read")], &H);
        let s = check(e.as_str());
        assert_eq!(s["t_seconds_bucket{op=\"read\",le=\"0.001\"}"], 3.0);
        assert_eq!(s["t_seconds_bucket{op=\"read\",le=\"1\"}"], 7.0);
        assert_eq!(s["t_seconds_bucket{op=\"read\",le=\"+Inf\"}"], 8.0);
        assert_eq!(s["t_seconds_count{op=\"read\"}"], 8.0);
        assert!((s["t_seconds_sum{op=\"read\"}"] - 4.516).abs() < 1e-9);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd", true), "a\\\\b\\\"c\\nd");
        assert_eq!(escape("a\\b\"c\nd", false), "a\\\\b\"c\\nd");
        let mut e = Exposition::new();
        e.gauge("g", "line\nbreak", &[("container", "we\"ird\\\nname")], 1.5);
        let want =
            "# HELP g line\\nbreak\n# TYPE g gauge\ng{container=\"we\\\"ird\\\\\\nname\"} 1.5\n";
        assert_eq!(e.as_str(), want);
        assert_eq!(check(e.as_str()).len(), 1);
    }

    #[test]
    fn help_and_type_once_per_name() {
        let mut e = Exposition::new();
        e.gauge("dedupfs_logical_bytes", "b", &[("container", "a")], 1.0);
        e.gauge("dedupfs_logical_bytes", "b", &[("container", "b")], 2.0);
        e.counter("c_total", "c", &[], 3);
        let t = e.finish();
        assert_eq!(t.matches("# HELP dedupfs_logical_bytes").count(), 1);
        assert_eq!(t.matches("# TYPE dedupfs_logical_bytes gauge").count(), 1);
        assert_eq!(check(&t).len(), 3);
    }

    #[test]
    fn floats_format_as_prometheus_expects() {
        let cases = [
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases.into_iter().chain([(3.0, "3"), (0.00001, "0.00001")]) {
            assert_eq!(fmt_f64(v), want);
        }
        assert_eq!(fmt_f64(1e20), "100000000000000000000");
    }

    #[test]
    fn process_metrics_render_and_parse() {
        // The statics are shared with other tests; assert only on what this test owns.
        record(op("mkdir"), Duration::from_micros(30), Ok(()));
        record(op("mkdir"), Duration::from_millis(2), Err(17));
        record(op("mkdir"), Duration::from_millis(3), Err(95)); // EOPNOTSUPP: "other"
        WRITE_BYTES.add(4096);
        COMMIT_SECONDS.observe(Duration::from_millis(7));
        count_error(ErrorKind::Stale);
        let mut e = Exposition::new();
        render_process_metrics(&mut e);
        let text = e.finish();
        let s = check(&text);
        let fuse = "dedupfs_fuse_request_duration_seconds_bucket";
        assert_eq!(s["dedupfs_fuse_requests_total{op=\"mkdir\"}"], 3.0);
        assert_eq!(s[&format!("{fuse}{{op=\"mkdir\",le=\"+Inf\"}}")], 3.0);
        assert_eq!(
            s["dedupfs_fuse_errors_total{op=\"mkdir\",errno=\"EEXIST\"}"],
            1.0
        );
        assert_eq!(
            s["dedupfs_fuse_errors_total{op=\"mkdir\",errno=\"other\"}"],
            1.0
        );
        assert!(
            !text.contains("errno=\"ENOENT\"}"),
            "zero error series emitted"
        );
        assert!(!text.contains("op=\"fallocate\""), "idle op emitted");
        assert!(s["dedupfs_write_bytes_total"] >= 4096.0);
        assert!(s["dedupfs_commit_duration_seconds_count"] >= 1.0);
        assert!(s["dedupfs_errors_total{kind=\"stale\"}"] >= 1.0);
        // Statics are there even at zero.
        assert!(s.contains_key("dedupfs_errors_total{kind=\"corrupt\"}"));
        assert!(s.contains_key("dedupfs_sync_duration_seconds_bucket{le=\"+Inf\"}"));
    }
}
