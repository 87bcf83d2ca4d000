//! Settings, layered: command-line flags, then `PMS_ONBOARD_*` environment variables, then a TOML
//! file (`--config`, or `pms-onboard.toml` when present), then defaults. Every value remembers
//! where it came from, so that a bad one is reported as "setting `rate` (from PMS_ONBOARD_RATE)".
//! A bad or missing setting stops the command before anything is sent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The name of the TOML file read from the current directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "pms-onboard.toml";

/// The most workers a run may have: the `concurrency` setting's upper bound.
pub const MAX_CONCURRENCY: usize = 512;

/// `concurrency` when it is not set and `rate` is 0 (no limit: the sandbox and benchmarks only).
/// Nothing then waits for a rate slot, so more workers only keep both ends busy. At the usual 8,
/// a run against the sandbox left about 15 % of its rows a second unused and spent more CPU a
/// row (docs/performance.md, item 29). More workers bring no cost a limited rate would have:
/// no row is marked in flight while it waits for a slot.
pub const UNLIMITED_RATE_CONCURRENCY: usize = 64;

/// Every setting the tool knows, with its default (`None`: no default, must be given when needed).
const KNOWN: &[(&str, Option<&str>)] = &[
    ("endpoint", Some("https://open.alipay.hk")),
    ("client_id", None),
    ("private_key", None),
    ("alipay_public_key", None),
    ("key_version", Some("1")),
    ("signature_algorithm", Some("RSA256")),
    ("rate", Some("10")),
    ("concurrency", Some("8")),
    ("max_attempts", Some("4")),
    ("timeout", Some("15s")),
    ("backoff", Some("2s")),
    ("retry_later", Some("10m,30m")),
    ("ledger", Some("pms-ledger.db")),
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(String),
    Env(String),
    File(PathBuf),
    Default,
    /// The default that applies because `rate` is 0.
    DefaultWithoutRate,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "from {flag}"),
            Source::Env(var) => write!(f, "from environment variable {var}"),
            Source::File(path) => write!(f, "from {}", path.display()),
            Source::Default => f.write_str("default"),
            Source::DefaultWithoutRate => f.write_str("default when rate is 0"),
        }
    }
}

/// The raw layered values, before they are read into types.
#[derive(Debug, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
    config_file: Option<PathBuf>,
}

