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
    let printer = Arc::new(Printer::new(cli.log_format == LogFormat::Json, cli.json));
    init_logging(cli.log_format, &printer);
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

/// Logs go to stderr: warnings and errors through the Printer, like every message a person
/// reads (`output::logs`); `RUST_LOG` for more, the diagnostic levels in tracing's own format.
fn init_logging(format: LogFormat, printer: &Arc<Printer>) {
    use tracing_subscriber::filter::{LevelFilter, filter_fn};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, fmt};
    let filter = EnvFilter::try_from_default_env()
        // The platform's certificate verifier logs each failure as an error of its own; the
        // failure reaches the person once, in the error of the connection it failed.
        .unwrap_or_else(|_| EnvFilter::new("warn,pms_onboard=info,rustls_platform_verifier=off"));
    let people =
        pms_onboard::output::logs::ToPrinter(printer.clone()).with_filter(LevelFilter::WARN);
    let diagnostics = match format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Text => fmt::layer()
            .without_time()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter_fn(|m| *m.level() > tracing::Level::WARN));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(people)
        .with(diagnostics)
        .try_init();
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
