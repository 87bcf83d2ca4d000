//! The side file: answers the ledger could not take in before a run had to end (the ledger
//! locked by another program until Ctrl-C, a full disk, the file deleted under the run), and
//! copies of those it holds while the ledger stays busy for long. They are written here, beside
//! the ledger, and synced to disk before the writer lets them go; the next command that opens
//! the ledger takes them in before anything else (`ledger::open`), then removes the file. A label
//! AlipayHK sent is never lost to a ledger that could not be written.
//!
//! The file is written exactly when things go wrong (a full disk, a power cut), so each line
//! stands on its own: `{"sha256":"…","answer":{…}}`, the answer's JSON and the SHA-256 of those
//! very bytes. An append starts on a fresh line when the file does not end with one (a line cut
//! short by an earlier failure is never glued to the next answer), and a failed append is cut
//! back. A line that is cut short, damaged or otherwise unreadable is set aside, byte for byte,
//! in `LEDGER.unwritten.jsonl.unreadable` with a warning naming it, and never stops a command;
//! an answer glued to one by an older version is still found. Lines of the first format (the
//! answer alone, no checksum) are read as before.
//!
//! Taking in is idempotent: an answer already in the ledger is written again with the same
//! values, so a crash between taking in and removing the file does no harm.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::filesystem;
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

/// `pms-ledger.db.unwritten.jsonl` → `pms-ledger.db.unwritten.jsonl.unreadable`: the lines of
/// the side file that could not be read, kept for a person.
pub fn aside_path(side_file: &Path) -> PathBuf {
    let mut name = side_file.as_os_str().to_owned();
    name.push(".unreadable");
    PathBuf::from(name)
}

/// How a line of the current format begins, and one of the first (an answer alone).
const CHECKSUMMED: &[u8] = br#"{"sha256":""#;
const UNCHECKED: &[u8] = br#"{"run_id":"#;

/// A line of the side file as it is read: the checksum, and the answer's bytes as written.
#[derive(Deserialize)]
struct Line<'a> {
    sha256: String,
    #[serde(borrow)]
    answer: &'a serde_json::value::RawValue,
}

fn checksum(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// One answer as one line, `\n` included.
fn line_of(answer: &Spilled) -> String {
    // A struct of strings and numbers always serialises.
    let json = serde_json::to_string(answer).unwrap_or_default();
    format!(
        "{{\"sha256\":\"{}\",\"answer\":{json}}}\n",
        checksum(json.as_bytes())
    )
}

/// The answer a whole line holds, its checksum verified (or a line of the first format).
fn parse(line: &[u8]) -> Option<Spilled> {
    if line.starts_with(CHECKSUMMED) {
        let l: Line<'_> = serde_json::from_slice(line).ok()?;
        let bytes = l.answer.get().as_bytes();
        return (checksum(bytes) == l.sha256)
            .then(|| serde_json::from_slice(bytes).ok())
            .flatten();
    }
    serde_json::from_slice(line).ok()
}

/// The answer a line holds, also when an older version glued it to a line cut short before it:
/// the answer, and what before it could not be read.
fn salvage(line: &[u8]) -> (Option<Spilled>, &[u8]) {
    if let Some(a) = parse(line) {
        return (Some(a), &[]);
    }
    // Quotes inside a JSON string are escaped, so a record can only begin where its opening
    // bytes stand unescaped; the checksummed form first (its answer begins like an old line).
    for start in [CHECKSUMMED, UNCHECKED] {
        let found = memchr::memmem::find_iter(line, start)
            .filter(|&at| at > 0)
            .find_map(|at| parse(&line[at..]).map(|a| (a, at)));
        if let Some((a, at)) = found {
            return (Some(a), &line[..at]);
        }
    }
    (None, line)
}

/// What the side file holds.
#[derive(Debug, Default)]
pub struct Contents {
    pub answers: Vec<Spilled>,
    /// The lines (1-based) and bytes that could not be read.
    pub unreadable: Vec<(usize, Vec<u8>)>,
}

/// Calls `each` with every line of `path` (1-based, without its `\n`), blank ones left out.
fn each_line(path: &Path, mut each: impl FnMut(usize, &[u8])) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if !line.iter().all(u8::is_ascii_whitespace) {
            each(number, line);
        }
    }
}

/// Reads the side file, telling its answers from the lines that cannot be read.
pub fn contents(path: &Path) -> std::io::Result<Contents> {
    let mut c = Contents::default();
    each_line(path, |number, line| {
        let (answer, torn) = salvage(line);
        c.answers.extend(answer);
        if !torn.is_empty() {
            c.unreadable.push((number, torn.to_vec()));
        }
    })?;
    Ok(c)
}

