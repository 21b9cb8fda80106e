//! `authwire completions SHELL`: a completion script generated from the clap definitions.

use crate::args::Cli;
use crate::error::CliError;
use clap::CommandFactory;

/// Run `authwire completions SHELL`.
pub(crate) fn exec(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "authwire", &mut script);
    crate::output::out_bytes(&script)
}
