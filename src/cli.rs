//! The command line: one struct per subcommand (clap derive). Settings flags are plain options
//! here; `config` layers them over the environment and the TOML file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Flags;

#[derive(Debug, Parser)]
#[command(
    name = "pms-onboard",
    version,
    about = "Tag merchant stores to malls in AlipayHK (Collect PMS Information) from spreadsheets",
    after_help = "Start with: pms-onboard run samples/stores.csv --sandbox"
)]
pub struct Cli {
    /// Log lines as JSON (for cron and log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit every row not yet done; running it again resumes.
    Run(RunArgs),
    /// Check files offline: nothing sent, nothing written.
    Validate(ValidateArgs),
    /// Counts by state and result code; the last runs.
    Status(StatusArgs),
    /// Rows of the ledger as CSV or JSON (labels, failures, rejects).
    Export(ExportArgs),
    /// Compare the master sheet with the ledger: done, drifted, pending, failed, invalid, orphan.
    Reconcile(ReconcileArgs),
    /// One self-contained HTML page: outcomes, malls, attempts, latency, rows that need a person.
    Report(ReportArgs),
    /// A local AlipayHK simulator.
    Sandbox(crate::commands::sandbox::SandboxArgs),
    /// Show the exact content signed and the headers, for troubleshooting.
    Sign(SignArgs),
    /// Write a throw-away key pair for the sandbox and tests.
    Keygen(KeygenArgs),
    /// Check keys, endpoint, clock, settings and ledger before a real run.
    Doctor(DoctorArgs),
}

/// The settings that flags, `PMS_ONBOARD_*` variables and the TOML file can give.
#[derive(Debug, Args, Default)]
pub struct SettingsArgs {
    /// Settings file (default: pms-onboard.toml when present).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Gateway base URL [default: https://open.alipay.hk].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Client id from the AlipayHK portal.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Your RSA private key (PKCS#8 PEM, PKCS#1 PEM, or the portal's bare base64).
    #[arg(long, value_name = "PATH")]
    pub private_key: Option<String>,
    /// AlipayHK's public key, to verify answers.
    #[arg(long, value_name = "PATH")]
    pub alipay_public_key: Option<String>,
    /// keyVersion in the signature header [default: 1].
    #[arg(long)]
    pub key_version: Option<String>,
    /// Algorithm token in the signature header: RSA256 or sha256withrsa [default: RSA256].
    #[arg(long)]
    pub signature_algorithm: Option<String>,
    /// Requests per second, never exceeded in any one-second window; 0 = no limit [default: 10].
    #[arg(long)]
    pub rate: Option<String>,
    /// Requests in flight at once [default: 8; 64 when --rate is 0].
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Attempts in a row for a transient failure before the row is set aside [default: 4].
    #[arg(long)]
    pub max_attempts: Option<String>,
    /// Per-request time-out: 15, 15s, 500ms [default: 15s].
    #[arg(long)]
    pub timeout: Option<String>,
    /// First retry back-off, doubled each attempt, with full jitter [default: 2s].
    #[arg(long)]
    pub backoff: Option<String>,
    /// Pauses after which a row still without an answer is tried again while the rest of the
    /// sheet goes on; `none` for none [default: 10m,30m].
    #[arg(long, value_name = "DURATIONS")]
    pub retry_later: Option<String>,
    /// The SQLite ledger [default: pms-ledger.db].
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<String>,
}

impl SettingsArgs {
    pub fn flags(&self) -> Flags {
        vec![
            ("endpoint", self.endpoint.clone()),
            ("client_id", self.client_id.clone()),
            ("private_key", self.private_key.clone()),
            ("alipay_public_key", self.alipay_public_key.clone()),
            ("key_version", self.key_version.clone()),
            ("signature_algorithm", self.signature_algorithm.clone()),
            ("rate", self.rate.clone()),
            ("concurrency", self.concurrency.clone()),
            ("max_attempts", self.max_attempts.clone()),
            ("timeout", self.timeout.clone()),
            ("backoff", self.backoff.clone()),
            ("retry_later", self.retry_later.clone()),
            ("ledger", self.ledger.clone()),
        ]
    }
}

