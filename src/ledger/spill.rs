//! The side file: answers the ledger could not take in before a run had to end (the ledger
//! locked by another program until Ctrl-C, a full disk, the file deleted under the run). They are
//! written here, beside the ledger, one JSON object a line, and synced to disk; the next command
//! that opens the ledger takes them in before anything else (`ledger::open`), then removes the
//! file. A label AlipayHK sent is never lost to a ledger that could not be written.
//!
//! Taking in is idempotent: an answer already in the ledger is written again with the same
//! values, so a crash between taking in and removing the file does no harm.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::Answered;
use crate::api::outcome::Attempt;
use crate::input::Row;
use crate::model::RowUpdate;

/// `pms-ledger.db` → `pms-ledger.db.unwritten.jsonl`.
pub fn path_for(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".unwritten.jsonl");
    PathBuf::from(name)
}

/// One answer as the side file keeps it: the row as the attempt sent it (so that it can be
/// taken into a ledger that lacks the row), the attempt as it was recorded, and the row's new
/// state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spilled {
    pub run_id: i64,
    pub attempt_id: i64,
    pub row: Row,
    pub source_file: String,
    pub source_line: u64,
    pub attempt: Attempt,
    pub update: RowUpdate,
}

impl Spilled {
    pub fn new(a: &Answered, source_file: String, source_line: u64) -> Spilled {
        Spilled {
            run_id: a.run_id,
            attempt_id: a.attempt_id,
            row: a.row.clone(),
            source_file,
            source_line,
            attempt: a.attempt.clone(),
            update: a.update.clone(),
        }
    }

    pub fn key(&self) -> String {
        self.row.key()
    }

    /// One line for a person: what the answer said, enough to act on if the file were lost too.
    pub fn describe(&self) -> String {
        let a = &self.attempt;
        let mut s = format!(
            "{} {}",
            self.key(),
            a.result_code.as_deref().unwrap_or(a.outcome.kind())
        );
        if let Some(label) = &a.pms_label {
            s.push_str(&format!(" pmsLabel {label}"));
        }
        if a.verified == Some(false) {
            s.push_str(" (not verified)");
        }
        if let Some(t) = &a.tracer_id {
            s.push_str(&format!(" Tracer-Id {t}"));
        }
        s
    }
}

/// Appends `answers` to the side file and syncs it (and its folder, for a new file) to disk.
pub fn append(path: &Path, answers: &[Spilled]) -> std::io::Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let existed = path.exists();
    let mut text = String::new();
    for a in answers {
        // A struct of strings and numbers always serialises.
        text.push_str(&serde_json::to_string(a).unwrap_or_default());
        text.push('\n');
    }
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    if !existed && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The new file's name is durable only once its folder is synced (best effort).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads the side file. A last line cut short (the process died while writing it) is skipped;
/// any other line that does not parse is an error naming it.
pub fn read(path: &Path) -> anyhow::Result<Vec<Spilled>> {
    use anyhow::Context as _;
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::with_capacity(lines.len());
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(a) => out.push(a),
            Err(_) if i + 1 == last => {}
            Err(e) => anyhow::bail!(
                "{}:{}: not an answer kept by pms-onboard ({e}); move the file aside and tell \
                 whoever runs the tool",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}
