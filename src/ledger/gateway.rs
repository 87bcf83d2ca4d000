//! Which gateway a ledger belongs to. Its rows say what was done at one gateway (an endpoint and
//! a client id): a ledger filled against UAT and then used against production would skip every
//! row as done, and send nothing. The first run that uses a ledger records its gateway
//! ([`claim`]); a run, `reconcile` or `export --annotate` with settings that name another one is
//! refused ([`check`]) before anything is sent or written, naming both and the way out.
//!
//! `run --sandbox` starts its simulator on a new port each time: its ledger belongs to the
//! built-in sandbox ([`Gateway::built_in_sandbox`]), whatever the port.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, named_params};

/// What `gateway.endpoint` holds for the built-in sandbox of `run --sandbox`.
const SANDBOX: &str = "sandbox";

/// An endpoint and a client id, as a ledger records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// `scheme://host:port/path`: the host lower-cased, the port explicit, no trailing `/`;
    /// `sandbox` for the built-in sandbox.
    pub endpoint: String,
    pub client_id: String,
}

impl Gateway {
    /// The gateway at `endpoint` (a base URL), as `client_id`. Two spellings of one URL
    /// (`HTTPS://Open.Alipay.HK/`, `https://open.alipay.hk:443`) are the same gateway.
    pub fn new(endpoint: &str, client_id: &str) -> Result<Gateway, String> {
        let url = url::Url::parse(endpoint.trim())
            .map_err(|e| format!("{endpoint:?} is not a URL ({e})"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("{endpoint:?} names no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{endpoint:?} names no port"))?;
        Ok(Gateway {
            endpoint: format!(
                "{}://{}:{port}{}",
                url.scheme(),
                host.to_ascii_lowercase(),
                url.path().trim_end_matches('/')
            ),
            client_id: client_id.trim().to_owned(),
        })
    }

    /// The simulator `run --sandbox` starts (on a new port each time).
    pub fn built_in_sandbox(client_id: &str) -> Gateway {
        Gateway {
            endpoint: SANDBOX.to_owned(),
            client_id: client_id.to_owned(),
        }
    }

    pub fn is_built_in_sandbox(&self) -> bool {
        self.endpoint == SANDBOX
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_built_in_sandbox() {
            write!(
                f,
                "the built-in sandbox of `run --sandbox` (client id {})",
                self.client_id
            )
        } else {
            write!(f, "{} with client id {}", self.endpoint, self.client_id)
        }
    }
}

/// The gateway recorded in a ledger, if one is (`None` also for a ledger too old to record one,
/// opened without upgrading it): what `doctor` shows.
pub fn recorded(conn: &Connection) -> rusqlite::Result<Option<Gateway>> {
    let has_table: Option<i64> = conn
        .query_row(
            "SELECT 1 AS present FROM sqlite_master WHERE type = 'table' AND name = 'gateway'",
            [],
            |r| r.get("present"),
        )
        .optional()?;
    if has_table.is_none() {
        return Ok(None);
    }
    conn.query_row(
        "SELECT endpoint, client_id FROM gateway WHERE id = 1",
        [],
        |r| {
            Ok(Gateway {
                endpoint: r.get("endpoint")?,
                client_id: r.get("client_id")?,
            })
        },
    )
    .optional()
}

/// A ledger of another gateway: refused, naming both and the way out.
#[derive(Debug, thiserror::Error)]
#[error(
    "the ledger {ledger} belongs to another gateway: it records what was done at {recorded}, and \
     these settings name {given}. Its rows would be taken for done here (a run would skip them \
     and send nothing). Nothing was sent or written. Give this gateway a ledger of its own: \
     --ledger PATH (or `ledger` in the settings file or PMS_ONBOARD_LEDGER), for example \
     --ledger {suggestion}; or, if the settings are the wrong ones, correct `endpoint` and \
     `client_id`"
)]
pub struct OtherGateway {
    pub ledger: String,
    pub recorded: Gateway,
    pub given: Gateway,
    pub(crate) suggestion: String,
}

