//! `status`: counts by state and result code, and the last runs.

use std::process::ExitCode;

use crate::cli::StatusArgs;
use crate::ledger::{self, queries};

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = super::ledger_path(&args.ledger)?;
    let conn = ledger::open_existing(&path)?;
    let c = queries::status(&conn, 5)?;
    if args.json {
        println!("{}", serde_json::to_string(&c)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("ledger {}: {} rows", path.display(), c.total);
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
        ("pending", c.pending, String::new()),
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
        println!("  {name:<16} {n:>8} {note}");
    }
    if !c.by_result_code.is_empty() {
        println!("by result code:");
        for (code, n) in &c.by_result_code {
            println!("  {code:<30} {n:>8}");
        }
    }
    if !c.last_runs.is_empty() {
        println!("last runs:");
        for r in &c.last_runs {
            println!(
                "  #{:<4} {}  {:<11} read {} succeeded {} circled {} failed {} rejected {} drifted {}{}",
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
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
