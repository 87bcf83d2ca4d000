//! Answers that reach a PostgreSQL ledger late: those a run could not commit (the side file), and
//! those kept unverified that verify now. Both go through the claim's fence for a late answer
//! ([`super::claim::Fence`]): the row takes the answer while its attempt holds the claim or no
//! run holds it; otherwise the attempt keeps it (and a label the row lacks is put on it).
//!
//! The side file of a SQLite ledger lies beside the file; a PostgreSQL ledger has no "beside",
//! and several runs (on this host too) may write to one. So each run that cannot commit writes a
//! file of its own, named from the URL (no password) and its run id, in this user's state folder
//! on this host ([`state_dir`]): `…/pms-onboard/<user@host_port_db>-<hash>-run<id>.unwritten.jsonl`,
//! in the format of `ledger::spill` (checksummed lines, synced before the answer is let go). The
//! next command on this host that opens the ledger takes in the files of runs that are over (a
//! run still live may still be writing its own), then removes them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::Digest as _;
use tokio_postgres::GenericClient;

use super::claim;
use crate::ledger::RowId;
use crate::ledger::TakenIn;
use crate::ledger::spill::{self, Spilled};
use crate::ledger::store::{Answered, KeptAnswer};

/// The folder side files of PostgreSQL ledgers go to: `PMS_ONBOARD_STATE_DIR`, else
/// `$XDG_STATE_HOME/pms-onboard`, else `~/.local/state/pms-onboard`, else the current folder.
pub fn state_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("PMS_ONBOARD_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(state) = var("XDG_STATE_HOME") {
        return Path::new(&state).join("pms-onboard");
    }
    match var("HOME") {
        Some(home) => Path::new(&home).join(".local/state/pms-onboard"),
        None => PathBuf::from("."),
    }
}

/// What names a ledger in its side files: `user@host_port_db`, made of safe characters, and a
/// hash of the whole of it (so that two URLs that read alike never share a file).
fn ledger_name(url: &str) -> String {
    let (user, hosts, port, db) = match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
            (
                c.get_user().unwrap_or("").to_owned(),
                hosts.join(","),
                ports.join(","),
                c.get_dbname().unwrap_or("").to_owned(),
            )
        }
        Err(_) => Default::default(),
    };
    let whole = format!("{user}@{hosts}:{port}/{db}");
    let safe: String = format!("{user}@{hosts}_{port}_{db}")
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' | '@' => c,
            _ => '_',
        })
        .take(80)
        .collect();
    let hash = hex::encode(&sha2::Sha256::digest(whole.as_bytes())[..4]);
    format!("{safe}-{hash}")
}

/// Run `run_id`'s side file for the ledger at `url`, in `dir`.
pub fn side_file(dir: &Path, url: &str, run_id: i64) -> PathBuf {
    dir.join(format!("{}-run{run_id}.unwritten.jsonl", ledger_name(url)))
}

/// The side files of the ledger at `url` in `dir`, with the run that wrote each.
fn side_files(dir: &Path, url: &str) -> Vec<(i64, PathBuf)> {
    let prefix = format!("{}-run", ledger_name(url));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(i64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let run = name
                .strip_prefix(&prefix)?
                .strip_suffix(".unwritten.jsonl")?
                .parse()
                .ok()?;
            Some((run, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Writes `answered` to run `run_id`'s side file, synced: only once this returns `Ok` may the
/// answer be let go. The folder is made (private) when missing.
pub fn spill(path: &Path, answered: &Answered) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    spill::append(path, &[Spilled::new(answered, String::new(), 0)])
}

/// Takes in the side files in `dir` of runs on the ledger that are over (a live run's file is
/// left to it): each answer through the fence of a late answer, one transaction a file, then the
/// file removed. An answer whose attempt this ledger does not hold (was the database replaced?)
/// stays in its file, with a warning. `None` when nothing was taken in.
pub async fn take_in(
    client: &mut tokio_postgres::Client,
    url: &str,
    dir: &Path,
) -> anyhow::Result<Option<TakenIn>> {
    let mut taken: Option<TakenIn> = None;
    for (run_id, path) in side_files(dir, url) {
        if is_live(client, run_id).await? {
            continue;
        }
        let name = path.display().to_string();
        let answers = spill::read(&path)?;
        let tx = client.transaction().await?;
        let mut done = BTreeSet::new();
        for s in &answers {
            let Some(row_id) = attempt_row(&tx, s).await? else {
                continue;
            };
            let a = Answered {
                run_id: s.run_id,
                attempt_id: s.attempt_id,
                row_id,
                row: s.row.clone(),
                attempt: s.attempt.clone(),
                update: s.update.clone(),
            };
            claim::record_in(&tx, &a)
                .await
                .with_context(|| format!("cannot take in the answers kept in {name}"))?;
            done.insert((s.run_id, s.attempt_id));
        }
        tx.commit()
            .await
            .with_context(|| format!("cannot take in the answers kept in {name}"))?;
        let strangers = answers.len() - done.len();
        if strangers > 0 {
            tracing::warn!(
                "{strangers} answer(s) in {name} are of attempts this PostgreSQL ledger does not \
                 hold (was the database replaced?); they stay in that file: keep it until \
                 `pms-onboard reconcile` shows every row done"
            );
        }
        match spill::remove(&path, &done) {
            Ok(()) => {}
            // Another command on this host took it in at the same moment (taking in is
            // idempotent).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "took in {name}, but cannot remove it: remove it by hand"
                )));
            }
        }
        let t = taken.get_or_insert(TakenIn {
            answers: 0,
            from: path.clone(),
        });
        t.answers += done.len();
        if t.from != path {
            t.from = dir.to_owned();
        }
    }
    Ok(taken.filter(|t| t.answers > 0))
}

