//! The ledger: its folder writable, on a local disk, readable by its owner only, not in use by
//! a run, the gateway it belongs to, its rows by state and the last run.

use std::path::{Path, PathBuf};

use super::{Check, Group};
use crate::ledger::{self, Gateway, filesystem, queries};

/// The ledger's group. `endpoint` and `client_id` are the settings' (when set), to compare with
/// the gateway the ledger records.
pub fn checks(path: &Path, endpoint: Option<&str>, client_id: Option<&str>) -> Group {
    if let Some(url) = path.to_str().filter(|p| ledger::postgres::is_url(p)) {
        return postgres(url);
    }
    let mut group = Group::new("ledger", "ledger");
    group.push(folder(path));
    let remote = filesystem::remote(path);
    group.push(match &remote {
        Some(r) => Check::fail_with(
            "filesystem",
            format!(
                "{} is on a network or FUSE filesystem ({}): a run refuses it, before anything \
                 is sent",
                path.display(),
                r.kind
            ),
            filesystem::WAY_OUT,
        ),
        None => Check::ok("filesystem", "on a local disk"),
    });
    let shown = path.display();
    if !path.exists() {
        group.push(Check::ok(
            "ledger",
            format!("{shown} does not exist yet: the first run creates it"),
        ));
        return group;
    }
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
        group.push(Check::fail_with(
            "ledger",
            format!("{shown} cannot be written: {e}"),
            "give this user write access to it",
        ));
    }
    #[cfg(unix)]
    group.push(match filesystem::readable_by_others(path) {
        Some(said) => Check::new(
            "permissions",
            crate::api::checks::Finding {
                level: crate::api::checks::Level::Warn,
                detail: said,
                fix: None,
            },
        ),
        None => Check::ok("permissions", "only its owner can read its files"),
    });
    group.push(match (&remote, ledger::LedgerLock::acquire(path)) {
        (Some(_), _) => Check::skip(
            "in use",
            "the one-writer lock cannot be relied on there (see filesystem)",
        ),
        // Taken and let go at once, as a run takes it (the lock is on the file itself, whatever
        // path names it).
        (None, Ok(_lock)) => Check::ok("in use", format!("no run is using {shown}")),
        (None, Err(e)) => Check::fail("in use", format!("{:#}", anyhow::Error::from(e))),
    });
    let conn = match ledger::open_existing(path) {
        Ok(conn) => conn,
        Err(e) => {
            group.push(not_a_ledger(&e));
            group.push(Check::skip("gateway", "needs a readable ledger"));
            return group;
        }
    };
    group.push(match queries::status(&conn, 1) {
        Ok(c) => {
            let last = c.last_runs.first().map_or_else(
                || "no run yet".to_owned(),
                |r| format!("last run #{} started {}, {}", r.id, r.started_at, r.outcome),
            );
            Check::ok(
                "state",
                format!(
                    "{} rows: {} succeeded, {} already circled, {} pending, {} in flight, {} \
                     failed; {last}",
                    c.total, c.succeeded, c.already_circled, c.pending, c.in_flight, c.failed
                ),
            )
        }
        Err(e) => not_a_ledger(&e.into()),
    });
    let given = match (endpoint, client_id) {
        (Some(endpoint), Some(client_id)) => Gateway::new(endpoint, client_id).ok(),
        _ => None,
    };
    group.push(gateway(ledger::gateway::recorded(&conn), given.as_ref()));
    group
}

fn not_a_ledger(e: &anyhow::Error) -> Check {
    Check::fail_with(
        "state",
        format!("{e:#}"),
        "is it a pms-onboard ledger? set ledger to the right file",
    )
}

/// A scratch file, removed at once, is the one sure test of "can a run create files here"
/// (SQLite needs its -wal and -shm files beside the ledger).
fn folder(path: &Path) -> Check {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match tempfile::Builder::new()
        .prefix(".pms-onboard-doctor-")
        .tempfile_in(&folder)
    {
        Ok(_scratch) => Check::ok("folder", format!("{} is writable", folder.display())),
        Err(e) => Check::fail_with(
            "folder",
            format!("cannot create files in {}: {e}", folder.display()),
            "run from a folder you can write to, or set ledger to a path in one",
        ),
    }
}

/// Which gateway the ledger belongs to, against the one the settings name: another one is what
/// a run refuses.
fn gateway(recorded: rusqlite::Result<Option<Gateway>>, given: Option<&Gateway>) -> Check {
    match (recorded, given) {
        (Err(e), _) => Check::fail_with(
            "gateway",
            format!("cannot read which gateway the ledger belongs to: {e}"),
            "is it a pms-onboard ledger? set ledger to the right file",
        ),
        (Ok(None), Some(given)) => Check::ok(
            "gateway",
            format!("records no gateway yet: the first run records {given}"),
        ),
        (Ok(None), None) => Check::ok(
            "gateway",
            "records no gateway yet: the first run records the one it uses",
        ),
        (Ok(Some(recorded)), Some(given)) if recorded != *given => Check::fail_with(
            "gateway",
            format!(
                "belongs to {recorded}, and these settings name {given}: a run would be refused, \
                 and its rows are not this gateway's"
            ),
            "give this gateway a ledger of its own (--ledger PATH), or correct endpoint and \
             client_id",
        ),
        (Ok(Some(recorded)), Some(_)) => Check::ok(
            "gateway",
            format!("belongs to {recorded}, the gateway these settings name"),
        ),
        (Ok(Some(recorded)), None) => Check::ok(
            "gateway",
            format!("belongs to {recorded} (the settings name no gateway to compare)"),
        ),
    }
}