/// Where the ledger is, for the commands that only read it.
#[derive(Debug, Args, Default)]
pub struct LedgerArgs {
    /// Settings file (default: pms-onboard.toml when present).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The SQLite ledger [default: pms-ledger.db].
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<String>,
}

impl LedgerArgs {
    pub fn flags(&self) -> Flags {
        vec![("ledger", self.ledger.clone())]
    }
}

/// How the input files are read: shared by every command that reads a sheet.
#[derive(Debug, Args, Default)]
pub struct InputArgs {
    /// Encoding of CSV files: utf-8, big5, gbk or utf-16 (workbooks are read as they are).
    #[arg(long, default_value = "utf-8", value_parser = parse_encoding)]
    pub encoding: crate::input::Encoding,
    /// The sheet to read in a workbook (.xlsx, .xlsm, .xls, .ods) [default: the first].
    #[arg(long, value_name = "NAME")]
    pub sheet: Option<String>,
}

impl InputArgs {
    pub fn options(&self) -> crate::input::Options {
        crate::input::Options {
            encoding: self.encoding,
            sheet: self.sheet.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// CSV files or workbooks (.xlsx, .xlsm, .xls, .ods).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Run against a built-in sandbox with throw-away keys (nothing leaves this machine).
    #[arg(long)]
    pub sandbox: bool,
    /// Send again the rows that failed for good in an earlier run.
    #[arg(long)]
    pub retry_failed: bool,
    /// At the end, write this run's HTML report here (as `pms-onboard report --run ID`).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Send at most N pending rows, then stop (a canary: check them, then run without it).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Say what a run would do (send, skip, drift, reject) and show one signed request; send
    /// nothing, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// CSV files or workbooks (.xlsx, .xlsm, .xls, .ods).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Write the rejected rows here as CSV (file,line,column,value,reason).
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the counts as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only rows in this state (repeatable): pending, in_flight, succeeded, already_circled,
    /// failed, rejected.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Write here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Write this spreadsheet back with status, pms_label, result_code, message appended (a
    /// workbook as a new .xlsx, named with -o).
    #[arg(long, value_name = "FILE")]
    pub annotate: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The master sheet: CSV files or workbooks (.xlsx, .xlsm, .xls, .ods).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Write every row that is not done here as CSV.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Print the six counts as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this run (its rows and attempts) [default: the whole ledger].
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output", value_name = "PATH", required = true)]
    pub output: PathBuf,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The request body to sign, exactly as it would be sent.
    #[arg(value_name = "BODY_FILE")]
    pub body: PathBuf,
    #[arg(long, value_name = "PATH")]
    pub private_key: PathBuf,
    #[arg(long)]
    pub client_id: String,
    /// request-time to use [default: now].
    #[arg(long)]
    pub request_time: Option<String>,
    #[arg(long, default_value = "1")]
    pub key_version: String,
    #[arg(long, default_value = "RSA256")]
    pub signature_algorithm: String,
    /// AlipayHK's public key: check a response's signature too.
    #[arg(long, value_name = "PATH", requires = "response")]
    pub alipay_public_key: Option<PathBuf>,
    /// The raw response body to check.
    #[arg(long, value_name = "FILE", requires = "alipay_public_key")]
    pub response: Option<PathBuf>,
    /// The response's headers as `name: value` lines (response-time and signature).
    #[arg(long, value_name = "FILE", requires = "response")]
    pub response_headers: Option<PathBuf>,
    /// The response's response-time header (instead of --response-headers).
    #[arg(long)]
    pub response_time: Option<String>,
    /// The response's signature header (instead of --response-headers).
    #[arg(long)]
    pub response_signature: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also send one signed request that changes nothing (every field empty, which the gateway
    /// refuses after checking the signature): proves the signature is accepted and the answer
    /// verifies with alipay_public_key.
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write client_private.pem, client_public.pem, alipay_private.pem, alipay_public.pem.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

fn parse_encoding(s: &str) -> Result<crate::input::Encoding, String> {
    s.parse()
        .map_err(|_| format!("unknown encoding {s:?}: use utf-8, big5, gbk or utf-16"))
}
