//! The `dedupfs` command: `main` picks the personality (`mount.fuse.dedupfs` when invoked
//! as mount(8)'s helper, else the CLI), sets up logging and turns a failed command into
//! its message and exit code. What each command does is in [`cmd`].
//!
//! Invariant: a command's error is reported once — `dedupfs: error: …` on stderr, or with
//! `--json` one `{"error": …}` object on stdout — and the process exits with its
//! [`ExitKind`]'s code. (`fsck --json` with unrepaired problems exits 1 after its report
//! instead: the report itself says what is wrong.)

mod adapter;
mod background;
mod cli;
mod cmd;
mod control;
mod daemon;
mod errno;
mod error;
mod exporter;
mod fuse;
mod helper;
mod install;
mod kmount;
mod locate;
mod metrics_http;
mod mountpoint;
mod ops;
mod options;
mod output;
mod print;
mod protocol;
mod status;
mod unmount;
mod watch;

pub use error::{CliError, ExitKind};

use clap::Parser;
use cli::{Cli, Cmd};
use std::path::Path;

fn main() {
    // Die quietly on a closed pipe (`dedupfs stats | head`), as Unix tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "mount.fuse.dedupfs")
    {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        std::process::exit(helper::run(&args.collect::<Vec<_>>()));
    }
    let cli = Cli::parse();
    if matches!(
        cli.cmd,
        Cmd::Mount(_) | Cmd::Replicate { .. } | Cmd::Send { .. } | Cmd::Receive { .. } | Cmd::Serve
    ) {
        // Except in a daemon (a client that goes away mid-answer, or a replication peer
        // that dies, must cost an EPIPE on that one request, never the mount) and in the
        // replication commands (a dead peer is an error they report by name).
        // SAFETY: parsing started no thread; this only changes the signal's disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
    let default_level = match &cli.cmd {
        Cmd::Mount(m) if m.foreground => "info,fuser=error",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    let json = cli.json;
    if let Err(e) = cmd::run(cli) {
        if json {
            println!(
                "{}",
                serde_json::json!({ "error": { "code": e.kind.code(), "message": e.message } })
            );
        } else {
            eprintln!("dedupfs: error: {}", e.message);
        }
        std::process::exit(e.kind.code());
    }
}