/// Reads the side file for taking in. The lines that cannot be read (cut short by a full disk or
/// a power cut while they were written, or damaged since) are set aside in [`aside_path`], with a
/// warning naming it, and do not stop the intake.
pub fn read(path: &Path) -> anyhow::Result<Vec<Spilled>> {
    use anyhow::Context as _;
    let c = contents(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !c.unreadable.is_empty() {
        let aside = aside_path(path);
        set_aside(&aside, c.unreadable.iter().map(|(_, l)| l.as_slice())).with_context(|| {
            format!(
                "{} holds lines that cannot be read, and they cannot be set aside in {}",
                path.display(),
                aside.display()
            )
        })?;
        let numbers: Vec<String> = c.unreadable.iter().map(|(n, _)| n.to_string()).collect();
        tracing::warn!(
            "{} line(s) of {} cannot be read (line {}: cut short by a full disk or a power cut \
             as it was written, or damaged since) and are set aside in {}; the other answers are \
             taken in. A run lets an answer go only once its line is on disk: one whose line was \
             cut was written again, or shown on that run's stderr. Keep {} until `pms-onboard \
             reconcile` shows every row done, then delete it",
            c.unreadable.len(),
            path.display(),
            numbers.join(", "),
            aside.display(),
            aside.display()
        );
    }
    Ok(c.answers)
}

/// Appends lines to the file of lines set aside, each once however often the same side file is
/// read (an intake that stopped before removing it is done again).
fn set_aside<'a>(aside: &Path, lines: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
    let mut known = std::collections::HashSet::new();
    if aside.exists() {
        each_line(aside, |_, l| {
            known.insert(l.to_vec());
        })?;
    }
    let mut text = Vec::new();
    for line in lines.filter(|l| !known.contains(*l)) {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    if text.is_empty() {
        return Ok(());
    }
    append_bytes(aside, &text)
}

/// Appends `answers` to the side file and syncs it (and its folder, for a new file) to disk.
/// Only once this returns `Ok` may the caller let them go.
pub fn append(path: &Path, answers: &[Spilled]) -> std::io::Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let text: String = answers.iter().map(line_of).collect();
    append_bytes(path, text.as_bytes())
}

/// Appends whole lines: on a fresh line when the file does not end with one, cut back to where
/// it was when the write fails (a full disk), then synced.
fn append_bytes(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let existed = path.exists();
    let mut f = filesystem::private()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 {
        f.seek(std::io::SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
    }
    let fresh: &[u8] = if last == [b'\n'] { b"" } else { b"\n" };
    let written = f
        .write_all(fresh)
        .and_then(|()| f.write_all(text))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        // Best effort: a line cut short left behind is set aside when the file is read.
        let _ = f.set_len(len).and_then(|()| f.sync_all());
        return Err(e);
    }
    if !existed {
        sync_folder(path);
    }
    Ok(())
}

/// A new or removed file's name is durable only once its folder is synced (best effort).
fn sync_folder(path: &Path) {
    if let Ok(d) = std::fs::File::open(folder(path)) {
        let _ = d.sync_all();
    }
}

fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Removes the lines of these answers (by run and attempt) from the side file: they were
/// committed after all, and a copy left there would only puzzle whoever finds it. The file goes
/// when nothing else is in it; otherwise the rest is written whole to a new file that replaces
/// it, so that a crash leaves either the old file or the new one.
pub fn remove(path: &Path, committed: &BTreeSet<(i64, i64)>) -> std::io::Result<()> {
    let mut kept = Vec::new();
    each_line(path, |_, line| {
        let done = parse(line).is_some_and(|a| committed.contains(&(a.run_id, a.attempt_id)));
        if !done {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    })?;
    if kept.is_empty() {
        std::fs::remove_file(path)?;
    } else {
        let mut tmp = tempfile::NamedTempFile::new_in(folder(path))?;
        tmp.write_all(&kept)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
    }
    sync_folder(path);
    Ok(())
}

/// An answer as a test hands it to the writer: a success with `label`, for a store with a
/// Chinese name.
#[cfg(test)]
pub(crate) fn sample(attempt_id: i64, label: &str) -> Answered {
    use crate::api::outcome::Outcome;
    let row = Row {
        save_way: crate::input::SaveWay::MerchantPms,
        ipay_trade_no: String::new(),
        partner_id: "2088".into(),
        merchant_id: "M1".into(),
        merchant_name: "測試商戶".into(),
        store_id: format!("S{attempt_id}"),
        store_name: "分店".into(),
        mall_group_label: "1".into(),
        mall_label: "2".into(),
    };
    let attempt = Attempt {
        outcome: Outcome::Success {
            pms_label: label.to_owned(),
        },
        pms_label: Some(label.to_owned()),
        verified: Some(true),
        ..Attempt::default()
    };
    let update = RowUpdate {
        state: crate::model::State::Succeeded,
        failure: None,
        ambiguous: false,
        maybe_sent: false,
        pms_label: Some(label.to_owned()),
        label_unverified: false,
        answer_unverified: Some(false),
        result_code: Some("SUCCESS".into()),
        result_message: None,
        tracer_id: None,
    };
    Answered {
        run_id: 1,
        attempt_id,
        row_id: super::RowId(attempt_id),
        row,
        attempt,
        update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(attempt_id: i64, label: &str) -> Spilled {
        Spilled::new(&sample(attempt_id, label), "s.csv".into(), 2)
    }

    fn labels(answers: &[Spilled]) -> Vec<String> {
        answers
            .iter()
            .map(|a| a.attempt.pms_label.clone().unwrap_or_default())
            .collect()
    }

    /// Leaves a line cut short at the end of the side file.
    fn append_torn(path: &Path) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(br#"{"sha256":"cut"#)
            .unwrap();
    }

    /// The side file as bytes, and its path, in a fresh folder.
    fn side_file(dir: &tempfile::TempDir, bytes: &[u8]) -> PathBuf {
        let path = path_for(&dir.path().join("l.db"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn each_line_carries_its_checksum_and_a_changed_byte_sets_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("l.db"));
        append(&path, &[answer(1, "2026111111"), answer(2, "2026222222")]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"sha256":""#), "{text}");
        assert_eq!(labels(&read(&path).unwrap()), ["2026111111", "2026222222"]);
        // A label changed on disk no longer matches its checksum: set aside, never believed.
        std::fs::write(&path, text.replacen("2026111111", "2026111112", 1)).unwrap();
        assert_eq!(labels(&read(&path).unwrap()), ["2026222222"]);
        let aside = std::fs::read_to_string(aside_path(&path)).unwrap();
        assert!(aside.contains("2026111112"), "{aside}");
    }

    #[test]
    fn a_line_cut_inside_a_chinese_name_is_set_aside_once_and_blocks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let whole = line_of(&answer(1, "2026111111"));
        let torn = line_of(&answer(2, "2026222222"));
        // Cut after the first two of the three bytes of 測.
        let cut = torn.find('測').unwrap() + 2;
        let mut bytes = whole.into_bytes();
        bytes.extend_from_slice(&torn.as_bytes()[..cut]);
        let path = side_file(&dir, &bytes);
        assert_eq!(labels(&read(&path).unwrap()), ["2026111111"]);
        assert_eq!(labels(&read(&path).unwrap()), ["2026111111"]);
        let aside = std::fs::read(aside_path(&path)).unwrap();
        let mut expected = torn.as_bytes()[..cut].to_vec();
        expected.push(b'\n');
        assert_eq!(aside, expected, "kept byte for byte, once");
    }

    #[test]
    fn an_append_after_a_line_cut_short_starts_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let torn = line_of(&answer(1, "2026111111"));
        let path = side_file(&dir, &torn.as_bytes()[..torn.len() / 2]);
        append(&path, &[answer(2, "2026222222")]).unwrap();
        let c = contents(&path).unwrap();
        assert_eq!(labels(&c.answers), ["2026222222"]);
        assert_eq!(c.unreadable.len(), 1);
        assert_eq!(c.unreadable[0].0, 1);
    }

    #[test]
    fn the_first_format_is_read_and_an_answer_an_older_version_glued_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let old = |a: &Spilled| serde_json::to_string(a).unwrap();
        let first = old(&answer(1, "2026111111"));
        let second = old(&answer(2, "2026222222"));
        let third = line_of(&answer(3, "2026333333"));
        // The old writer glued an answer to a line cut short; then a checksummed line was glued.
        let text = format!(
            "{first}\n{}{second}\n{}{third}",
            &first[..first.len() - 9],
            &third[..40]
        );
        let path = side_file(&dir, text.as_bytes());
        let c = contents(&path).unwrap();
        assert_eq!(
            labels(&c.answers),
            ["2026111111", "2026222222", "2026333333"]
        );
        assert_eq!(c.unreadable.len(), 2);
        assert_eq!(c.unreadable[0].1, &first.as_bytes()[..first.len() - 9]);
        assert_eq!(c.unreadable[1].1, &third.as_bytes()[..40]);
    }

    #[test]
    fn committed_answers_leave_the_file_and_it_goes_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("l.db"));
        append(&path, &[answer(1, "2026111111"), answer(2, "2026222222")]).unwrap();
        append_torn(&path);
        remove(&path, &BTreeSet::from([(1, 1)])).unwrap();
        let c = contents(&path).unwrap();
        assert_eq!(labels(&c.answers), ["2026222222"]);
        assert_eq!(
            c.unreadable.len(),
            1,
            "an unreadable line stays for the intake"
        );
        std::fs::write(&path, line_of(&answer(2, "2026222222"))).unwrap();
        remove(&path, &BTreeSet::from([(1, 2)])).unwrap();
        assert!(!path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_side_file_and_the_lines_set_aside_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("l.db"));
        append(&path, &[answer(1, "2026111111")]).unwrap();
        append_torn(&path);
        read(&path).unwrap();
        for p in [path.clone(), aside_path(&path)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}
