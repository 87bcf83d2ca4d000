//! `doctor`: checks everything a first real run needs, before a row is sent. Each check is a
//! value ([`Check`]: a name, a level, what was found and what to do), made by the module of its
//! group; one renderer shows them as lines or, with `--json`, as one JSON object. The support
//! problems these APIs are known for come first: a wrong public key, the two keys swapped, a key
//! in a shape that cannot be read, the mainland gateway instead of AlipayHK's, a clock that is
//! off.
//!
//! ```text
//! pms-onboard doctor [--probe] [--json] [settings flags, as for run]
//! ```
//!
//! - [`settings`]: each with its value and where it came from (paths, never key content);
//! - [`keys`]: readable, format, size, permissions, the two not swapped, `alipay_public_key` not
//!   the public half of `private_key`;
//! - [`gateway`]: a URL, AlipayHK's host, DNS, TLS with this system's roots, an answer (a `GET`
//!   of the API path, which changes nothing), and this machine's clock against the answer's;
//! - [`ledger`]: its folder writable, on a local disk, readable by its owner only, not in use by
//!   a run, the gateway it belongs to, its rows by state and the last run;
//! - with `--probe` ([`probe`]), one signed call that changes nothing: a body with every field
//!   empty, which the gateway refuses (`PARAM_ILLEGAL`) only after it has checked the signature.
//!   It proves that the gateway accepts the signature and that its answer verifies with
//!   `alipay_public_key`, and shows the answer's `Tracer-Id`.
//!
//! The rules a run applies too (key pair, key permissions, host) are `api::checks`: a check FAILs
//! here exactly when a run would be refused. Exit 0 when no check failed (a warning is advice),
//! 1 otherwise.

mod gateway;
mod keys;
mod ledger;
mod probe;
mod settings;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::exit;
use crate::api::checks::{Finding, Level};
use crate::cli::DoctorArgs;
use crate::config::Layers;
use crate::duration::parse as parse_duration;
use crate::output::Printer;

pub fn run(args: DoctorArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let json = args.json || printer.is_json();
    let report = examine(&args)?;
    Ok(render(&report, printer, json))
}

/// Every check, in the order shown.
fn examine(args: &DoctorArgs) -> anyhow::Result<Vec<Group>> {
    let layers = match Layers::resolve(&args.settings.flags(), args.settings.config.as_deref()) {
        Ok(layers) => layers,
        Err(e) => {
            let mut group = Group::new("settings", "settings");
            group.push(Check::fail("settings file", format!("{e:#}")));
            return Ok(vec![group]);
        }
    };
    let (settings_group, settings) = settings::checks(&layers);
    let (keys_group, keys) = keys::checks(&layers);
    let timeout = layers
        .optional("timeout")
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(15));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let endpoint = layers.optional("endpoint").unwrap_or_default().trim();
    let (gateway_group, answered) = runtime.block_on(gateway::checks(endpoint, timeout));
    let ledger_group = ledger::checks(
        Path::new(layers.optional("ledger").unwrap_or_default()),
        layers.optional("endpoint"),
        layers.optional("client_id"),
    );
    let mut groups = vec![settings_group, keys_group, gateway_group, ledger_group];
    if args.probe {
        let mut group = Group::new("probe", "probe (one signed call that changes nothing)");
        match (&settings, keys, answered) {
            (Some(settings), Some((private, public)), true) => {
                group.extend(runtime.block_on(probe::checks(settings, private, public)));
            }
            _ => group.push(Check::skip(
                "signature",
                "needs valid settings, both keys and an answer from the gateway: fix what failed \
                 above",
            )),
        }
        groups.push(group);
    }
    Ok(groups)
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub found: Finding,
}

impl Check {
    pub fn new(name: &str, found: Finding) -> Check {
        Check {
            name: name.to_owned(),
            found,
        }
    }

    pub fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Finding::ok(detail))
    }

    /// A warning: what was found, and what to do.
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Finding::new(Level::Warn, detail, fix))
    }

    /// A failure whose detail already says what to do (an error message of the tool's).
    pub fn fail(name: &str, detail: impl Into<String>) -> Check {
        Check::new(
            name,
            Finding {
                level: Level::Fail,
                detail: detail.into(),
                fix: None,
            },
        )
    }

    /// A failure: what was found, and what to do.
    pub fn fail_with(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Finding::new(Level::Fail, detail, fix))
    }

    /// A check that could not run because an earlier one failed (which is counted there).
    pub fn skip(name: &str, why: &str) -> Check {
        Check::new(
            name,
            Finding {
                level: Level::Skip,
                detail: why.to_owned(),
                fix: None,
            },
        )
    }

    pub fn level(&self) -> Level {
        self.found.level
    }
}

