//! `run FILE...`: submit every row not yet done. With `--sandbox`, the same job against an
//! in-process simulator with throw-away keys, on a ledger of its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::exit;
use crate::api::client::{Client, ClientSettings};
use crate::api::keys::{PrivateKey, PublicKey};
use crate::cli::RunArgs;
use crate::config::{Layers, RunSettings, Source};
use crate::ledger::writer::RunEnd;
use crate::pipeline::{self, Plan, progress};

/// The ledger a sandbox run uses unless `--ledger` says otherwise: sandbox results must never
/// make a real run skip a row.
pub const SANDBOX_LEDGER: &str = "pms-sandbox-ledger.db";
/// The client id of the built-in sandbox.
pub const SANDBOX_CLIENT_ID: &str = "2102000000000000000";
/// The rate a sandbox run uses unless one is set.
const SANDBOX_RATE: &str = "100";

pub fn run(args: RunArgs, log_json: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::api::keys::seed_thread_rng)
        .build()
        .context("cannot start the async runtime")?;
    let mut flags = args.settings.flags();
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
            set_flag(&mut flags, name, value);
        }
        sandbox_guard = Some(guard);
    }
    let mut layers = Layers::resolve(&flags, args.settings.config.as_deref())?;
    if args.sandbox {
        // The sandbox gets its own ledger unless `--ledger` names one: a ledger from the
        // environment or the settings file is the real one, and simulated successes in it would
        // make a real run skip rows. It gets a brisk default rate unless one is set.
        if !matches!(layers.source("ledger"), Some(Source::Flag(_))) {
            set_flag(&mut flags, "ledger", SANDBOX_LEDGER.to_owned());
        }
        if layers.source("rate") == Some(&Source::Default) {
            set_flag(&mut flags, "rate", SANDBOX_RATE.to_owned());
        }
        layers = Layers::resolve(&flags, args.settings.config.as_deref())?;
    }
    let settings = RunSettings::from_layers(&layers)?;
    let client = client(&settings)?;
    let style = progress::Style::detect(log_json);
    let plan = Plan {
        files: args.files.clone(),
        encoding: args.encoding,
        dedupe: super::bounded_dedupe()?,
        ledger: settings.ledger.clone(),
        rate: settings.rate,
        concurrency: settings.concurrency,
        policy: pipeline::retry::RetryPolicy::new(settings.max_attempts, settings.backoff),
        retry_failed: args.retry_failed,
        style,
        config_json: serde_json::to_string(&layers.describe())?,
    };
    if args.sandbox {
        eprintln!(
            "sandbox: {} (throw-away keys, ledger {})",
            settings.endpoint,
            settings.ledger.display()
        );
    }
    let report = pipeline::execute(&rt, client, plan)?;
    if log_json {
        // For cron: one JSON object a machine can read, instead of the table.
        println!(
            "{}",
            serde_json::json!({
                "run_id": report.run_id,
                "outcome": report.end.as_str(),
                "message": report.message,
                "requests": report.requests,
                "elapsed_seconds": report.elapsed.as_secs_f64(),
                "counts": report.counts,
            })
        );
    } else {
        print!(
            "{}",
            progress::summary_table(
                &report.counts,
                report.elapsed,
                report.requests,
                report.end.as_str()
            )
        );
    }
    if let Some(advice) = &report.advice {
        progress::warn(advice, style, None);
    }
    if let Some(guard) = sandbox_guard {
        rt.block_on(guard.sandbox.shutdown());
    }
    let c = &report.counts;
    let code = match report.end {
        RunEnd::Interrupted => {
            eprintln!("interrupted: run the same command again to finish");
            exit::INTERRUPTED
        }
        RunEnd::Aborted => {
            eprintln!(
                "error: the run stopped: {}",
                report.message.as_deref().unwrap_or("unknown reason")
            );
            eprintln!("rows not sent stay pending; fix the cause and run the same command again");
            exit::FATAL
        }
        RunEnd::Completed if c.failed + c.rejected + c.drifted > 0 => {
            eprintln!(
                "finished with problems: pms-onboard export --state failed / --state rejected, \
                 or pms-onboard reconcile, show each row and what to do"
            );
            exit::PROBLEMS
        }
        RunEnd::Completed => exit::OK,
    };
    if let Some(path) = &args.report {
        // A report that cannot be written does not undo the run; it fails a run that was clean.
        let written = crate::ledger::open_existing(&settings.ledger)
            .and_then(|conn| crate::report::write(&conn, Some(report.run_id), path));
        match written {
            Ok(()) => eprintln!("report written to {}", path.display()),
            Err(e) => {
                eprintln!("error: the report was not written: {e:#}");
                if code == exit::OK {
                    return Ok(ExitCode::from(exit::FATAL));
                }
            }
        }
    }
    Ok(ExitCode::from(code))
}

fn set_flag(flags: &mut crate::config::Flags, name: &'static str, value: String) {
    flags.retain(|(n, _)| *n != name);
    flags.push((name, Some(value)));
}

/// Loads the keys and builds the client; any problem stops the run before anything is sent.
fn client(s: &RunSettings) -> anyhow::Result<Client> {
    let private_key = PrivateKey::from_file(&s.private_key).context("setting `private_key`")?;
    let alipay_public_key =
        PublicKey::from_file(&s.alipay_public_key).context("setting `alipay_public_key`")?;
    Client::new(
        ClientSettings {
            endpoint: s.endpoint.clone(),
            client_id: s.client_id.clone(),
            key_version: s.key_version.clone(),
            signature_algorithm: s.signature_algorithm.clone(),
            timeout: s.timeout,
        },
        Arc::new(private_key),
        Arc::new(alipay_public_key),
    )
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
