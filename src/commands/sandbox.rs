//! `pms-onboard sandbox`: serve a local AlipayHK simulator until Ctrl-C.
//!
//! ```text
//! pms-onboard sandbox --keys DIR --client-id ID [--listen 127.0.0.1:8765] [--key-version N]
//!     [--malls CSV] [--trades FILE] [--fault-* P] [--latency-ms MS] [--hang-ms MS] [--seed N]
//!     [--rate-limit N]
//! ```
//!
//! `DIR` holds the files `pms-onboard keygen DIR` writes: the sandbox verifies requests with
//! `client_public.pem` and signs answers with `alipay_private.pem`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::sandbox::{Faults, Sandbox, SandboxConfig, load_malls, load_trades};

/// Serve a local AlipayHK simulator (for the demo, tests and benchmarks).
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on. Loopback by default; any other address exposes the simulator to the
    /// network, where anyone holding the throw-away keys can call it (not refused, but rarely
    /// what you want).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
    /// Directory with client_public.pem and alipay_private.pem (as written by `keygen DIR`).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// The client id requests must carry in their client-id header.
    #[arg(long, value_name = "ID")]
    pub client_id: String,
    /// The keyVersion accepted in the signature header (others get KEY_NOT_FOUND).
    #[arg(long, value_name = "N", default_value = "1")]
    pub key_version: String,
    /// CSV of mall_group_label,mall_label (with a header) that exist; without it every numeric
    /// mall exists.
    #[arg(long, value_name = "CSV")]
    pub malls: Option<PathBuf>,
    /// iPay trade numbers that exist, one a line; without it every numeric number exists.
    #[arg(long, value_name = "FILE")]
    pub trades: Option<PathBuf>,
    /// Probability of UNKNOWN_EXCEPTION before anything is done.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_unknown: f64,
    /// Probability of UNKNOWN_EXCEPTION after the store was circled.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_unknown_after_commit: f64,
    /// Probability of HTTP 500.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_http500: f64,
    /// Probability of HTTP 429 (with Retry-After: 1).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_http429: f64,
    /// Probability of a hang of --hang-ms before the answer.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_hang: f64,
    /// Probability of dropping the connection without an answer.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_reset: f64,
    /// Probability of a response signature that does not verify.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_bad_signature: f64,
    /// Latency added to every request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of the fault generator: the same seed gives the same faults in the same order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Requests per second (in any trailing second) beyond which the answer is HTTP 429.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// How long a hang lasts.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub hang_ms: u64,
}

impl SandboxArgs {
    /// The sandbox configuration these arguments describe (reads the keys and data files).
    pub fn config(&self) -> anyhow::Result<SandboxConfig> {
        let mut config = SandboxConfig::from_dir(&self.keys, &self.client_id)?;
        config.key_version = self.key_version.clone();
        config.malls = self.malls.as_deref().map(load_malls).transpose()?;
        config.trades = self.trades.as_deref().map(load_trades).transpose()?;
        config.rate_limit = self.rate_limit;
        config.faults = Faults {
            unknown: self.fault_unknown,
            unknown_after_commit: self.fault_unknown_after_commit,
            http500: self.fault_http500,
            http429: self.fault_http429,
            hang: self.fault_hang,
            reset: self.fault_reset,
            bad_signature: self.fault_bad_signature,
            latency_ms: self.latency_ms,
            seed: self.seed,
            retry_after_secs: 1,
            hang_ms: self.hang_ms,
        };
        // Arguments built in code skip clap's parser: check again, naming the flag.
        config.faults.validate()?;
        Ok(config)
    }
}

/// Starts the sandbox, prints `sandbox listening on http://ADDR (client-id ID)`, serves until
/// Ctrl-C. Ctrl-C is how a sandbox is meant to stop, so it exits 0, not 130.
pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::api::keys::seed_thread_rng)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let sandbox = Sandbox::start(config, args.listen).await?;
        println!(
            "sandbox listening on {} (client-id {})",
            sandbox.endpoint(),
            args.client_id
        );
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// A probability in `[0, 1]`; clap names the flag in its error.
fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s} is not a probability between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn defaults_and_a_bad_probability_named_by_its_flag() {
        let cli = Cli::try_parse_from(["x", "--keys", "k", "--client-id", "1"]).unwrap();
        assert_eq!(cli.args.listen, "127.0.0.1:8765".parse().unwrap());
        assert_eq!(cli.args.key_version, "1");
        assert_eq!(cli.args.hang_ms, 30_000);
        let err = Cli::try_parse_from([
            "x",
            "--keys",
            "k",
            "--client-id",
            "1",
            "--fault-reset",
            "1.5",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("--fault-reset"), "{err}");
    }

    #[test]
    fn config_reads_keys_and_checks_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        crate::api::keys::keygen(dir.path()).unwrap();
        let mut cli = Cli::try_parse_from([
            "x",
            "--keys",
            dir.path().to_str().unwrap(),
            "--client-id",
            "2102",
            "--fault-http500",
            "0.25",
            "--rate-limit",
            "10",
        ])
        .unwrap();
        let config = cli.args.config().unwrap();
        assert_eq!(config.faults.http500, 0.25);
        assert_eq!(config.rate_limit, Some(10));
        cli.args.fault_unknown = -0.1;
        let err = cli.args.config().unwrap_err().to_string();
        assert!(err.contains("--fault-unknown"), "{err}");
    }
}
