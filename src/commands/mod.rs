//! One module per subcommand, each thin: it wires `input`, `api`, `ledger` and `pipeline`
//! together and turns the result into an exit code.

pub mod annotate_xlsx;
pub mod completions;
pub mod doctor;
pub mod export;
pub mod keygen;
pub mod ledger;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod sign;
pub mod status;
pub mod validate;

/// Exit codes (SPEC section 5).
pub mod exit {
    /// Every row done.
    pub const OK: u8 = 0;
    /// Fatal: configuration, key, unreadable file, missing columns, ledger locked, run aborted.
    pub const FATAL: u8 = 1;
    /// Usage.
    pub const USAGE: u8 = 2;
    /// Finished, but some rows were rejected or failed (for reconcile: differences found).
    pub const PROBLEMS: u8 = 3;
    /// Interrupted.
    pub const INTERRUPTED: u8 = 130;
}

/// The ledger path from `--ledger`, `PMS_ONBOARD_LEDGER`, the config file or the default.
pub fn ledger_path(args: &crate::cli::LedgerArgs) -> anyhow::Result<std::path::PathBuf> {
    Ok(std::path::PathBuf::from(layers(args)?.require("ledger")?))
}

fn layers(args: &crate::cli::LedgerArgs) -> anyhow::Result<crate::config::Layers> {
    crate::config::Layers::resolve(&args.flags(), args.config.as_deref())
}

/// The ledger path, and the gateway the settings name (`endpoint`, by default AlipayHK's, with
/// `client_id`), for the commands that compare a sheet with the ledger: a ledger of another
/// gateway is refused. Settings that name no client id name no gateway: the ledger is read as
/// it is.
pub fn ledger_and_gateway(
    args: &crate::cli::LedgerArgs,
) -> anyhow::Result<(std::path::PathBuf, Option<crate::ledger::Gateway>)> {
    use crate::config::Origin;
    let layers = layers(args)?;
    let path = std::path::PathBuf::from(layers.require("ledger")?);
    let Some(client_id) = layers.optional("client_id") else {
        return Ok((path, None));
    };
    let gateway =
        crate::ledger::Gateway::new(layers.require("endpoint")?, client_id).map_err(|e| {
            anyhow::anyhow!(
                "setting `endpoint` ({}): {e}",
                layers.origin("endpoint").unwrap_or(&Origin::Default)
            )
        })?;
    Ok((path, Some(gateway)))
}

/// Shows what opening the ledger did: answers taken in from the side file, an upgrade that
/// changed rows.
pub fn show_notices(printer: &crate::output::Printer, opened: &crate::ledger::Opened) {
    show(printer, opened.notices());
}

/// Tells the person what opening the ledger did.
pub fn show(printer: &crate::output::Printer, notices: &[crate::ledger::Notice]) {
    use crate::ledger::Notice;
    for notice in notices {
        match notice {
            Notice::TakenIn(_) => printer.info(&notice.to_string()),
            Notice::Upgraded(_) | Notice::Remote(_) => printer.warn(&notice.to_string()),
        }
    }
}

/// Identities `run`, `reconcile` and `export --annotate` keep in memory at a time before they move
/// to a temporary file: 16 MiB of table at most (32 bytes a slot, at least half of them empty).
const IDENTITIES_IN_MEMORY: usize = 1 << 18;

/// The duplicate check of the commands whose memory must not grow with the sheet: identities in
/// memory up to a budget (`PMS_ONBOARD_IDENTITIES_IN_MEMORY`, default 262,144), moved to a scratch
/// table on a temporary file each time the budget is reached. `validate` keeps them all in memory
/// (the fastest).
pub fn bounded_dedupe() -> anyhow::Result<crate::input::Dedupe> {
    use anyhow::Context as _;
    const VAR: &str = "PMS_ONBOARD_IDENTITIES_IN_MEMORY";
    let budget = match std::env::var(VAR) {
        Ok(v) => v.trim().parse().with_context(|| {
            format!("{VAR}={v:?}: give a number of rows (identities kept in memory)")
        })?,
        Err(_) => IDENTITIES_IN_MEMORY,
    };
    let spill = crate::ledger::scratch::Prints::open()
        .context("cannot open a temporary table for the identities of the sheet")?;
    Ok(crate::input::Dedupe::Bounded {
        budget,
        spill: Box::new(spill),
    })
}
