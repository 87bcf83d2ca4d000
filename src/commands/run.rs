//! `run FILE...`: submit every row not yet done. With `--sandbox`, the same job against an
//! in-process simulator with throw-away keys, on a ledger of its own. `--limit N` sends at most N
//! rows (a canary); `--dry-run` says what a run would do and sends nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use super::exit;
use crate::api::checks;
use crate::api::client::Client;
use crate::api::keys::{PrivateKey, PublicKey};
use crate::cli::RunArgs;
use crate::config::{Layers, Origin, RunSettings};
use crate::ledger::Gateway;
use crate::model::RunEnd;
use crate::output::Printer;
use crate::pipeline::{self, Plan, Report, dry_run, policy::RetryPolicy, progress};

/// The ledger a sandbox run uses unless `--ledger` says otherwise: sandbox results must never
/// make a real run skip a row.
pub const SANDBOX_LEDGER: &str = "pms-sandbox-ledger.db";
/// The client id of the built-in sandbox.
pub const SANDBOX_CLIENT_ID: &str = "2102000000000000000";
/// The rate a sandbox run uses unless one is set.
const SANDBOX_RATE: &str = "100";

pub fn run(args: RunArgs, printer: Arc<Printer>) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::api::keys::seed_thread_rng)
        .build()
        .context("cannot start the async runtime")?;
    let mut layers = Layers::resolve(&args.settings.flags(), args.settings.config.as_deref())?;
    // Kept alive for the whole run: the sandbox and its throw-away keys.
    let mut sandbox_guard = None;
    if args.sandbox {
        let (guard, endpoint, keys) = rt.block_on(start_sandbox(&args.files))?;
        for (name, value) in [
            ("endpoint", endpoint),
            ("client_id", SANDBOX_CLIENT_ID.to_owned()),
            (
                "private_key",
                keys.join("client_private.pem").display().to_string(),
            ),
            (
                "alipay_public_key",
                keys.join("alipay_public.pem").display().to_string(),
            ),
        ] {
            layers.set(name, value, Origin::Sandbox);
        }
        // The sandbox gets its own ledger unless `--ledger` names one: a ledger from the
        // environment or the settings file is the real one, and simulated successes in it would
        // make a real run skip rows. It gets a brisk default rate unless one is set.
        if !matches!(layers.origin("ledger"), Some(Origin::Flag(_))) {
            layers.set("ledger", SANDBOX_LEDGER.to_owned(), Origin::Sandbox);
        }
        if layers.origin("rate") == Some(&Origin::Default) {
            layers.set("rate", SANDBOX_RATE.to_owned(), Origin::Sandbox);
        }
        sandbox_guard = Some(guard);
    }
    let settings = RunSettings::from_layers(&layers)?;
    if let Some(report) = &args.report {
        crate::output::Inputs::new()
            .ledger(&settings.ledger)
            .sheets(&args.files)
            .settings(args.settings.config.as_deref())
            .file("the private key", Some(&settings.private_key))
            .file("AlipayHK's public key", Some(&settings.alipay_public_key))
            .check("--report", report)?;
    }
    // The gateway the ledger must belong to: the sandbox is one gateway whatever its port.
    let gateway = if args.sandbox {
        Gateway::built_in_sandbox(&settings.client_id)
    } else {
        Gateway::new(&settings.endpoint, &settings.client_id)
            .map_err(|e| anyhow::anyhow!("setting `endpoint`: {e}"))?
    };
    let client = client(&settings, &printer)?;
    if args.sandbox {
        printer.info(&format!(
            "sandbox: {} (throw-away keys, ledger {})",
            settings.endpoint,
            settings.ledger.display()
        ));
    }
    if args.dry_run {
        return dry_run(&args, &settings, &gateway, &client, &printer);
    }
    let plan = Plan {
        files: args.files.clone(),
        input: args.input.options(),
        dedupe: super::bounded_dedupe()?,
        ledger: settings.ledger.clone(),
        gateway,
        rate: settings.rate,
        concurrency: settings.concurrency,
        policy: RetryPolicy::new(
            settings.max_attempts,
            settings.backoff,
            settings.retry_later.clone(),
        ),
        retry_failed: args.retry_failed,
        limit: args.limit,
        config_json: serde_json::to_string(&layers.describe())?,
        alipay_public_key: settings.alipay_public_key.display().to_string(),
        timeout: settings.timeout,
    };
    let report = pipeline::execute(&rt, client, plan, printer.clone())?;
    if let Some(guard) = sandbox_guard {
        rt.block_on(guard.sandbox.shutdown());
    }
    let code = summarise(&report, &printer);
    if let Some(path) = &args.report {
        // A report that cannot be written does not undo the run; it fails a run that was clean.
        let written = crate::ledger::open_existing(&settings.ledger)
            .and_then(|conn| super::report::write(&conn, Some(report.run_id), path));
        match written {
            Ok(()) => printer.info(&format!("report written to {}", path.display())),
            Err(e) => {
                printer.error(&format!("the report was not written: {e:#}"), &[]);
                if code == exit::OK {
                    return Ok(ExitCode::from(exit::FATAL));
                }
            }
        }
    }
    Ok(ExitCode::from(code))
}

