//! `authwire`: tokens and authorized requests from a terminal.
//!
//! ```text
//! authwire token                      # the access token, alone on stdout
//! authwire header                     # Authorization: Bearer ...
//! authwire curl https://api/v1/x      # the request, with the header added
//! authwire login / logout             # browser (PKCE) or device login; logout revokes
//! authwire inspect [TOKEN|-]          # a JWT's header and claims, its expiry in human time
//! authwire proxy --listen ADDR --upstream URL   # the sidecar (docs/proxy.md)
//! ```
//!
//! The layout, as cargo and uv keep theirs: `main.rs` parses and dispatches; `args.rs` holds
//! the clap types; `settings.rs` turns flags, a profile and the environment into one
//! resolved configuration; `commands/` has one file per command; `error.rs` the exit codes.
//! Arrows run downwards only: `main` → `commands` → `settings` / `interactive` / `trace` /
//! `output` → `args` / `error`.
//!
//! See docs/cli.md for every option and an example session.

#![allow(clippy::print_stdout)]

mod args;
mod browser;
mod commands;
mod error;
mod interactive;
mod output;
mod settings;
mod trace;

use args::{Cli, Command};
use clap::Parser;
use commands::*;
use error::{CliError, exit};
use std::process::ExitCode;
use trace::Trace;

fn main() -> ExitCode {
    // Installed as `docker-credential-authwire` (a link to this binary), speak docker's protocol.
    let mut argv = std::env::args();
    let invoked_as = argv.next().unwrap_or_default();
    let name = std::path::Path::new(&invoked_as)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if name.starts_with("docker-credential-") {
        let action = argv.next().unwrap_or_default();
        return run_as("docker-credential-authwire", docker_credential::exec(&action));
    }
    let cli = Cli::parse();
    let long_running = matches!(cli.command, Command::Proxy(_));
    if cli.verbose || long_running {
        // The library's own events (refresh started, refreshed, failed): never a secret. Only
        // authwire's: the HTTP stack's connection chatter would bury the five steps.
        use tracing_subscriber::layer::SubscriberExt as _;
        // The proxy logs its start and its failures (warn) without -v; one line per request
        // with it.
        let level = if cli.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .with_target(false)
            .with_ansi(colour_on_stderr())
            .without_time()
            .finish()
            .with(tracing_subscriber::filter::Targets::new().with_target("authwire", level));
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
    let trace = Trace::new(cli.verbose);
    run_as("authwire", dispatch(cli, &trace))
}

/// Colour only for a person at a terminal, and never when `NO_COLOR` is set (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Run one command to its exit code.
async fn dispatch(cli: Cli, trace: &Trace) -> Result<u8, CliError> {
    let c = &cli.credentials;
    match cli.command {
        Command::Token(args) => token::exec(c, args, trace).await,
        Command::Header => header::exec(c, trace).await,
        Command::Curl(args) => curl::exec(c, args, trace).await,
        Command::Login(args) => login::exec(c, args).await,
        Command::Logout => logout::exec(c).await,
        Command::Inspect(args) => inspect::exec(c, args, trace).await,
        Command::Kube(args) => kube::exec(c, args).await,
        Command::GitCredential(args) => git_credential::exec(c, args).await,
        Command::Proxy(args) => proxy::exec(c, args).await,
        Command::Completions { shell } => completions::exec(shell),
    }
}

/// Drive `command` on a single-threaded runtime (the proxy serves requests from worker
/// threads of its own); a failure is one line on stderr, prefixed with the program's name, and
/// its exit code.
fn run_as(program: &str, command: impl std::future::Future<Output = Result<u8, CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{program}: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
