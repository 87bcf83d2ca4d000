//! The command line: one struct per subcommand (clap derive). The settings' flags are made from
//! their one definition in `config::SETTINGS`; `config` layers them over the environment and the
//! TOML file.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::{self, Flags};

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