/// Refuses a ledger that records a gateway other than `given`; a ledger that records none
/// passes (a run records it with [`claim`]).
pub fn check(conn: &Connection, ledger: &Path, given: &Gateway) -> anyhow::Result<()> {
    match recorded(conn)? {
        Some(recorded) if recorded != *given => Err(OtherGateway {
            ledger: ledger.display().to_string(),
            suggestion: suggested_ledger(ledger, given),
            recorded,
            given: given.clone(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// For a run: [`check`], then records `given` if the ledger records no gateway yet.
pub fn claim(conn: &Connection, ledger: &Path, given: &Gateway) -> anyhow::Result<()> {
    check(conn, ledger, given)?;
    conn.execute(
        "INSERT INTO gateway (id, endpoint, client_id, recorded_at)
         VALUES (1, :endpoint, :client_id, :now) ON CONFLICT (id) DO NOTHING",
        named_params! {
            ":endpoint": given.endpoint,
            ":client_id": given.client_id,
            ":now": super::now(),
        },
    )?;
    Ok(())
}

/// A ledger name beside `ledger` for `given`'s host: `pms-ledger-uat.example.com.db`.
fn suggested_ledger(ledger: &Path, given: &Gateway) -> String {
    let host = given
        .endpoint
        .split("://")
        .nth(1)
        .unwrap_or(&given.endpoint)
        .split([':', '/'])
        .next()
        .unwrap_or("gateway");
    let stem = ledger
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("pms-ledger");
    let name = format!("{stem}-{host}.db");
    match ledger.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join(name).display().to_string(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_in_any_spelling_is_one_gateway() {
        let a = Gateway::new("https://open.alipay.hk", "c").unwrap();
        assert_eq!(a.endpoint, "https://open.alipay.hk:443");
        for same in [
            "HTTPS://Open.Alipay.HK/",
            "https://open.alipay.hk:443",
            " https://open.alipay.hk// ",
        ] {
            assert_eq!(Gateway::new(same, "c").unwrap(), a, "{same}");
        }
        assert_eq!(
            Gateway::new("http://127.0.0.1:8765/", "c")
                .unwrap()
                .endpoint,
            "http://127.0.0.1:8765"
        );
        assert_eq!(
            Gateway::new("https://uat.example/gw/", "c")
                .unwrap()
                .endpoint,
            "https://uat.example:443/gw"
        );
        assert_ne!(Gateway::new("https://open.alipay.hk", "d").unwrap(), a);
        assert_ne!(Gateway::new("https://open.alipay.hk:8443", "c").unwrap(), a);
        assert!(Gateway::new("not a url", "c").is_err());
    }

    #[test]
    fn the_first_run_records_the_gateway_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = super::super::open_unlocked(&path).unwrap();
        assert_eq!(recorded(&conn).unwrap(), None);
        let uat = Gateway::new("https://uat.example", "2102000000000000001").unwrap();
        let prod = Gateway::new("https://open.alipay.hk", "2102000000000000001").unwrap();
        check(&conn, &path, &prod).unwrap();
        claim(&conn, &path, &uat).unwrap();
        claim(&conn, &path, &uat).unwrap();
        assert_eq!(recorded(&conn).unwrap(), Some(uat.clone()));
        let err = claim(&conn, &path, &prod).unwrap_err().to_string();
        assert!(
            err.contains("https://uat.example:443 with client id"),
            "{err}"
        );
        assert!(
            err.contains("these settings name https://open.alipay.hk:443"),
            "{err}"
        );
        assert!(err.contains("--ledger"), "{err}");
        assert!(err.contains("l-open.alipay.hk.db"), "{err}");
        assert_eq!(recorded(&conn).unwrap(), Some(uat));
        let sandbox = Gateway::built_in_sandbox("2102000000000000001");
        assert!(check(&conn, &path, &sandbox).is_err());
    }
}