/// The summary (a table, or one JSON object for cron), what to do next, and the exit code.
fn summarise(report: &Report, printer: &Printer) -> u8 {
    for spilled in &report.spilled {
        pipeline::show_spill(printer, spilled);
    }
    if printer.json_result() {
        // For cron: one JSON object a machine can read, instead of the table.
        printer.out_json(&json!({
            "run_id": report.run_id,
            "outcome": report.end.as_str(),
            "message": report.message,
            "requests": report.requests,
            "elapsed_seconds": report.elapsed.as_secs_f64(),
            "counts": report.counts,
            "throttling": report.throttling.as_ref().map(|t| json!({
                "times": t.times,
                "share": t.share(),
                "limits_found": t.limits,
                "accepted_per_second": t.accepted,
                "settled_per_second": t.settled,
                "advised_rate": t.advised_rate(),
            })),
            "left_by_limit": report.left_by_limit,
            "concurrency": report.concurrency.to_json(),
        }));
    } else {
        printer.out(&progress::summary_table(
            &report.counts,
            report.elapsed,
            report.requests,
            report.concurrency.most,
            report.end.as_str(),
        ));
    }
    if let Some(advice) = &report.advice {
        printer.warn(advice);
    }
    if let Some(t) = &report.throttling {
        printer.warn(&t.message());
    }
    let c = &report.counts;
    match report.end {
        RunEnd::Interrupted => {
            printer.info("interrupted: run the same command again to finish");
            exit::INTERRUPTED
        }
        RunEnd::Aborted => {
            printer.error(
                &format!(
                    "the run stopped: {}",
                    report.message.as_deref().unwrap_or("unknown reason")
                ),
                &[],
            );
            printer
                .info("rows not sent stay pending; fix the cause and run the same command again");
            exit::FATAL
        }
        RunEnd::Completed => {
            if let Some(left) = report.left_by_limit {
                printer.info(&format!(
                    "canary: --limit stopped the run after {} row(s); {left} row(s) are still \
                     pending. Check the rows sent (pms-onboard export --state succeeded, or \
                     pms-onboard status), then run the same command without --limit to send the \
                     rest",
                    c.sent
                ));
            }
            if c.failed + c.rejected + c.drifted + c.unverified > 0 {
                printer.info(
                    "finished with problems: pms-onboard export --state failed / --state rejected, \
                     or pms-onboard reconcile, show each row and what to do",
                );
                exit::PROBLEMS
            } else {
                exit::OK
            }
        }
    }
}

