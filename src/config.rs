//! Settings. Each is defined once, in [`SETTINGS`]: its name (the TOML key; `--name-with-dashes`
//! on the command line; `PMS_ONBOARD_NAME` in the environment), its default, what a value must be
//! and its help. clap's flags (`cli::SettingsArgs`), the layering below and the README's table
//! (checked by a test) all follow from that list.
//!
//! Layered: command-line flags, then `PMS_ONBOARD_*` environment variables, then a TOML file
//! (`--config`, or `pms-onboard.toml` when present), then defaults. Every value remembers where
//! it came from, so that a bad one is reported as "setting `rate` (from PMS_ONBOARD_RATE)". A bad
//! or missing setting stops the command before anything is sent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::api::keys::looks_like_key_material;

/// The name of the TOML file read from the current directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "pms-onboard.toml";

/// The most workers a run may have: the `concurrency` setting's upper bound.
pub const MAX_CONCURRENCY: usize = 512;

/// `concurrency` when it is not set and `rate` is 0 (no limit: the sandbox and benchmarks only).
/// Nothing then waits for a rate slot, so more workers only keep both ends busy. At the usual 8,
/// a run against the sandbox left about 15 % of its rows a second unused and spent more CPU a
/// row (docs/performance.md).
pub const UNLIMITED_RATE_CONCURRENCY: usize = 64;

/// One setting, everything about it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The TOML key; the flag is `--` + the name with dashes, the variable `PMS_ONBOARD_` + the
    /// name in capitals.
    pub name: &'static str,
    /// `None`: no default, given when a command needs it.
    pub default: Option<&'static str>,
    /// How the value is shown in `--help`.
    pub value_name: &'static str,
    /// What a value must be, for the error that refuses one.
    pub expected: &'static str,
    /// One line for `--help` and the README's table.
    pub help: &'static str,
}

impl Setting {
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    pub fn env_var(&self) -> String {
        format!("PMS_ONBOARD_{}", self.name.to_ascii_uppercase())
    }
}

/// Every setting the tool knows.
pub const SETTINGS: [Setting; 13] = [
    Setting {
        name: "endpoint",
        default: Some("https://open.alipay.hk"),
        value_name: "URL",
        expected: "the gateway's base URL, such as https://open.alipay.hk",
        help: "gateway base URL; the API path is appended (`http://` only to this machine)",
    },
    Setting {
        name: "client_id",
        default: None,
        value_name: "ID",
        expected: "the client id from the AlipayHK portal",
        help: "client id from the AlipayHK portal",
    },
    Setting {
        name: "private_key",
        default: None,
        value_name: "PATH",
        expected: "the path of your private key file",
        help: "path of your RSA private key: PKCS#8 PEM, PKCS#1 PEM or the portal's bare base64",
    },
    Setting {
        name: "alipay_public_key",
        default: None,
        value_name: "PATH",
        expected: "the path of AlipayHK's public key file",
        help: "path of AlipayHK's public key (from the portal), which verifies every answer",
    },
    Setting {
        name: "key_version",
        default: Some("1"),
        value_name: "N",
        expected: "a whole number such as 1",
        help: "`keyVersion` in the signature header",
    },
    Setting {
        name: "signature_algorithm",
        default: Some("RSA256"),
        value_name: "NAME",
        expected: "RSA256 or sha256withrsa",
        help: "algorithm token in the signature header: `RSA256` or `sha256withrsa`",
    },
    Setting {
        name: "rate",
        default: Some("10"),
        value_name: "N",
        expected: "requests per second, a whole number (0: no limit)",
        help: "requests per second, never more in any one-second window; `0`: no limit \
               (sandbox and benchmarks only)",
    },
    Setting {
        name: "concurrency",
        default: Some("64"),
        value_name: "N",
        expected: "a whole number from 1 to 512",
        help: "requests in flight at most; a run keeps what `rate` needs at the answer time \
               seen (rate × answer time × 1.5 + 4)",
    },
    Setting {
        name: "max_attempts",
        default: Some("4"),
        value_name: "N",
        expected: "a whole number from 1 to 100",
        help: "attempts in a row for a transient failure: the first and its quick retries",
    },
    Setting {
        name: "timeout",
        default: Some("15s"),
        value_name: "DURATION",
        expected: "a duration such as 15, 15s or 500ms",
        help: "per request: `15`, `15s`, `500ms`, `2m` all read",
    },
    Setting {
        name: "backoff",
        default: Some("2s"),
        value_name: "DURATION",
        expected: "a duration such as 2s or 500ms",
        help: "pause before the first quick retry, doubled each time, with full jitter",
    },
    Setting {
        name: "retry_later",
        default: Some("10m,30m"),
        value_name: "DURATIONS",
        expected: "durations separated by commas, such as 10m,30m (none: no later retries)",
        help: "while the gateway is down, pauses before a row is tried again; `none`: none",
    },
    Setting {
        name: "ledger",
        default: Some("pms-ledger.db"),
        value_name: "PATH",
        expected: "the path of the ledger file, or a postgresql://USER@HOST/DATABASE URL",
        help: "the ledger: a SQLite file, or a postgresql:// URL (one ledger for several hosts)",
    },
];

