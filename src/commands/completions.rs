//! `completions SHELL` and `man`: the shell completion script and the man pages, made from the
//! same definitions as `--help` (clap_complete, clap_mangen), so they cannot drift from it.
//!
//! ```text
//! pms-onboard completions bash > ~/.local/share/bash-completion/completions/pms-onboard
//! pms-onboard man --dir ~/.local/share/man/man1
//! ```

use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::output::Printer;

pub fn completions(args: CompletionsArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "pms-onboard", &mut script);
    printer.out_verbatim(&String::from_utf8_lossy(&script));
    Ok(ExitCode::SUCCESS)
}

/// `--json` with a command whose output is a document (a script, a man page): refused.
pub fn not_json(printer: &Printer) -> anyhow::Result<ExitCode> {
    printer.error(
        "--json: completions and man print a document (a shell script, a man page), not a \
         result: leave out --json (man --dir writes files and does take it)",
        &[],
    );
    Ok(ExitCode::from(super::exit::USAGE))
}

pub fn man(args: ManArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            printer.out_verbatim(&String::from_utf8_lossy(&page));
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            if printer.json_result() {
                printer.out_json(&serde_json::json!({"man_pages": dir}));
            } else {
                printer.info(&format!(
                    "man pages written to {} (read one with: man -l {}/pms-onboard-run.1)",
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
