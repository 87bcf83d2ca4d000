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

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::store::Answered;
use crate::api::outcome::Attempt;
use crate::input::{Row, SaveWay};
use crate::model::RowUpdate;

/// `pms-ledger.db` → `pms-ledger.db.unwritten.jsonl`.
pub fn path_for(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".unwritten.jsonl");
    PathBuf::from(name)
}

/// One answer as the side file keeps it: the row it belongs to (so that it can be taken into a
/// ledger that lacks the row), the attempt as it was recorded, and the row's new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spilled {
    pub run_id: i64,
    pub attempt_id: i64,
    pub key: String,
    pub save_way_type: String,
    pub ipay_trade_no: String,
    pub partner_id: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub store_id: String,
    pub store_name: String,
    pub mall_group_label: String,
    pub mall_label: String,
    pub source_file: String,
    pub source_line: u64,
    pub outcome: String,
    pub maybe_processed: bool,
    pub http_status: Option<u16>,
    pub result_code: Option<String>,
    pub result_status: Option<String>,
    pub result_message: Option<String>,
    pub pms_label: Option<String>,
    pub verified: Option<bool>,
    pub error: Option<String>,
    pub tracer_id: Option<String>,
    /// The raw answer body, base64 (it may not be UTF-8).
    pub response_body: Option<String>,
    pub response_time: Option<String>,
    pub response_signature: Option<String>,
    pub latency_us: u64,
    pub update: RowUpdate,
}

impl Spilled {
    pub fn new(a: &Answered, source_file: String, source_line: u64) -> Spilled {
        let r = &a.row;
        let t = &a.attempt;
        Spilled {
            run_id: a.run_id,
            attempt_id: a.attempt_id,
            key: r.key(),
            save_way_type: r.save_way.as_str().to_owned(),
            ipay_trade_no: r.ipay_trade_no.clone(),
            partner_id: r.partner_id.clone(),
            merchant_id: r.merchant_id.clone(),
            merchant_name: r.merchant_name.clone(),
            store_id: r.store_id.clone(),
            store_name: r.store_name.clone(),
            mall_group_label: r.mall_group_label.clone(),
            mall_label: r.mall_label.clone(),
            source_file,
            source_line,
            outcome: t.outcome.kind().to_owned(),
            maybe_processed: t.outcome.maybe_processed(),
            http_status: t.http_status,
            result_code: t.result_code.clone(),
            result_status: t.result_status.clone(),
            result_message: t.result_message.clone(),
            pms_label: t.pms_label.clone(),
            verified: t.verified,
            error: t.error.clone(),
            tracer_id: t.tracer_id.clone(),
            response_body: t
                .response_body
                .as_ref()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            response_time: t.response_time.clone(),
            response_signature: t.response_signature.clone(),
            latency_us: t.latency.as_micros() as u64,
            update: a.update.clone(),
        }
    }

    pub fn row(&self) -> Row {
        Row {
            save_way: SaveWay::parse(&self.save_way_type).unwrap_or(SaveWay::MerchantPms),
            ipay_trade_no: self.ipay_trade_no.clone(),
            partner_id: self.partner_id.clone(),
            merchant_id: self.merchant_id.clone(),
            merchant_name: self.merchant_name.clone(),
            store_id: self.store_id.clone(),
            store_name: self.store_name.clone(),
            mall_group_label: self.mall_group_label.clone(),
            mall_label: self.mall_label.clone(),
        }
    }

    pub fn body(&self) -> Option<Vec<u8>> {
        self.response_body
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    }

    /// The attempt's fields as the ledger stores them (the outcome is kept as its word).
    pub fn attempt(&self) -> Attempt {
        Attempt {
            http_status: self.http_status,
            result_code: self.result_code.clone(),
            result_status: self.result_status.clone(),
            result_message: self.result_message.clone(),
            pms_label: self.pms_label.clone(),
            verified: self.verified,
            error: self.error.clone(),
            tracer_id: self.tracer_id.clone(),
            response_body: self.body(),
            response_time: self.response_time.clone(),
            response_signature: self.response_signature.clone(),
            latency: std::time::Duration::from_micros(self.latency_us),
            ..Attempt::default()
        }
    }

    /// One line for a person: what the answer said, enough to act on if the file were lost too.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {}",
            self.key,
            self.result_code.as_deref().unwrap_or(&self.outcome)
        );
        if let Some(label) = &self.pms_label {
            s.push_str(&format!(" pmsLabel {label}"));
        }
        if self.verified == Some(false) {
            s.push_str(" (not verified)");
        }
        if let Some(t) = &self.tracer_id {
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
