//! `pms-onboard sandbox`: serve a local AlipayHK simulator until Ctrl-C.
//!
//! ```text
//! pms-onboard sandbox --keys DIR --client-id ID [--listen 127.0.0.1:8765] [--key-version N]
//!     [--malls CSV] [--trades FILE] [--fault-* P] [--fault-code CODE=P]... [--latency-ms MS]
//!     [--hang-ms MS] [--seed N] [--rate-limit N [--rate-limit-answer http429|code]]
//!     [--clock-offset SECONDS] [--max-clock-skew MINUTES]
//!     [--outage-ms MS [--outage-answer http503|unknown]]
//! ```
//!
//! `DIR` holds the files `pms-onboard keygen DIR` writes: the sandbox verifies requests with
//! `client_public.pem` and signs answers with `alipay_private.pem`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::sandbox::{
    Code, Faults, Outage, OutageAnswer, RateLimitAnswer, Sandbox, SandboxConfig, load_malls,
    load_trades,
};

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
    /// A result code answered with probability P before any effect, signed, with the code's
    /// documented status and message, e.g. PROCESS_FAIL=0.1 (repeatable; any code but SUCCESS).
    #[arg(long = "fault-code", value_name = "CODE=P", value_parser = code_probability)]
    pub fault_codes: Vec<(Code, f64)>,
    /// Latency added to every request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of the fault generator: the same seed gives the same faults in the same order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Requests per second (in any trailing second) beyond which a request is refused.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// How a request beyond --rate-limit is refused: HTTP 429 with Retry-After: 1, or AlipayHK's
    /// signed answer REQUEST_TRAFFIC_EXCEED_LIMIT (status U, HTTP 200).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = RateLimitAnswerArg::Http429)]
    pub rate_limit_answer: RateLimitAnswerArg,
    /// Seconds added to the sandbox's clock (its response-time and Date headers); negative is
    /// behind. Plays a gateway whose clock differs from this machine's.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub clock_offset: i64,
    /// Refuse a request-time more than this many minutes from the sandbox's clock with
    /// INVALID_SIGNATURE [default: no check; AlipayHK publishes no tolerance].
    #[arg(long, value_name = "MINUTES")]
    pub max_clock_skew: Option<u64>,
    /// An outage: every request fails for this long from the first one, then the sandbox
    /// recovers.
    #[arg(long, value_name = "MS")]
    pub outage_ms: Option<u64>,
    /// How requests fail during --outage-ms: HTTP 503, or the signed UNKNOWN_EXCEPTION
    /// (status U), both before any effect.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = OutageAnswerArg::Http503)]
    pub outage_answer: OutageAnswerArg,
    /// How long a hang lasts.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub hang_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimitAnswerArg {
    Http429,
    Code,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutageAnswerArg {
    Http503,
    Unknown,
}

impl SandboxArgs {
    /// The sandbox configuration these arguments describe (reads the keys and data files).
    pub fn config(&self) -> anyhow::Result<SandboxConfig> {
        let mut config = SandboxConfig::from_dir(&self.keys, &self.client_id)?;
        config.key_version = self.key_version.clone();
        config.malls = self.malls.as_deref().map(load_malls).transpose()?;
        config.trades = self.trades.as_deref().map(load_trades).transpose()?;
        config.rate_limit = self.rate_limit;
        config.rate_limit_answer = match self.rate_limit_answer {
            RateLimitAnswerArg::Http429 => RateLimitAnswer::Http429,
            RateLimitAnswerArg::Code => RateLimitAnswer::Code,
        };
        config.clock_offset_secs = self.clock_offset;
        config.max_clock_skew = self
            .max_clock_skew
            .map(|minutes| Duration::from_secs(minutes.saturating_mul(60)));
        config.outage = self.outage_ms.filter(|&ms| ms > 0).map(|ms| Outage {
            duration: Duration::from_millis(ms),
            answer: match self.outage_answer {
                OutageAnswerArg::Http503 => OutageAnswer::Http503,
                OutageAnswerArg::Unknown => OutageAnswer::Unknown,
            },
        });
        config.faults = Faults {
            unknown: self.fault_unknown,
            unknown_after_commit: self.fault_unknown_after_commit,
            http500: self.fault_http500,
            http429: self.fault_http429,
            hang: self.fault_hang,
            reset: self.fault_reset,
            bad_signature: self.fault_bad_signature,
            codes: self.fault_codes.clone(),
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

/// `CODE=P`: a result code the sandbox can answer (any but SUCCESS) and a probability.
fn code_probability(s: &str) -> Result<(Code, f64), String> {
    let (name, p) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not CODE=P, e.g. PROCESS_FAIL=0.1"))?;
    let name = name.trim();
    let code = Code::parse(name)
        .filter(|&c| c != Code::Success)
        .ok_or_else(|| {
            let known: Vec<&str> = Code::ALL
                .iter()
                .filter(|&&c| c != Code::Success)
                .map(|c| c.as_str())
                .collect();
            format!(
                "{name:?} is not a code the sandbox can inject; one of {}",
                known.join(", ")
            )
        })?;
    Ok((code, probability(p)?))
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

    #[test]
    fn codes_clock_outage_and_the_rate_limit_answer() {
        let dir = tempfile::tempdir().unwrap();
        crate::api::keys::keygen(dir.path()).unwrap();
        let keys = dir.path().to_str().unwrap();
        let base = ["x", "--keys", keys, "--client-id", "2102"];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        let config = parse(&[]).unwrap().args.config().unwrap();
        assert_eq!(config.rate_limit_answer, RateLimitAnswer::Http429);
        assert_eq!(
            (
                config.clock_offset_secs,
                config.max_clock_skew,
                config.outage
            ),
            (0, None, None)
        );
        assert!(config.faults.codes.is_empty());

        let config = parse(&[
            "--fault-code",
            "PROCESS_FAIL=0.25",
            "--fault-code",
            "REQUEST_TRAFFIC_EXCEED_LIMIT=1",
            "--rate-limit-answer",
            "code",
            "--clock-offset",
            "-3600",
            "--max-clock-skew",
            "5",
            "--outage-ms",
            "1500",
            "--outage-answer",
            "unknown",
        ])
        .unwrap()
        .args
        .config()
        .unwrap();
        assert_eq!(
            config.faults.codes,
            [
                (Code::ProcessFail, 0.25),
                (Code::RequestTrafficExceedLimit, 1.0)
            ]
        );
        assert_eq!(config.rate_limit_answer, RateLimitAnswer::Code);
        assert_eq!(config.clock_offset_secs, -3600);
        assert_eq!(config.max_clock_skew, Some(Duration::from_secs(300)));
        assert_eq!(
            config.outage,
            Some(Outage {
                duration: Duration::from_millis(1500),
                answer: OutageAnswer::Unknown
            })
        );

        for (bad, says) in [
            ("NOT_A_CODE=0.5", "one of STORE_IS_CIRCLED, PARAM_ILLEGAL"),
            ("SUCCESS=0.5", "not a code the sandbox can inject"),
            ("PROCESS_FAIL=2", "not a probability"),
            ("PROCESS_FAIL", "CODE=P"),
        ] {
            let err = parse(&["--fault-code", bad]).err().unwrap().to_string();
            assert!(err.contains("--fault-code") && err.contains(says), "{err}");
        }
        let twice = parse(&[
            "--fault-code",
            "ACCESS_DENIED=0.1",
            "--fault-code",
            "ACCESS_DENIED=0.2",
        ]);
        let err = twice.unwrap().args.config().unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