/// The setting called `name` (a name not in [`SETTINGS`] is a bug).
pub fn setting(name: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no setting {name}"))
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    Env(String),
    File(PathBuf),
    Default,
    /// The default that applies because `rate` is 0.
    DefaultWithoutRate,
    /// Set by `run --sandbox` (its endpoint, throw-away keys, ledger and rate).
    Sandbox,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "from {flag}"),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::Default => f.write_str("default"),
            Origin::DefaultWithoutRate => f.write_str("default when rate is 0"),
            Origin::Sandbox => f.write_str("set by --sandbox"),
        }
    }
}

/// Flag values given on the command line, by setting name.
pub type Flags = Vec<(&'static str, Option<String>)>;

/// The raw layered values, before they are read into types.
#[derive(Debug, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Origin)>,
    config_file: Option<PathBuf>,
}

impl Layers {
    /// Resolves every known setting from flags, the environment and the config file.
    pub fn resolve(flags: &Flags, config: Option<&Path>) -> anyhow::Result<Self> {
        let mut layers = Layers::default();
        let file = match config {
            Some(path) => Some(read_toml(path)?),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Some(read_toml(Path::new(DEFAULT_CONFIG_FILE))?)
            }
            None => None,
        };
        if let Some((path, _)) = &file {
            layers.config_file = Some(path.clone());
        }
        for s in &SETTINGS {
            let from_flag = flags
                .iter()
                .find(|(n, _)| *n == s.name)
                .and_then(|(_, v)| v.clone())
                .map(|v| (v, Origin::Flag(s.flag())));
            let from_env = || {
                std::env::var(s.env_var())
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (v, Origin::Env(s.env_var())))
            };
            let from_file = || {
                file.as_ref().and_then(|(path, table)| {
                    table
                        .get(s.name)
                        .map(|v| (toml_scalar(v), Origin::File(path.clone())))
                })
            };
            let from_default = || s.default.map(|d| (d.to_owned(), Origin::Default));
            if let Some(v) = from_flag
                .or_else(from_env)
                .or_else(from_file)
                .or_else(from_default)
            {
                layers.values.insert(s.name, v);
            }
        }
        layers.default_concurrency_without_rate();
        Ok(layers)
    }

    /// With no rate limit, an unset `concurrency` is larger (see [`UNLIMITED_RATE_CONCURRENCY`]).
    fn default_concurrency_without_rate(&mut self) {
        let no_rate = self
            .optional("rate")
            .and_then(|r| r.trim().parse::<u32>().ok())
            == Some(0);
        if no_rate && self.origin("concurrency") == Some(&Origin::Default) {
            self.values.insert(
                "concurrency",
                (
                    UNLIMITED_RATE_CONCURRENCY.to_string(),
                    Origin::DefaultWithoutRate,
                ),
            );
        }
    }

    /// Sets a value from somewhere other than the user (`run --sandbox`), as what it is: the
    /// record of the run's settings says so, rather than claiming a flag was given.
    pub fn set(&mut self, name: &'static str, value: String, origin: Origin) {
        let name = setting(name).name;
        self.values.insert(name, (value, origin));
        if name == "rate" {
            self.default_concurrency_without_rate();
        }
    }

    fn get(&self, name: &'static str) -> Option<&(String, Origin)> {
        self.values.get(name)
    }

    /// A setting that must be present.
    pub fn require(&self, name: &'static str) -> anyhow::Result<&str> {
        match self.get(name) {
            Some((v, _)) => Ok(v),
            None => {
                let s = setting(name);
                bail!(
                    "missing setting `{name}`: pass {}, set {}, or add `{name} = \"…\"` to {}",
                    s.flag(),
                    s.env_var(),
                    self.config_file
                        .as_deref()
                        .unwrap_or(Path::new(DEFAULT_CONFIG_FILE))
                        .display()
                )
            }
        }
    }

    pub fn optional(&self, name: &'static str) -> Option<&str> {
        self.get(name).map(|(v, _)| v.as_str())
    }

    /// Reads a setting with `parse`; an error names the setting, where it came from and what is
    /// expected (never the value of a key setting).
    pub fn parse<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let value = self.require(name)?;
        parse(value.trim()).ok_or_else(|| {
            let origin = self.origin(name).unwrap_or(&Origin::Default);
            let expected = setting(name).expected;
            if looks_like_key_material(value) {
                anyhow::anyhow!(
                    "setting `{name}` ({origin}) holds key material (not shown): expected {expected}"
                )
            } else {
                anyhow::anyhow!("setting `{name}` ({origin}) is {value:?}: expected {expected}")
            }
        })
    }

    /// Where a setting's value came from.
    pub fn origin(&self, name: &'static str) -> Option<&Origin> {
        self.get(name).map(|(_, s)| s)
    }

    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// The settings as `name = value (origin)` lines, key paths included but never key content
    /// (a key pasted where its path belongs is shown as such).
    pub fn describe(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, (v, s))| {
                let v = if looks_like_key_material(v) {
                    "(key material, not shown)".to_owned()
                } else if crate::ledger::postgres::is_url(v) {
                    // A password in a ledger URL is a secret too.
                    crate::ledger::postgres::redacted(v)
                } else {
                    v.clone()
                };
                ((*k).to_owned(), format!("{v} ({s})"))
            })
            .collect()
    }

    /// A setting that names a key file: refused, without its value, when it holds the key
    /// itself.
    pub fn key_path(&self, name: &'static str) -> anyhow::Result<PathBuf> {
        let value = self.require(name)?;
        if looks_like_key_material(value) {
            bail!(
                "setting `{name}` ({}) holds key material, not a path: `{name}` must be the path \
                 of a key file, e.g. keys/{}.pem (the value is not shown)",
                self.origin(name).unwrap_or(&Origin::Default),
                if name == "private_key" {
                    "client_private"
                } else {
                    "alipay_public"
                }
            );
        }
        Ok(PathBuf::from(value.trim()))
    }
}

