//! What the sandbox is told at start: keys, accepted key version, known malls and trade
//! numbers, faults, the rate limit, its clock and an outage; and reading the malls CSV and the
//! trades list.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::faults::Faults;
use crate::api::keys::{PrivateKey, PublicKey};

/// Everything a sandbox needs. `Debug` is safe: both key types redact themselves.
#[derive(Debug)]
pub struct SandboxConfig {
    pub client_id: String,
    /// Verifies requests.
    pub client_public_key: PublicKey,
    /// Signs responses.
    pub alipay_private_key: PrivateKey,
    /// The one `keyVersion` accepted (anything else is `KEY_NOT_FOUND`); also sent back.
    pub key_version: String,
    /// `(mall_group_label, mall_label)` pairs that exist; `None`: every numeric mall exists.
    pub malls: Option<HashSet<(String, String)>>,
    /// iPay trade numbers that exist; `None`: every numeric trade number exists.
    pub trades: Option<HashSet<String>>,
    pub faults: Faults,
    /// Requests per trailing second beyond which the request is refused, as `rate_limit_answer`
    /// says. Every arrival counts, refused ones too, as a gateway counts them.
    pub rate_limit: Option<u32>,
    pub rate_limit_answer: RateLimitAnswer,
    /// Seconds added to the sandbox's clock (`response-time`, `Date`), to play a gateway whose
    /// clock differs from the client's; negative is behind.
    pub clock_offset_secs: i64,
    /// When set, a `request-time` further than this from the sandbox's (shifted) clock is
    /// refused with `INVALID_SIGNATURE`. AlipayHK publishes no tolerance, so it is off by default.
    pub max_clock_skew: Option<Duration>,
    /// Every request fails for a while from the first one, then the sandbox recovers.
    pub outage: Option<Outage>,
}

/// How a request beyond the rate limit is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RateLimitAnswer {
    /// HTTP 429 with `Retry-After: 1` and a plain-text body (counted as `RATE_LIMITED`).
    #[default]
    Http429,
    /// HTTP 200 with the signed JSON answer `REQUEST_TRAFFIC_EXCEED_LIMIT`, status `U`, as
    /// AlipayHK documents it (counted under that code).
    Code,
}

/// A gateway that is down for `duration` from the first request, answering every request with
/// `answer` before any effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub duration: Duration,
    pub answer: OutageAnswer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutageAnswer {
    /// HTTP 503 with a plain-text body (counted as `HTTP_503`).
    #[default]
    Http503,
    /// The signed JSON answer `UNKNOWN_EXCEPTION`, status `U`.
    Unknown,
}

impl SandboxConfig {
    /// Reads `client_public.pem` and `alipay_private.pem` from `keys_dir`, the names `keygen`
    /// writes; everything else takes its default (key version 1, every mall and trade exists,
    /// no faults, no rate limit).
    pub fn from_dir(keys_dir: &Path, client_id: &str) -> anyhow::Result<Self> {
        let client_public_key = PublicKey::from_file(&keys_dir.join("client_public.pem"))
            .context("the sandbox verifies requests with the client's public key")?;
        let alipay_private_key = PrivateKey::from_file(&keys_dir.join("alipay_private.pem"))
            .context("the sandbox signs responses with the simulated gateway's private key")?;
        Ok(SandboxConfig {
            client_id: client_id.to_owned(),
            client_public_key,
            alipay_private_key,
            key_version: "1".to_owned(),
            malls: None,
            trades: None,
            faults: Faults::default(),
            rate_limit: None,
            rate_limit_answer: RateLimitAnswer::default(),
            clock_offset_secs: 0,
            max_clock_skew: None,
            outage: None,
        })
    }
}

/// Reads a CSV of `mall_group_label,mall_label` with a header row (column names matched like
/// the input files: case, spaces, `_` and `-` ignored; other columns ignored; BOM ignored).
pub fn load_malls(path: &Path) -> anyhow::Result<HashSet<(String, String)>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read the malls file {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("cannot read the header row of {}", path.display()))?
        .clone();
    let find = |want: &str| {
        headers.iter().position(|h| {
            let h: String = h
                .trim_start_matches('\u{feff}')
                .chars()
                .filter(|c| !matches!(c, ' ' | '_' | '-'))
                .flat_map(char::to_lowercase)
                .collect();
            h == want
        })
    };
    let (Some(group), Some(mall)) = (find("mallgrouplabel"), find("malllabel")) else {
        bail!(
            "{}: the malls file needs the columns mall_group_label and mall_label; found: {}",
            path.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        );
    };
    let mut malls = HashSet::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("cannot read {}", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let get = |i: usize| record.get(i).unwrap_or("").to_owned();
        let (g, m) = (get(group), get(mall));
        if g.is_empty() && m.is_empty() {
            continue;
        }
        if !is_digits(&g) || !is_digits(&m) {
            bail!(
                "{}:{line}: mall labels must be digits only, got {g:?},{m:?}",
                path.display()
            );
        }
        malls.insert((g, m));
    }
    Ok(malls)
}

/// Reads iPay trade numbers, one a line; blank lines are skipped.
pub fn load_trades(path: &Path) -> anyhow::Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the trades file {}", path.display()))?;
    let mut trades = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line_text = line.trim().trim_start_matches('\u{feff}');
        if line_text.is_empty() {
            continue;
        }
        if !is_digits(line_text) {
            bail!(
                "{}:{}: expected one iPay trade number (digits only) a line, got {line_text:?}",
                path.display(),
                i + 1
            );
        }
        trades.insert(line_text.to_owned());
    }
    Ok(trades)
}

/// Non-empty and ASCII digits only.
pub(crate) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malls_csv_with_bom_spaced_headers_and_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("malls.csv");
        std::fs::write(
            &path,
            "\u{feff}Name,Mall Group Label,mall-label\r\nHarbour,1, 11 \r\n\r\nPacific,2,21\r\n",
        )
        .unwrap();
        let malls = load_malls(&path).unwrap();
        assert_eq!(malls.len(), 2);
        assert!(malls.contains(&("1".into(), "11".into())));
    }

    #[test]
    fn malls_csv_without_the_columns_names_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("malls.csv");
        std::fs::write(&path, "group,mall\n1,2\n").unwrap();
        let err = load_malls(&path).unwrap_err().to_string();
        assert!(
            err.contains("mall_group_label") && err.contains("group, mall"),
            "{err}"
        );
    }

    #[test]
    fn trades_file_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.txt");
        std::fs::write(&path, "123\n\n 456 \n").unwrap();
        assert_eq!(load_trades(&path).unwrap().len(), 2);
        std::fs::write(&path, "123\n2.08802E+15\n").unwrap();
        let err = load_trades(&path).unwrap_err().to_string();
        assert!(err.contains("trades.txt:2:"), "{err}");
    }
}
