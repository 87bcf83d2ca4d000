//! `report [--run ID] -o PATH`: the ledger as one self-contained HTML page (see `crate::report`).

use std::path::Path;
use std::process::ExitCode;

use crate::cli::ReportArgs;
use crate::ledger;
use crate::output::{Inputs, Printer};

pub fn run(args: ReportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let path = super::ledger_path(&args.ledger)?;
    Inputs::new()
        .ledger(&path)
        .settings(args.ledger.config.as_deref())
        .check("-o", &args.output)?;
    let conn = ledger::open_existing(&path)?;
    super::show_notices(printer, &conn);
    write(&conn, args.run, &args.output)?;
    if printer.json_result() {
        printer.out_json(&serde_json::json!({"report": args.output, "run": args.run}));
    } else {
        printer.info(&format!("report written to {}", args.output.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the report of `run` (or of the whole ledger) to `output`, whole or not at all. The
/// caller has checked that `output` is none of the ledger's files.
pub fn write(conn: &rusqlite::Connection, run: Option<i64>, output: &Path) -> anyhow::Result<()> {
    let html = crate::report::render(conn, run)?;
    crate::output::files::write_whole(output, html.as_bytes())
}