fn read_toml(path: &Path) -> anyhow::Result<(PathBuf, toml::Table)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let unknown: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !SETTINGS.iter().any(|s| s.name == *k))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        bail!(
            "config file {} has unknown settings: {} (known: {})",
            path.display(),
            unknown.join(", "),
            known.join(", ")
        );
    }
    Ok((path.to_owned(), table))
}

fn toml_scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The typed settings of a run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub endpoint: String,
    pub client_id: String,
    pub private_key: PathBuf,
    pub alipay_public_key: PathBuf,
    pub key_version: String,
    pub signature_algorithm: String,
    /// Requests per second; 0 is no limit.
    pub rate: u32,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Duration,
    /// Pauses after which a row that still has no answer is tried again while the gateway is
    /// down, while the rest of the sheet goes on.
    pub retry_later: Vec<Duration>,
    pub ledger: PathBuf,
}

fn whole<T: std::str::FromStr + PartialOrd>(min: T, max: T) -> impl Fn(&str) -> Option<T> {
    move |s| s.parse::<T>().ok().filter(|v| *v >= min && *v <= max)
}

impl RunSettings {
    /// What the client needs of these settings.
    pub fn client_settings(&self) -> crate::api::client::ClientSettings {
        crate::api::client::ClientSettings {
            endpoint: self.endpoint.clone(),
            client_id: self.client_id.clone(),
            key_version: self.key_version.clone(),
            signature_algorithm: self.signature_algorithm.clone(),
            timeout: self.timeout,
        }
    }

