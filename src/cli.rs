//! The command line: one struct per subcommand (clap derive). The settings' flags are made from
//! their one definition in `config::SETTINGS`; `config` layers them over the environment and the
//! TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::{self, Flags};
use crate::sandbox::Code;

#[derive(Debug, Parser)]
#[command(
    name = "pms-onboard",
    version,
    about = "Tag merchant stores to malls in AlipayHK (Collect PMS Information) from spreadsheets",
    after_help = "Start with: pms-onboard run samples/stores.csv --sandbox"
)]
pub struct Cli {
    /// Log lines as JSON (for cron and log collectors): every stderr line one JSON object, and
    /// the result as with --json.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command's result as one JSON object on stdout, for scripts (every command; lines on
    /// stderr stay text unless --log-format json).
    #[arg(long, global = true)]
    pub json: bool,
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
    Sandbox(SandboxArgs),
    /// Show the exact content signed and the headers, for troubleshooting.
    Sign(SignArgs),
    /// Write a throw-away key pair for the sandbox and tests.
    Keygen(KeygenArgs),
    /// Check keys, endpoint, clock, settings and ledger before a real run.
    Doctor(DoctorArgs),
    /// Look after the ledger file: upgrade it to this version, saying what changed.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(CompletionsArgs),
    /// Print the man page (or write one page per command into a folder with --dir).
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write pms-onboard.1 and one pms-onboard-COMMAND.1 per command here, instead of printing
    /// the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The settings that flags, `PMS_ONBOARD_*` variables and the TOML file can give: one flag per
/// entry of [`config::SETTINGS`], made from it (name, value name, help, default, variable).
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    pub config: Option<PathBuf>,
    values: Flags,
}

/// Where the ledger is, for the commands that only read it: `--config` and `--ledger`.
#[derive(Debug, Clone, Default)]
pub struct LedgerArgs {
    pub config: Option<PathBuf>,
    values: Flags,
}

impl SettingsArgs {
    pub fn flags(&self) -> Flags {
        self.values.clone()
    }
}

impl LedgerArgs {
    pub fn flags(&self) -> Flags {
        self.values.clone()
    }
}

fn config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Settings file [default: pms-onboard.toml when present]")
}

/// The flag of one setting, from its definition.
fn setting_arg(s: &config::Setting) -> Arg {
    let mut help = format!("{}{}", s.help[..1].to_uppercase(), &s.help[1..]);
    if let Some(d) = s.default {
        help.push_str(&format!(" [default: {d}]"));
    }
    help.push_str(&format!(" [env: {}]", s.env_var()));
    Arg::new(s.name)
        .long(s.flag().trim_start_matches('-').to_owned())
        .value_name(s.value_name)
        .help(help)
}

fn read_values(m: &ArgMatches, settings: &[&'static config::Setting]) -> Flags {
    settings
        .iter()
        .map(|s| (s.name, m.get_one::<String>(s.name).cloned()))
        .collect()
}

impl FromArgMatches for SettingsArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(SettingsArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            values: read_values(m, &config::SETTINGS.iter().collect::<Vec<_>>()),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for SettingsArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        config::SETTINGS
            .iter()
            .fold(cmd.arg(config_arg()), |cmd, s| cmd.arg(setting_arg(s)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for LedgerArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(LedgerArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            values: read_values(m, &[config::setting("ledger")]),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for LedgerArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(config_arg())
            .arg(setting_arg(config::setting("ledger")))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
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
    /// Also say how the sheet stands against this ledger (a path, or a postgresql:// URL): rows
    /// a run would send, already done, failed before, drifted. Read only, never written.
    #[arg(long, value_name = "PATH|URL")]
    pub ledger: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
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
    /// csv or json [default: csv; json with the global --json].
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// The global `--json` as given: the rows as JSON unless --format says otherwise.
    #[arg(skip)]
    pub json: bool,
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
    /// The global `--json` (or `--log-format json`): the checks as one JSON object.
    #[arg(skip)]
    pub json: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Upgrade the ledger to this version (every command does when it opens one) and say what
    /// changed; an upgrade that will not guess stops, naming the rows and what to do.
    Upgrade(LedgerUpgradeArgs),
    /// Copy a SQLite ledger into an empty PostgreSQL one (or back), refusing while either is in
    /// use, and verify the copy (counts of every table, every row's state and label).
    Copy(LedgerCopyArgs),
}

#[derive(Debug, Args)]
pub struct LedgerCopyArgs {
    /// The ledger to copy: a SQLite file, or a postgresql://USER@HOST/DATABASE URL.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// Where to copy it: an empty PostgreSQL database (a URL), or a new SQLite file.
    #[arg(value_name = "TO")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct LedgerUpgradeArgs {
    /// For the rows whose ids hold `|` (an earlier version may have taken two stores for one):
    /// take the ids stored in each row as the store it is. Only after checking those stores
    /// with AlipayHK.
    #[arg(long)]
    pub accept_stored_ids: bool,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write client_private.pem, client_public.pem, alipay_private.pem, alipay_public.pem.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Replace key files already in DIR (the keys they held are lost). Without it, keygen
    /// refuses to overwrite any of them.
    #[arg(long)]
    pub force: bool,
}

fn parse_encoding(s: &str) -> Result<crate::input::Encoding, String> {
    s.parse()
        .map_err(|_| format!("unknown encoding {s:?}: use utf-8, big5, gbk or utf-16"))
}

/// Serve a local AlipayHK simulator (for the demo, tests and benchmarks).
#[derive(Debug, Clone, Args)]
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
    /// Probability of answering, instead of the gateway, with a genuine signed SUCCESS sent
    /// earlier to another request, byte for byte (a replaying proxy); the store is not circled.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub fault_replay: f64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitAnswerArg {
    Http429,
    Code,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutageAnswerArg {
    Http503,
    Unknown,
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
