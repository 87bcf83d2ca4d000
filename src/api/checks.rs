//! The rules `doctor` and `run` share, written once so that both give the same verdict: the key
//! pair (AlipayHK's key is not the public half of your own), a private key's permissions, and
//! whose gateway a host is.
//!
//! The verdict is what `run` does: a [`Level::Fail`] here is a run refused before anything is
//! sent (doctor shows FAIL), a [`Level::Warn`] a run that goes on with a warning (doctor warns).
//! A private key other users can read is a warning in both (`docs/decisions.md`).

use std::path::Path;

use serde::Serialize;

use super::keys::{PrivateKey, PublicKey};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Advice: a run goes on.
    Warn,
    /// A run would be refused, or would fail.
    Fail,
    /// Not checked, because something it needs failed (counted there).
    Skip,
}

/// What a rule found, and what to do about it (`None` when nothing is to be done, or when the
/// detail says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(detail: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn new(level: Level, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// The detail and what to do, as one sentence: `DETAIL: FIX`.
    pub fn text(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{}: {fix}", self.detail),
            None => self.detail.clone(),
        }
    }
}

/// The two keys are not one pair: `alipay_public_key` must be AlipayHK's key, and the public
/// half of `private_key` is the one uploaded to the portal. With it, every answer would verify
/// only if it came from someone holding the client's own private key.
pub fn key_pair(
    private: &PrivateKey,
    public: &PublicKey,
    private_path: &Path,
    public_path: &Path,
) -> Finding {
    if private.public_key() == *public {
        return Finding::new(
            Level::Fail,
            format!(
                "alipay_public_key ({}) is the public half of your own private_key ({})",
                public_path.display(),
                private_path.display()
            ),
            "set alipay_public_key to AlipayHK's public key, shown in the AlipayHK portal beside \
             your client id (not the public key you uploaded there)",
        );
    }
    Finding::ok(
        "alipay_public_key is not the public half of private_key (--probe proves it is \
         AlipayHK's)",
    )
}

/// Whether other users of this machine may read the private key. A warning, not a refusal: the
/// key works, and refusing it would stop a scheduled run that worked the day before; `doctor`
/// and every run say what to run. `None` where the system has no Unix modes, or the file's mode
/// cannot be read (reading the key then says why).
pub fn key_permissions(path: &Path) -> Option<Finding> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        let shown = path.display();
        Some(if mode & 0o077 != 0 {
            Finding::new(
                Level::Warn,
                format!("{shown} is open to other users of this machine (mode {mode:o})"),
                format!("run chmod 600 {shown}"),
            )
        } else {
            Finding::ok(format!(
                "{shown}: only its owner can read it (mode {mode:o})"
            ))
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Whose gateway a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    AlipayHk,
    /// A sandbox on this machine.
    ThisMachine,
    /// Alipay's gateways for mainland China and other regions: the same signature scheme, so a
    /// wrong endpoint there fails like a wrong key.
    OtherAlipay,
    Unknown,
}

impl Host {
    pub fn of(url: &url::Url) -> Host {
        match url.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Host::ThisMachine,
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Host::ThisMachine,
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let under = |domain: &str| name == domain || name.ends_with(&format!(".{domain}"));
                if name == "open.alipay.hk" {
                    Host::AlipayHk
                } else if name == "localhost" {
                    Host::ThisMachine
                } else if [
                    "alipay.com",
                    "alipaydev.com",
                    "alipayplus.com",
                    "alipay.net",
                ]
                .into_iter()
                .any(under)
                {
                    Host::OtherAlipay
                } else {
                    Host::Unknown
                }
            }
            _ => Host::Unknown,
        }
    }
}

/// The endpoint's host: AlipayHK's or this machine's pass; another Alipay region's gateway
/// fails (its answers would say the signature is wrong); any other host is a warning (a test
/// gateway or a relay is fine, a real run must reach AlipayHK).
pub fn host(url: &url::Url) -> Finding {
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match Host::of(url) {
        Host::AlipayHk => Finding::ok(format!("{host} is AlipayHK's gateway")),
        Host::ThisMachine => Finding::ok(format!(
            "{host} is this machine: a sandbox, nothing real is sent"
        )),
        Host::OtherAlipay => Finding::new(
            Level::Fail,
            format!(
                "{host} is an Alipay gateway for mainland China or other regions, not AlipayHK's"
            ),
            "set endpoint to https://open.alipay.hk",
        ),
        Host::Unknown => Finding::new(
            Level::Warn,
            format!("{host} is not AlipayHK's gateway (open.alipay.hk)"),
            "fine for a test gateway or a relay, but a real run must reach https://open.alipay.hk",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_apart() {
        let host = |u: &str| Host::of(&url::Url::parse(u).unwrap());
        assert_eq!(host("https://open.alipay.hk"), Host::AlipayHk);
        assert_eq!(host("https://OPEN.ALIPAY.HK./"), Host::AlipayHk);
        for other in [
            "https://openapi.alipay.com",
            "https://open-na.alipay.com",
            "https://open-sea-global.alipay.com",
            "https://openapi.alipaydev.com",
            "https://open-sea.alipayplus.com",
        ] {
            assert_eq!(host(other), Host::OtherAlipay, "{other}");
        }
        for local in [
            "http://127.0.0.1:8765",
            "http://[::1]:1",
            "http://localhost:1",
        ] {
            assert_eq!(host(local), Host::ThisMachine, "{local}");
        }
        for unknown in [
            "https://gateway.example.com",
            "https://notalipay.com",
            "https://open-sea.alipay.hk",
        ] {
            assert_eq!(host(unknown), Host::Unknown, "{unknown}");
        }
    }

    #[test]
    fn the_host_verdict_is_the_runs() {
        let verdict = |u: &str| super::host(&url::Url::parse(u).unwrap()).level;
        assert_eq!(verdict("https://open.alipay.hk"), Level::Ok);
        assert_eq!(verdict("http://[::1]:8765"), Level::Ok);
        assert_eq!(verdict("https://openapi.alipay.com"), Level::Fail);
        assert_eq!(verdict("https://relay.example"), Level::Warn);
        let said = super::host(&url::Url::parse("https://openapi.alipay.com").unwrap()).text();
        assert!(
            said.contains("set endpoint to https://open.alipay.hk"),
            "{said}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_private_key_others_can_read_is_a_warning_naming_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let found = key_permissions(&key).unwrap();
        assert_eq!(found.level, Level::Warn);
        assert!(found.text().contains("mode 640") && found.text().contains("chmod 600"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(key_permissions(&key).unwrap().level, Level::Ok);
        assert_eq!(key_permissions(&dir.path().join("none")), None);
    }
}
