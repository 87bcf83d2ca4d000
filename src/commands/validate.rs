//! `validate FILE...`: every rule checked offline; nothing is sent and nothing is written except
//! the rejects file asked for. With `--ledger`, also how the sheet stands against that ledger
//! (read only, as `run --dry-run` reads it): what a run would send, skip as done, skip as failed
//! before, or hold back as drift.

use std::process::ExitCode;

use crate::cli::ValidateArgs;
use crate::input::{Input, Item, Reject, RejectsWriter};
use crate::output::{Inputs, Printer};
use crate::pipeline::dry_run::{self, Rehearsal};

pub fn run(args: ValidateArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let settings = crate::cli::LedgerArgs::default();
    if let Some(rejects) = &args.rejects {
        // A rejects file must not land on the ledger named (or the one the settings name: one
        // tab completion away).
        let ledger = match &args.ledger {
            Some(l) => Some(l.clone()),
            None => super::ledger_path(&settings).ok(),
        };
        let mut inputs = Inputs::new().sheets(&args.files).settings(None);
        if let Some(ledger) = &ledger {
            inputs = inputs.ledger(ledger);
        }
        inputs.check("--rejects", rejects)?;
    }
    let mut rejects_csv = match &args.rejects {
        Some(path) => Some(RejectsWriter::new(crate::output::sink(Some(path))?)?),
        None => None,
    };
    let mut write_reject = |r: &Reject| -> anyhow::Result<()> {
        if let Some(w) = rejects_csv.as_mut() {
            w.write(r)?;
        }
        Ok(())
    };
    let (counts, against) = match &args.ledger {
        None => (check(&args, printer, &mut write_reject)?, None),
        Some(ledger) => {
            // The gateway the settings name, when they name one: a ledger of another gateway
            // says what was done there, not here.
            let (_, gateway) =
                super::ledger_and_gateway(&settings).unwrap_or((ledger.clone(), None));
            let r = dry_run::rehearse(
                &args.files,
                args.input.options(),
                (ledger, gateway.as_ref()),
                false,
                printer,
                &mut write_reject,
            )?;
            let valid = r.would_send + r.already_done + r.failed_before + r.drifted;
            ((valid, r.rejected, r.duplicates), Some(r))
        }
    };
    if let Some(w) = rejects_csv {
        w.finish()?.finish()?;
    }
    let (valid, rejected, duplicates) = counts;
    let shown = args.ledger.as_deref().map(crate::ledger::shown);
    if printer.json_result() {
        let mut result = serde_json::json!({
            "valid": valid, "rejected": rejected, "duplicates": duplicates,
            "rejects_file": args.rejects,
        });
        if let (Some(r), Some(shown)) = (&against, &shown) {
            result["ledger"] = serde_json::json!({
                "ledger": shown, "would_send": r.would_send, "already_done": r.already_done,
                "failed_before": r.failed_before, "drifted": r.drifted,
            });
        }
        printer.out_json(&result);
    } else {
        printer.out_line(&format!(
            "{valid} valid rows, {rejected} rejected, {duplicates} duplicates skipped"
        ));
        if let (Some(r), Some(shown)) = (&against, &shown) {
            printer.out_line(&standing(r, shown));
        }
    }
    let drifted = against.as_ref().is_some_and(|r| r.drifted > 0);
    Ok(ExitCode::from(if rejected > 0 || drifted {
        super::exit::PROBLEMS
    } else {
        super::exit::OK
    }))
}

/// The rules alone: `(valid, rejected, duplicates)`.
fn check(
    args: &ValidateArgs,
    printer: &Printer,
    on_reject: &mut dyn FnMut(&Reject) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, u64, u64)> {
    let input = Input::open(&args.files, args.input.options())?;
    printer.input_notices(input.notices());
    let (mut valid, mut rejected, mut duplicates) = (0u64, 0u64, 0u64);
    for item in input.checked() {
        match item? {
            Item::Row(_) => valid += 1,
            Item::Duplicate { .. } => duplicates += 1,
            Item::Reject(r) => {
                rejected += 1;
                printer.reject(&r);
                on_reject(&r)?;
            }
        }
    }
    Ok((valid, rejected, duplicates))
}

/// How the valid rows stand against the ledger, in one line.
fn standing(r: &Rehearsal, ledger: &str) -> String {
    format!(
        "against the ledger {ledger}: {} would be sent, {} already done, {} failed before (sent \
         again with --retry-failed), {} drifted (not sent: the API cannot move a store)",
        r.would_send, r.already_done, r.failed_before, r.drifted
    )
}
