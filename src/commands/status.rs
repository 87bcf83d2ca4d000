//! `status`: counts by state and result code, and the last runs.

use std::process::ExitCode;

use crate::cli::StatusArgs;
use crate::ledger;
use crate::output::Printer;

pub fn run(args: StatusArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let path = super::ledger_path(&args.ledger)?;
    let (c, notices) = ledger::status(&path, 5)?;
    super::show(printer, &notices);
    if printer.json_result() {
        printer.out_json(&serde_json::to_value(&c)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!("ledger {}: {} rows\n", ledger::shown(&path), c.total);
    let lines = [
        ("succeeded", c.succeeded, String::new()),
        (
            "already_circled",
            c.already_circled,
            if c.ambiguous > 0 {
                format!(
                    "({} ambiguous: most likely our own earlier call)",
                    c.ambiguous
                )
            } else {
                String::new()
            },
        ),
        (
            "pending",
            c.pending,
            if c.unverified > 0 {
                format!(
                    "({} with an answer not verified: check alipay_public_key, then run again)",
                    c.unverified
                )
            } else {
                String::new()
            },
        ),
        ("in_flight", c.in_flight, String::new()),
        (
            "failed",
            c.failed,
            format!(
                "({} transient: run again; {} permanent: fix the sheet or --retry-failed)",
                c.failed_transient, c.failed_permanent
            ),
        ),
    ];
    for (name, n, note) in lines {
        let line = format!("  {name:<16} {n:>8} {note}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !c.by_result_code.is_empty() {
        out.push_str("by result code:\n");
        for (code, n) in &c.by_result_code {
            out.push_str(&format!("  {code:<30} {n:>8}\n"));
        }
    }
    if !c.last_runs.is_empty() {
        out.push_str("last runs:\n");
        for r in &c.last_runs {
            out.push_str(&format!(
                "  #{:<4} {}  {:<11} read {} succeeded {} circled {} failed {} rejected {} drifted {}{}\n",
                r.id,
                r.started_at,
                r.outcome,
                r.rows_read,
                r.succeeded,
                r.already_circled,
                r.failed,
                r.rejected,
                r.drifted,
                r.message
                    .as_deref()
                    .map(|m| format!("  ({m})"))
                    .unwrap_or_default()
            ));
        }
    }
    printer.out(&out);
    Ok(ExitCode::SUCCESS)
}