/// [`take_in`] for a command that reads the ledger, from any thread, before it reads: nothing
/// (not even a connection) when this host holds no side file of the ledger.
pub fn take_in_before_reading(url: &str) -> anyhow::Result<Option<TakenIn>> {
    let dir = state_dir();
    if side_files(&dir, url).is_empty() {
        return Ok(None);
    }
    super::on_own_runtime("taking in a side file failed", || async move {
        let mut pg = super::PgLedger::open(url).await?;
        take_in(pg.client_mut(), url, &dir).await
    })
}

/// Whether run `run_id` still holds a live lease (its side file may still grow).
async fn is_live(client: &impl GenericClient, run_id: i64) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1 AND outcome = 'running'
                 AND lease_until > now())",
            &[&run_id],
        )
        .await?
        .get(0))
}

/// The row of the side file's attempt, when this ledger holds that attempt for that row.
async fn attempt_row(client: &impl GenericClient, s: &Spilled) -> anyhow::Result<Option<RowId>> {
    Ok(client
        .query_opt(
            "SELECT r.id FROM attempts a JOIN rows r ON r.key = a.key
             WHERE a.id = $1 AND a.key = $2 AND a.run_id = $3",
            &[&s.attempt_id, &s.key(), &s.run_id],
        )
        .await?
        .map(|r| RowId(r.get(0))))
}

/// The answers kept because their signature did not verify, for rows that are not done and no
/// run holds: what `run` verifies again with its key before sending anything (as
/// `store::kept_unverified` reads them from SQLite).
pub async fn kept_unverified(client: &impl GenericClient) -> anyhow::Result<Vec<KeptAnswer>> {
    let rows = client
        .query(
            &format!(
                "SELECT a.id, a.run_id, r.id, a.response_body, a.response_time,
                     a.response_signature, r.maybe_sent, {}
                 FROM attempts a JOIN rows r ON r.key = a.key
                 WHERE a.verified = false AND a.response_body IS NOT NULL
                   AND r.state NOT IN ('succeeded', 'already_circled') AND r.claim_run IS NULL
                 ORDER BY a.id",
                super::runs::PAYLOAD
                    .split(", ")
                    .map(|c| format!("r.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| KeptAnswer {
            attempt_id: r.get(0),
            run_id: r.get(1),
            row_id: RowId(r.get(2)),
            body: r.get(3),
            response_time: r.get(4),
            response_signature: r.get(5),
            maybe_sent: r.get(6),
            row: super::runs::payload(r, 7),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_file_is_named_from_the_url_without_its_password_and_its_run() {
        let dir = Path::new("/state");
        let a = side_file(dir, "postgresql://ops:secret@db.example:5433/pms", 7);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("ops@db.example_5433_pms-"), "{name}");
        assert!(name.ends_with("-run7.unwritten.jsonl"), "{name}");
        assert!(!name.contains("secret"), "{name}");
        // Another database, or one whose name only reads alike, has files of its own.
        let b = side_file(dir, "postgresql://ops@db.example:5433/pms_", 7);
        let c = side_file(dir, "postgresql://ops@db.example:5433/pms%2F", 7);
        assert_ne!(a, b);
        assert_ne!(b, c);
        // The password is not part of what names the ledger.
        assert_eq!(a, side_file(dir, "postgresql://ops@db.example:5433/pms", 7));
    }

    #[test]
    fn the_side_files_of_a_ledger_are_found_with_their_runs_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let url = "postgresql://ops@localhost/pms";
        for (u, run) in [(url, 3), (url, 12), ("postgresql://ops@localhost/other", 4)] {
            std::fs::write(side_file(dir.path(), u, run), b"").unwrap();
        }
        std::fs::write(dir.path().join("unrelated.jsonl"), b"").unwrap();
        let found: Vec<i64> = side_files(dir.path(), url).iter().map(|f| f.0).collect();
        assert_eq!(found, vec![3, 12]);
    }
}
