//! `report [--run ID] -o PATH`: the ledger as one self-contained HTML page (see `crate::report`).

use std::process::ExitCode;

use crate::cli::ReportArgs;
use crate::ledger;
use crate::output::Printer;

pub fn run(args: ReportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let path = super::ledger_path(&args.ledger)?;
    let conn = ledger::open_existing(&path)?;
    super::show_notices(printer, &conn);
    crate::report::write(&conn, args.run, &args.output)?;
    printer.info(&format!("report written to {}", args.output.display()));
    Ok(ExitCode::SUCCESS)
}
