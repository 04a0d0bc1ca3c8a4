//! Every printer of a command's answer for a person (with `--json` the answer is printed
//! as it came, by the command, and none of these runs):
//! - [`stats`]: the store's and containers' figures (`stats`, `stats --watch`,
//!   `container show`/`list`, the GC status), from the typed answers of `protocol`;
//! - [`history`]: bookmarks, snapshots, changes, apply, rollback and retention;
//! - [`maint`]: `gc` and `fsck`.
//!
//! Invariants: printers only write to stdout — they never fail, ask the store or decide an
//! exit code (the command does, from the answer); each figure is labelled with what it
//! counts. (`status` prints its own table: `crate::status`.)

pub mod history;
pub mod maint;
pub mod stats;