/// The checks of one group, under its heading.
#[derive(Debug)]
pub struct Group {
    /// `settings`, `keys`, `gateway`, `ledger`, `probe`: what `--json` calls the group.
    pub name: &'static str,
    /// The heading the text shows (the settings' names the settings file).
    pub title: String,
    pub checks: Vec<Check>,
}

impl Group {
    pub fn new(name: &'static str, title: impl Into<String>) -> Group {
        Group {
            name,
            title: title.into(),
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.checks.extend(checks);
    }

    /// One skipped check for each name, for the same reason.
    pub fn skip_each(&mut self, names: &[&str], why: &str) {
        self.extend(names.iter().map(|name| Check::skip(name, why)));
    }
}

/// How many checks came out each way; the exit code and the last line come from it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    ok: usize,
    warnings: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn of(groups: &[Group]) -> Tally {
        let mut t = Tally::default();
        for check in groups.iter().flat_map(|g| &g.checks) {
            match check.level() {
                Level::Ok => t.ok += 1,
                Level::Warn => t.warnings += 1,
                Level::Fail => t.failed += 1,
                Level::Skip => t.skipped += 1,
            }
        }
        t
    }

    fn level(&self) -> Level {
        match (self.failed, self.warnings) {
            (0, 0) => Level::Ok,
            (0, _) => Level::Warn,
            _ => Level::Fail,
        }
    }

    /// The last line: ready, or what to do.
    fn verdict(&self) -> String {
        let warnings = match self.warnings {
            0 => String::new(),
            1 => ", 1 warning".to_owned(),
            n => format!(", {n} warnings"),
        };
        if self.failed == 0 {
            format!(
                "doctor: {} checks ok{warnings}: ready for a first real run",
                self.ok
            )
        } else {
            format!(
                "doctor: {} FAILED, {} ok{warnings}: fix what FAILED and run pms-onboard doctor \
                 again",
                self.failed, self.ok
            )
        }
    }
}

/// The word a text line shows for a level.
fn word(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warn => "warn",
        Level::Fail => "FAIL",
        Level::Skip => "skip",
    }
}

/// The checks as one JSON object: `{"checks": [{group, name, level, detail, fix}], "overall":
/// {level, ready, ok, warnings, failed, skipped, message}}`.
fn to_json(groups: &[Group]) -> Value {
    let tally = Tally::of(groups);
    let checks: Vec<Value> = groups
        .iter()
        .flat_map(|g| {
            g.checks.iter().map(|c| {
                json!({
                    "group": g.name,
                    "name": c.name,
                    "level": c.level(),
                    "detail": c.found.detail,
                    "fix": c.found.fix,
                })
            })
        })
        .collect();
    json!({
        "checks": checks,
        "overall": {
            "level": tally.level(),
            "ready": tally.failed == 0,
            "ok": tally.ok,
            "warnings": tally.warnings,
            "failed": tally.failed,
            "skipped": tally.skipped,
            "message": tally.verdict(),
        },
    })
}

/// Shows the checks (lines under headings, or one JSON object) and returns the exit code.
fn render(groups: &[Group], printer: &Printer, json: bool) -> ExitCode {
    let tally = Tally::of(groups);
    if json {
        printer.out_json(&to_json(groups));
    } else {
        for (i, group) in groups.iter().enumerate() {
            if i > 0 {
                printer.out("\n");
            }
            printer.out_line(&group.title);
            for check in &group.checks {
                printer.out_line(&format!(
                    "  {:<4}  {:<19}  {}",
                    word(check.level()),
                    check.name,
                    check.found.text()
                ));
            }
        }
        printer.out("\n");
        printer.out_line(&tally.verdict());
    }
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FATAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_lists_every_check_with_its_group_and_the_overall_verdict() {
        let mut keys = Group::new("keys", "keys");
        keys.push(Check::ok("private_key", "fine"));
        keys.push(Check::warn("permissions", "mode 644", "run chmod 600 k"));
        let mut probe = Group::new("probe", "probe (…)");
        probe.push(Check::skip("signature", "needs keys"));
        let groups = [keys, probe];
        let v = to_json(&groups);
        assert_eq!(v["checks"].as_array().unwrap().len(), 3);
        assert_eq!(v["checks"][1]["group"], "keys");
        assert_eq!(v["checks"][1]["level"], "warn");
        assert_eq!(v["checks"][1]["fix"], "run chmod 600 k");
        assert_eq!(v["checks"][0]["fix"], Value::Null);
        assert_eq!(v["checks"][2]["level"], "skip");
        assert_eq!(v["overall"]["level"], "warn");
        assert_eq!(v["overall"]["ready"], true);
        assert_eq!(v["overall"]["skipped"], 1);
        let mut failed = Group::new("ledger", "ledger");
        failed.push(Check::fail_with("filesystem", "on NFS", "move it"));
        assert_eq!(Tally::of(&[failed]).level(), Level::Fail);
    }
}
