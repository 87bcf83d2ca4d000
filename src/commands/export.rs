//! `export`: rows of the ledger as CSV or JSON, filtered by state; `--state rejected` gives the
//! rejects of the last run (`file,line,column,value,reason`); `--annotate FILE` writes the user's
//! own spreadsheet back with the outcome of each row appended (a workbook as a new `.xlsx`).

use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::cli::{ExportArgs, ExportFormat};
use crate::input::workbook::{self, Format};
use crate::ledger::{self, State, queries};
use crate::output::text::json_inert;
use crate::output::{CsvWriter, Inputs, Printer};

/// The export columns, in order (SPEC section 5): `tracer_id` is the last attempt's.
pub const COLUMNS: [&str; 20] = [
    "key",
    "save_way_type",
    "ipay_trade_no",
    "partner_id",
    "merchant_id",
    "merchant_name",
    "store_id",
    "store_name",
    "mall_group_label",
    "mall_label",
    "state",
    "ambiguous",
    "pms_label",
    "result_code",
    "result_message",
    "attempts",
    "source_file",
    "source_line",
    "updated_at",
    "tracer_id",
];

pub fn run(args: ExportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let (path, gateway) = super::ledger_and_gateway(&args.ledger)?;
    if let Some(output) = &args.output {
        Inputs::new()
            .ledger(&path)
            .annotated(args.annotate.as_deref())
            .settings(args.ledger.config.as_deref())
            .check("-o", output)?;
    }
    // Annotating a sheet says what was done for it: at the gateway the settings name, if any.
    let gateway = gateway.filter(|_| args.annotate.is_some());
    if args.annotate.is_some() && args.output.is_none() && printer.json_result() {
        bail!(
            "--json: export --annotate without -o writes the sheet itself to stdout; name the \
             annotated file with -o and the result is JSON"
        );
    }
    let conn = ledger::open_existing_for(&path, gateway.as_ref())?;
    super::show_notices(printer, &conn);
    // The result of an export to a file, for --json (the rows themselves are the result of an
    // export to stdout).
    let written = |rows: Option<u64>| {
        if let (Some(output), true) = (&args.output, printer.json_result()) {
            printer.out_json(&serde_json::json!({
                "output": output, "annotated": args.annotate, "rows": rows}));
        }
    };
    if let Some(sheet) = &args.annotate {
        let output = args.output.as_deref();
        let format =
            workbook::detect(sheet).with_context(|| format!("cannot read {}", sheet.display()))?;
        let code = match format {
            Format::Csv => super::reconcile::annotate(&conn, sheet, args.input.encoding, output),
            _ => super::annotate_xlsx::annotate(&conn, sheet, &args.input.options(), output),
        }?;
        written(None);
        return Ok(code);
    }
    let mut states = Vec::new();
    let mut rejected = false;
    for s in &args.states {
        match (s.as_str(), State::parse(s)) {
            ("rejected", _) => rejected = true,
            (_, Some(st)) => states.push(st),
            _ => bail!(
                "unknown --state {s:?}: use pending, in_flight, succeeded, already_circled, failed or rejected"
            ),
        }
    }
    let format = args.format.unwrap_or(match args.json {
        true => ExportFormat::Json,
        false => ExportFormat::Csv,
    });
    let mut out = crate::output::sink(args.output.as_deref())?;
    let mut rows = 0u64;
    if rejected && states.is_empty() {
        let rejects = match queries::last_run_id(&conn)? {
            Some(run) => queries::rejects(&conn, run)?,
            None => Vec::new(),
        };
        match format {
            ExportFormat::Csv => crate::input::write_rejects_csv(&mut out, &rejects)?,
            ExportFormat::Json => {
                let list: Vec<_> = rejects
                    .iter()
                    .map(|r| {
                        serde_json::json!({"file": r.file, "line": r.line, "column": r.column,
                                           "value": r.value, "reason": r.reason})
                    })
                    .collect();
                let json = serde_json::to_string_pretty(&list)?;
                out.write_all(json_inert(&json).as_bytes())?;
                writeln!(out)?;
            }
        }
        out.finish()?;
        written(Some(rejects.len() as u64));
        return Ok(ExitCode::SUCCESS);
    }
    if rejected {
        bail!(
            "--state rejected has columns of its own (file,line,column,value,reason): export it on its own"
        );
    }
    match format {
        ExportFormat::Csv => {
            let mut w = CsvWriter::new(&mut out);
            w.write_record(COLUMNS)?;
            queries::rows(&conn, &states, |r| {
                rows += 1;
                w.serialize(&r)?;
                Ok(())
            })?;
            w.into_inner()?;
        }
        ExportFormat::Json => {
            // A JSON array written row by row, so memory stays flat on a large ledger; the C1
            // controls and bidi overrides escaped too (`json_inert`): the same JSON text.
            write!(out, "[")?;
            let mut first = true;
            queries::rows(&conn, &states, |r| {
                rows += 1;
                write!(out, "{}\n  ", if first { "" } else { "," })?;
                first = false;
                out.write_all(json_inert(&serde_json::to_string(&r)?).as_bytes())?;
                Ok(())
            })?;
            writeln!(out, "\n]")?;
        }
    }
    out.finish()?;
    written(Some(rows));
    Ok(ExitCode::SUCCESS)
}

use std::io::Write as _;
