//! `pms-onboard`: parse the command line, dispatch, and map the result to an exit code.
//! Errors are printed once, as the error and its causes; a broken pipe is not an error.

use std::process::ExitCode;

use clap::Parser as _;
use pms_onboard::cli::{Cli, Command, LogFormat};
use pms_onboard::commands::{self, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit::FATAL)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.log_format == LogFormat::Json;
    match cli.command {
        Command::Run(args) => commands::run::run(args, json),
        Command::Validate(args) => commands::validate::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Reconcile(args) => commands::reconcile::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Sandbox(args) => commands::sandbox::run(args),
        Command::Sign(args) => commands::sign::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
    }
}

/// Logs go to stderr: warnings and our own progress by default, `RUST_LOG` for more.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,pms_onboard=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().with_target(false).init(),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
