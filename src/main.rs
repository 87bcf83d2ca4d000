//! `pms-onboard`: parse the command line, dispatch, and map the result to an exit code.
//! Errors are printed once, as the error and its causes; a broken pipe is not an error.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use pms_onboard::cli::{Cli, Command, LogFormat, ManArgs};
use pms_onboard::commands::{self, exit};
use pms_onboard::output::Printer;

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
    ignore_file_size_signal();
    init_logging(cli.log_format);
    let printer = Arc::new(Printer::new(cli.log_format == LogFormat::Json, cli.json));
    match run(cli, &printer) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
            printer.error(&e.to_string(), &causes);
            ExitCode::from(exit::FATAL)
        }
    }
}

fn run(cli: Cli, printer: &Arc<Printer>) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Run(args) => commands::run::run(args, printer.clone()),
        Command::Validate(args) => commands::validate::run(args, printer),
        Command::Status(args) => commands::status::run(args, printer),
        Command::Export(mut args) => {
            args.json = json;
            commands::export::run(args, printer)
        }
        Command::Reconcile(args) => commands::reconcile::run(args, printer),
        Command::Report(args) => commands::report::run(args, printer),
        Command::Sandbox(args) => commands::sandbox::run(args, printer),
        Command::Sign(args) => commands::sign::run(args, printer),
        Command::Keygen(args) => commands::keygen::run(args, printer),
        Command::Doctor(mut args) => {
            args.json = printer.json_result();
            commands::doctor::run(args, printer)
        }
        Command::Ledger(command) => commands::ledger::run(command, printer),
        Command::Completions(_) | Command::Man(ManArgs { dir: None }) if printer.json_result() => {
            commands::completions::not_json(printer)
        }
        Command::Completions(args) => commands::completions::completions(args, printer),
        Command::Man(args) => commands::completions::man(args, printer),
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

/// A file-size limit (`ulimit -f`) would kill the process with SIGXFSZ in the middle of a
/// ledger write; ignored, the write fails with an error the ledger writer handles (it keeps the
/// answers and writes them to the side file).
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