/// `--dry-run`: what a run would do, and the exact request it would send first.
fn dry_run(
    args: &RunArgs,
    settings: &RunSettings,
    gateway: &Gateway,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let r = dry_run::rehearse(
        &args.files,
        args.input.options(),
        (&settings.ledger, Some(gateway)),
        args.retry_failed,
        printer,
        &mut |_| Ok(()),
    )?;
    let example = r.first.as_ref().map(|src| {
        let signed = client.sign(&src.row);
        format!(
            "the first request it would send ({}:{}), exactly as signed:\n\
             POST {}{}\n{}content-type: application/json; charset=UTF-8\n\nbody:\n{}\n",
            src.file,
            src.line,
            settings.endpoint.trim_end_matches('/'),
            crate::api::signing::API_PATH,
            super::sign::show_signed(&signed, &settings.client_id),
            String::from_utf8_lossy(&signed.body)
        )
    });
    if printer.json_result() {
        printer.out_json(&json!({"dry_run": r, "example": example}));
    } else {
        let mut out = format!(
            "dry run: nothing sent, nothing written (ledger {})\n",
            settings.ledger.display()
        );
        out.push_str(&progress::counts_table(&[
            ("rows read", r.rows_read, ""),
            ("would send", r.would_send, ""),
            (
                "already done",
                r.already_done,
                "skipped: succeeded or circled earlier",
            ),
            (
                "failed before",
                r.failed_before,
                "skipped: failed for good earlier (--retry-failed sends them)",
            ),
            (
                "drifted",
                r.drifted,
                "never sent: the API cannot move a store",
            ),
            ("rejected", r.rejected, "never sent: fix the row"),
            ("duplicates", r.duplicates, "skipped"),
        ]));
        if let Some(example) = &example {
            out.push('\n');
            out.push_str(example);
        }
        printer.out(&out);
    }
    Ok(ExitCode::from(if r.rejected + r.drifted > 0 {
        exit::PROBLEMS
    } else {
        exit::OK
    }))
}

/// Loads the keys and builds the client; any problem stops the run before anything is sent.
/// The client, after the rules `doctor` shares (`api::checks`): a verdict FAIL refuses the run
/// before anything is sent, a warning is shown and the run goes on.
fn client(s: &RunSettings, printer: &Printer) -> anyhow::Result<Client> {
    if let Ok(url) = url::Url::parse(&s.endpoint) {
        shared_rule("setting `endpoint`", checks::host(&url), printer)?;
    }
    let private_key = PrivateKey::from_file(&s.private_key).context("setting `private_key`")?;
    if let Some(found) = checks::key_permissions(&s.private_key) {
        shared_rule("setting `private_key`", found, printer)?;
    }
    let alipay_public_key =
        PublicKey::from_file(&s.alipay_public_key).context("setting `alipay_public_key`")?;
    shared_rule(
        "settings `alipay_public_key` and `private_key`",
        checks::key_pair(
            &private_key,
            &alipay_public_key,
            &s.private_key,
            &s.alipay_public_key,
        ),
        printer,
    )?;
    Client::new(
        s.client_settings(),
        Arc::new(private_key),
        Arc::new(alipay_public_key),
    )
}

/// A shared rule's verdict for a run: FAIL stops it, a warning is shown. `about` names the
/// settings the rule judged.
fn shared_rule(about: &str, found: checks::Finding, printer: &Printer) -> anyhow::Result<()> {
    match found.level {
        checks::Level::Fail => {
            anyhow::bail!("{about}: {}. Nothing was sent", found.text())
        }
        checks::Level::Warn => printer.warn(&format!("{about}: {}", found.text())),
        checks::Level::Ok | checks::Level::Skip => {}
    }
    Ok(())
}

struct SandboxGuard {
    sandbox: crate::sandbox::Sandbox,
    _keys: tempfile::TempDir,
}

/// Starts the in-process sandbox with fresh keys. The malls and trades it knows come from
/// `malls.csv` and `trades.txt` beside the first input file, when they are there.
async fn start_sandbox(files: &[PathBuf]) -> anyhow::Result<(SandboxGuard, String, PathBuf)> {
    use crate::sandbox::{Sandbox, SandboxConfig, load_malls, load_trades};
    let keys = tempfile::Builder::new()
        .prefix("pms-onboard-sandbox-keys")
        .tempdir()
        .context("cannot create a folder for the sandbox keys")?;
    crate::api::keys::keygen(keys.path())?;
    let mut config = SandboxConfig::from_dir(keys.path(), SANDBOX_CLIENT_ID)?;
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let malls = dir.join("malls.csv");
    if malls.exists() {
        config.malls = Some(load_malls(&malls)?);
    }
    let trades = dir.join("trades.txt");
    if trades.exists() {
        config.trades = Some(load_trades(&trades)?);
    }
    let sandbox = Sandbox::start(config, ([127, 0, 0, 1], 0).into()).await?;
    let endpoint = sandbox.endpoint();
    let path = keys.path().to_path_buf();
    Ok((
        SandboxGuard {
            sandbox,
            _keys: keys,
        },
        endpoint,
        path,
    ))
}