/// A PostgreSQL ledger: the connection and the server's version, the schema, the clock
/// difference with the server, the runs holding a lease, and the rows by state.
/// Whether the URL's host is this machine (a socket folder, localhost, a loopback address).
fn is_loopback(url: &str) -> bool {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        })
}

fn postgres(url: &str) -> Group {
    let mut group = Group::new("ledger", "ledger");
    let shown = ledger::postgres::redacted(url);
    let c = match ledger::postgres::check(url) {
        Ok(c) => c,
        Err(e) => {
            group.push(Check::fail_with(
                "connection",
                format!("{e:#}"),
                "check that the server runs, and the URL (postgresql://USER@HOST/DATABASE)",
            ));
            group.skip_each(
                &["tls", "schema", "clock", "in use", "state"],
                "no connection",
            );
            return group;
        }
    };
    group.push(Check::ok("connection", format!("{shown}: {}", c.version)));
    group.push(match c.tls {
        (true, true) => Check::ok("tls", "encrypted, the server's certificate checked"),
        (encrypted, false) if is_loopback(url) => Check::ok(
            "tls",
            match encrypted {
                true => "encrypted (the certificate not checked: a server on this machine)",
                false => "not encrypted (a server on this machine)",
            },
        ),
        (encrypted, _) => Check::warn(
            "tls",
            match encrypted {
                true => {
                    "encrypted, but the server's certificate is not checked (sslmode=prefer \
                         or require): a machine between could pose as the server"
                }
                false => {
                    "not encrypted: the ledger's rows and the password cross the network \
                          as they are"
                }
            },
            "add ?sslmode=verify-full to the URL (&sslrootcert=PATH for a root of your own)",
        ),
    });
    let latest = ledger::postgres::migrate::latest();
    group.push(match c.schema == latest {
        true => Check::ok("schema", format!("at version {latest}, this program's")),
        false => Check::fail(
            "schema",
            format!("at version {}, this program's is {latest}", c.schema),
        ),
    });
    // Leases and the shared rate are on the server's clock; the times the ledger records are
    // this host's.
    let (size, ahead) = c.clock;
    let detail = format!(
        "the server's clock is {:.1} s {} this host's",
        size.as_secs_f64(),
        if ahead { "ahead of" } else { "behind" }
    );
    group.push(match size > std::time::Duration::from_secs(5) {
        true => Check::warn(
            "clock",
            format!(
                "{detail}: leases and the rate use the server's clock, but the times this host \
                 records are its own"
            ),
            "set this host's clock (NTP)",
        ),
        false => Check::ok("clock", detail),
    });
    group.push(match c.live.is_empty() {
        true => Check::ok("in use", "no run holds a lease"),
        false => Check::ok(
            "in use",
            format!(
                "{} run(s) hold a lease now (a shared ledger may be used by several): {}",
                c.live.len(),
                c.live
                    .iter()
                    .map(|(id, holder)| format!("run {id} ({holder})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    });
    group.push(match ledger::status(Path::new(url), 1).map(|(s, _)| s) {
        Ok(s) => Check::ok(
            "state",
            format!(
                "{} rows: {} succeeded, {} already circled, {} pending, {} in flight, {} \
                     failed",
                s.total, s.succeeded, s.already_circled, s.pending, s.in_flight, s.failed
            ),
        ),
        Err(e) => Check::fail("state", format!("{e:#}")),
    });
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_this_machine_is_told_from_one_across_a_network() {
        for here in [
            "postgresql://u@localhost/db",
            "postgresql://u@127.0.0.1:5432/db",
            "postgresql://u@[::1]/db",
            "postgresql:///db?host=/var/run/postgresql",
        ] {
            assert!(is_loopback(here), "{here}");
        }
        for there in [
            "postgresql://u@db.example/db",
            "postgresql://u@10.0.0.5/db",
            "postgresql://u@localhost,db.example/db",
        ] {
            assert!(!is_loopback(there), "{there}");
        }
    }
    use crate::api::checks::Level;

    #[test]
    fn the_recorded_gateway_is_shown_and_another_fails() {
        let uat = Gateway::new("https://uat.example", "2102000000000000001").unwrap();
        let prod = Gateway::new("https://open.alipay.hk", "2102000000000000001").unwrap();
        let same = gateway(Ok(Some(uat.clone())), Some(&uat));
        assert_eq!(same.level(), Level::Ok);
        assert!(
            same.found
                .detail
                .contains("https://uat.example:443 with client id 2102000000000000001")
        );
        let other = gateway(Ok(Some(uat.clone())), Some(&prod));
        assert_eq!(other.level(), Level::Fail);
        assert!(other.found.text().contains("--ledger"), "{:?}", other);
        assert_eq!(gateway(Ok(None), Some(&prod)).level(), Level::Ok);
    }
}