    /// Reads and checks every run setting.
    pub fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        let endpoint = l.require("endpoint")?.trim().to_owned();
        crate::api::client::check_endpoint(&endpoint).map_err(|e| {
            anyhow::anyhow!(
                "setting `endpoint` ({}): {e}",
                l.origin("endpoint").unwrap_or(&Origin::Default)
            )
        })?;
        Ok(RunSettings {
            endpoint,
            client_id: l.parse("client_id", |s| {
                (!s.is_empty() && !s.contains(char::is_whitespace)).then(|| s.to_owned())
            })?,
            private_key: l.key_path("private_key")?,
            alipay_public_key: l.key_path("alipay_public_key")?,
            key_version: l.parse("key_version", |s| {
                s.parse::<u32>().ok().map(|v| v.to_string())
            })?,
            signature_algorithm: l.parse("signature_algorithm", |s| {
                (s.eq_ignore_ascii_case("RSA256") || s.eq_ignore_ascii_case("sha256withrsa"))
                    .then(|| s.to_owned())
            })?,
            rate: l.parse("rate", whole(0, 100_000))?,
            concurrency: l.parse("concurrency", whole(1, MAX_CONCURRENCY))?,
            max_attempts: l.parse("max_attempts", whole(1, 100))?,
            timeout: l.parse("timeout", crate::duration::parse)?,
            backoff: l.parse("backoff", crate::duration::parse)?,
            retry_later: l.parse("retry_later", crate::duration::parse_list)?,
            ledger: PathBuf::from(l.require("ledger")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_rate_limit_the_default_concurrency_is_larger_but_a_set_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let resolve = |flags: Flags| Layers::resolve(&flags, Some(&path)).unwrap();

        let l = resolve(vec![("rate", Some("0".into()))]);
        assert_eq!(l.optional("concurrency"), Some("64"));
        assert_eq!(l.origin("concurrency"), Some(&Origin::DefaultWithoutRate));
        assert_eq!(
            l.describe()["concurrency"],
            "64 (default when rate is 0)",
            "the ledger's record of the settings says why"
        );

        let l = resolve(vec![
            ("rate", Some("0".into())),
            ("concurrency", Some("8".into())),
        ]);
        assert_eq!(l.optional("concurrency"), Some("8"));

        for rate in [None, Some("10"), Some("zero")] {
            let l = resolve(vec![("rate", rate.map(str::to_owned))]);
            assert_eq!(l.optional("concurrency"), Some("64"), "rate {rate:?}");
            assert_eq!(l.origin("concurrency"), Some(&Origin::Default));
        }
    }

    #[test]
    fn flags_beat_the_file_and_a_bad_value_names_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "rate = 7\nconcurrency = \"lots\"\n").unwrap();
        let flags: Flags = vec![("rate", Some("9".into()))];
        let l = Layers::resolve(&flags, Some(&path)).unwrap();
        assert_eq!(l.optional("rate"), Some("9"));
        assert_eq!(l.optional("timeout"), Some("15s"));
        let err = RunSettings::from_layers(&l).unwrap_err().to_string();
        assert!(err.contains("client_id"), "{err}");
        let err = l
            .parse("concurrency", |s| s.parse::<usize>().ok())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml") && err.contains("concurrency") && err.contains("1 to 512"),
            "{err}"
        );
    }

    #[test]
    fn a_value_set_by_the_sandbox_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let mut l = Layers::resolve(&vec![], Some(&path)).unwrap();
        l.set("private_key", "/tmp/k.pem".into(), Origin::Sandbox);
        l.set("rate", "0".into(), Origin::Sandbox);
        assert_eq!(l.describe()["private_key"], "/tmp/k.pem (set by --sandbox)");
        assert_eq!(l.optional("concurrency"), Some("64"));
    }

    #[test]
    fn unknown_file_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "rat = 7\n").unwrap();
        let err = Layers::resolve(&vec![], Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rat"), "{err}");
    }

    #[test]
    fn a_key_given_as_a_setting_value_is_refused_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        let l = Layers::resolve(&vec![("private_key", Some(key.into()))], Some(&path)).unwrap();
        let err = l.key_path("private_key").unwrap_err().to_string();
        assert!(err.contains("must be the path of a key file"), "{err}");
        assert!(!err.contains("MIIEvQ"), "{err}");
        assert!(!l.describe()["private_key"].contains("MIIEvQ"));
    }

    #[test]
    fn a_password_in_a_ledger_url_never_reaches_the_run_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let url = "postgresql://ops:s3cret@db.example/pms";
        let l = Layers::resolve(&vec![("ledger", Some(url.into()))], Some(&path)).unwrap();
        let shown = &l.describe()["ledger"];
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("ops:***@db.example/pms"), "{shown}");
    }
}
