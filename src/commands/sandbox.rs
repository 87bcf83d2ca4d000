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

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{OutageAnswerArg, RateLimitAnswerArg, SandboxArgs};
use crate::output::Printer;
use crate::sandbox::{
    Faults, Outage, OutageAnswer, RateLimitAnswer, Sandbox, SandboxConfig, load_malls, load_trades,
};

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
            replay: self.fault_replay,
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
pub fn run(args: SandboxArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::api::keys::seed_thread_rng)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let sandbox = Sandbox::start(config, args.listen).await?;
        if printer.json_result() {
            printer.out_json(&serde_json::json!({
                "listening": sandbox.endpoint(), "client_id": args.client_id}));
        } else {
            printer.out_line(&format!(
                "sandbox listening on {} (client-id {})",
                sandbox.endpoint(),
                args.client_id
            ));
        }
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Code;
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
