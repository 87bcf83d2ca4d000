//! `validate FILE...`: every rule checked offline; nothing is sent and nothing is written except
//! the rejects file asked for.

use std::process::ExitCode;

use crate::cli::ValidateArgs;
use crate::input::{Input, Item, RejectsWriter};
use crate::output::{Inputs, Printer};

pub fn run(args: ValidateArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    if let Some(rejects) = &args.rejects {
        // validate reads no ledger, but a rejects file must not land on the one the settings
        // name either (one tab completion away).
        let ledger = super::ledger_path(&crate::cli::LedgerArgs::default()).ok();
        let mut inputs = Inputs::new().sheets(&args.files).settings(None);
        if let Some(ledger) = &ledger {
            inputs = inputs.ledger(ledger);
        }
        inputs.check("--rejects", rejects)?;
    }
    let input = Input::open(&args.files, args.input.options())?;
    printer.input_notices(input.notices());
    let mut rejects_csv = match &args.rejects {
        Some(path) => Some(RejectsWriter::new(crate::output::sink(Some(path))?)?),
        None => None,
    };
    let (mut valid, mut rejected, mut duplicates) = (0u64, 0u64, 0u64);
    for item in input.checked() {
        match item? {
            Item::Row(_) => valid += 1,
            Item::Duplicate { .. } => duplicates += 1,
            Item::Reject(r) => {
                rejected += 1;
                printer.reject(&r);
                if let Some(w) = rejects_csv.as_mut() {
                    w.write(&r)?;
                }
            }
        }
    }
    if let Some(w) = rejects_csv {
        w.finish()?.finish()?;
    }
    if printer.json_result() {
        printer.out_json(&serde_json::json!({
            "valid": valid, "rejected": rejected, "duplicates": duplicates,
            "rejects_file": args.rejects,
        }));
    } else {
        printer.out_line(&format!(
            "{valid} valid rows, {rejected} rejected, {duplicates} duplicates skipped"
        ));
    }
    Ok(ExitCode::from(if rejected > 0 {
        super::exit::PROBLEMS
    } else {
        super::exit::OK
    }))
}