/// Flag values given on the command line, by setting name.
pub type Flags = Vec<(&'static str, Option<String>)>;

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
        for &(name, default) in KNOWN {
            let env_var = format!("PMS_ONBOARD_{}", name.to_ascii_uppercase());
            let from_flag = flags
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
                .map(|v| (v, Source::Flag(format!("--{}", name.replace('_', "-")))));
            let from_env = || {
                std::env::var(&env_var)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (v, Source::Env(env_var.clone())))
            };
            let from_file = || {
                file.as_ref().and_then(|(path, table)| {
                    table
                        .get(name)
                        .map(|v| (toml_scalar(v), Source::File(path.clone())))
                })
            };
            let from_default = || default.map(|d| (d.to_owned(), Source::Default));
            if let Some(v) = from_flag
                .or_else(from_env)
                .or_else(from_file)
                .or_else(from_default)
            {
                layers.values.insert(name, v);
            }
        }
        let no_rate = layers
            .optional("rate")
            .and_then(|r| r.trim().parse::<u32>().ok())
            == Some(0);
        if no_rate && layers.source("concurrency") == Some(&Source::Default) {
            layers.values.insert(
                "concurrency",
                (
                    UNLIMITED_RATE_CONCURRENCY.to_string(),
                    Source::DefaultWithoutRate,
                ),
            );
        }
        Ok(layers)
    }

    fn get(&self, name: &'static str) -> Option<&(String, Source)> {
        self.values.get(name)
    }

    /// A setting that must be present.
    pub fn require(&self, name: &'static str) -> anyhow::Result<&str> {
        match self.get(name) {
            Some((v, _)) => Ok(v),
            None => bail!(
                "missing setting `{name}`: pass --{}, set PMS_ONBOARD_{}, or add `{name} = \"…\"` to {}",
                name.replace('_', "-"),
                name.to_ascii_uppercase(),
                self.config_file
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_CONFIG_FILE))
                    .display()
            ),
        }
    }

    pub fn optional(&self, name: &'static str) -> Option<&str> {
        self.get(name).map(|(v, _)| v.as_str())
    }

    /// Reads a setting with `parse`; an error names the setting, its source and what is expected.
    pub fn parse<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let value = self.require(name)?;
        parse(value.trim()).ok_or_else(|| {
            let source = &self.get(name).expect("required above").1;
            anyhow::anyhow!("setting `{name}` ({source}) is {value:?}: expected {expected}")
        })
    }

    pub fn source(&self, name: &'static str) -> Option<&Source> {
        self.get(name).map(|(_, s)| s)
    }

    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// The settings as `name = value (source)` lines, key paths included but never key content
    /// (a key pasted where its path belongs is shown as such).
    pub fn describe(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, (v, s))| {
                let v = if crate::api::keys::looks_like_key_material(v) {
                    "(key material, not shown)"
                } else {
                    v
                };
                ((*k).to_owned(), format!("{v} ({s})"))
            })
            .collect()
    }

    /// A setting that names a key file: refused, without its value, when it holds the key
    /// itself.
    pub fn key_path(&self, name: &'static str) -> anyhow::Result<PathBuf> {
        let value = self.require(name)?;
        if crate::api::keys::looks_like_key_material(value) {
            bail!(
                "setting `{name}` ({}) holds key material, not a path: `{name}` must be the path \
                 of a key file, e.g. keys/{}.pem (the value is not shown)",
                self.source(name).unwrap_or(&Source::Default),
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
        .filter(|k| !KNOWN.iter().any(|(n, _)| n == k))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = KNOWN.iter().map(|(n, _)| *n).collect();
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

/// Reads `15`, `15s`, `500ms`, `1.5s`, `2m` as a duration (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number.trim().parse().ok()?;
    let secs = value * scale;
    (secs.is_finite() && secs > 0.0 && secs < 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// `10m,30m`: durations separated by commas; empty or `none` for none.
pub fn parse_durations(s: &str) -> Option<Vec<Duration>> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    let list = s
        .split(',')
        .map(parse_duration)
        .collect::<Option<Vec<_>>>()?;
    (list.len() <= 10).then_some(list)
}

/// `15s`, `500ms`: the form `parse_duration` reads back.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
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
    /// Pauses after which a row that still has no answer is tried again, while the rest of the
    /// sheet goes on.
    pub retry_later: Vec<Duration>,
    pub ledger: PathBuf,
}

impl RunSettings {
    /// Reads and checks every run setting.
    pub fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        let endpoint = l.require("endpoint")?.trim().to_owned();
        crate::api::client::check_endpoint(&endpoint).map_err(|e| {
            anyhow::anyhow!(
                "setting `endpoint` ({}): {e}",
                l.source("endpoint").unwrap_or(&Source::Default)
            )
        })?;
        let client_id = l.parse("client_id", "the client id from the AlipayHK portal", |s| {
            (!s.is_empty() && !s.contains(char::is_whitespace)).then(|| s.to_owned())
        })?;
        Ok(RunSettings {
            endpoint,
            client_id,
            private_key: l.key_path("private_key")?,
            alipay_public_key: l.key_path("alipay_public_key")?,
            key_version: l.parse("key_version", "a whole number such as 1", |s| {
                s.parse::<u32>().ok().map(|v| v.to_string())
            })?,
            signature_algorithm: l.parse(
                "signature_algorithm",
                "RSA256 or sha256withrsa",
                |s| {
                    (s.eq_ignore_ascii_case("RSA256") || s.eq_ignore_ascii_case("sha256withrsa"))
                        .then(|| s.to_owned())
                },
            )?,
            rate: l.parse(
                "rate",
                "requests per second, a whole number (0: no limit)",
                |s| s.parse::<u32>().ok().filter(|r| *r <= 100_000),
            )?,
            concurrency: l.parse("concurrency", "a whole number from 1 to 512", |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|c| (1..=MAX_CONCURRENCY).contains(c))
            })?,
            max_attempts: l.parse("max_attempts", "a whole number from 1 to 100", |s| {
                s.parse::<u32>().ok().filter(|c| (1..=100).contains(c))
            })?,
            timeout: l.parse(
                "timeout",
                "a duration such as 15, 15s or 500ms",
                parse_duration,
            )?,
            backoff: l.parse("backoff", "a duration such as 2s or 500ms", parse_duration)?,
            retry_later: l.parse(
                "retry_later",
                "durations separated by commas, such as 10m,30m (none: no later retries)",
                parse_durations,
            )?,
            ledger: PathBuf::from(l.require("ledger")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_users_write_them() {
        assert_eq!(parse_duration("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
        assert_eq!(
            parse_durations("10m, 30m"),
            Some(vec![Duration::from_secs(600), Duration::from_secs(1800)])
        );
        assert_eq!(parse_durations("none"), Some(vec![]));
        assert_eq!(parse_durations("10m,soon"), None);
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
    fn without_a_rate_limit_the_default_concurrency_is_larger_but_a_set_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let resolve = |flags: Flags| Layers::resolve(&flags, Some(&path)).unwrap();

        let l = resolve(vec![("rate", Some("0".into()))]);
        assert_eq!(l.optional("concurrency"), Some("64"));
        assert_eq!(l.source("concurrency"), Some(&Source::DefaultWithoutRate));
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
            assert_eq!(l.optional("concurrency"), Some("8"), "rate {rate:?}");
            assert_eq!(l.source("concurrency"), Some(&Source::Default));
        }
    }

    #[test]
    fn flags_beat_the_file_and_a_bad_value_names_its_source() {
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
            .parse("concurrency", "a number", |s| s.parse::<usize>().ok())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml") && err.contains("concurrency"),
            "{err}"
        );
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
}
