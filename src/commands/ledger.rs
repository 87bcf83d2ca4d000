//! `ledger upgrade [--accept-stored-ids]`: brings the ledger to this version and says what
//! changed. Every command upgrades the ledger it opens; this one is for the upgrade that stops
//! rather than guess (rows whose ids hold `|`, which an earlier version may have taken for one
//! store), once the operator has checked those stores with AlipayHK. `ledger copy FROM TO`: a
//! SQLite ledger into PostgreSQL or back (`ledger::postgres::copy`).

use std::process::ExitCode;

use crate::cli::{LedgerCommand, LedgerCopyArgs, LedgerUpgradeArgs};
use crate::ledger::{self, LedgerLock, StoredIds};
use crate::output::Printer;

pub fn run(command: LedgerCommand, printer: &Printer) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Upgrade(args) => upgrade(args, printer),
        LedgerCommand::Copy(args) => copy(args, printer),
    }
}

fn upgrade(args: LedgerUpgradeArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let path = super::ledger_path(&args.ledger)?;
    if let Some(url) = path.to_str().filter(|l| ledger::postgres::is_url(l)) {
        anyhow::bail!(
            "{}: a PostgreSQL ledger is brought to this version by every command that connects to \
             it (once, under an advisory lock): `pms-onboard status --ledger URL` does it",
            ledger::postgres::redacted(url)
        );
    }
    if !path.exists() {
        anyhow::bail!(
            "no ledger at {}: pass --ledger PATH (a new ledger needs no upgrade)",
            path.display()
        );
    }
    // Keys are rewritten: no run may be using the ledger meanwhile.
    let _lock = LedgerLock::acquire(&path)?;
    let ids = match args.accept_stored_ids {
        true => StoredIds::Accept,
        false => StoredIds::Refuse,
    };
    let upgrade = ledger::upgrade(&path, ids)?;
    for row in &upgrade.accepted {
        printer.warn(&format!(
            "the ids stored are taken as the store it is: {row} (its key is now {})",
            row.key_now()
        ));
    }
    if printer.json_result() {
        let accepted: Vec<_> = upgrade.accepted.iter().map(|r| r.to_string()).collect();
        printer.out_json(&serde_json::json!({
            "ledger": path, "upgrade": upgrade.to_string(), "accepted_stored_ids": accepted}));
    } else {
        printer.info(&format!("{}: {upgrade}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ledger copy FROM TO`: between a SQLite ledger and a PostgreSQL one, verified afterwards.
fn copy(args: LedgerCopyArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    use crate::ledger::postgres::copy::{Place, copy};
    let (from, to) = (Place::parse(&args.from), Place::parse(&args.to));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let copied = runtime.block_on(copy(&from, &to))?;
    printer.info(&format!("{} -> {}: {copied}", from.shown(), to.shown()));
    Ok(ExitCode::SUCCESS)
}
