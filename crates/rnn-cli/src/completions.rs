//! `rnn completions SHELL`: the shell's completion script for `rnn`, on stdout (made by
//! `clap_complete` from the same definitions as the help, so the two cannot disagree).
//!
//! ```text
//! rnn completions bash > ~/.local/share/bash-completion/completions/rnn
//! rnn completions zsh > ~/.zfunc/_rnn          # with fpath+=(~/.zfunc) before compinit
//! rnn completions fish > ~/.config/fish/completions/rnn.fish
//! ```

use anyhow::Result;
use clap_complete::Shell;

/// `rnn completions SHELL`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

/// Entry point of `rnn completions`: `command` is the whole `rnn` command line definition.
pub fn main(args: Args, mut command: clap::Command) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "rnn", &mut out);
    Ok(())
}
