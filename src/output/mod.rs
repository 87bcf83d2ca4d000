//! Every line a person or a program reads goes through one [`Printer`]: results on stdout
//! (summaries, counts, JSON for cron), messages on stderr (rejects, drift, warnings, progress,
//! errors). It knows the output style: a progress bar on a terminal (cleared before a message is
//! written, so the two never mix), plain lines otherwise, or one JSON object per stderr line with
//! `--log-format json`, so that a cron job's `.jsonl` stays machine-readable.
//!
//! A closed stdout or stderr (`| head`, a log collector that went away) is the end of that
//! stream, not a crash: the write is dropped and the command finishes with its own exit code.
//! Nothing else in the crate writes to stdout or stderr (`print_stdout`/`print_stderr` lints).
//!
//! Text from outside (a header cell, a sheet name, a gateway's message, a result code the ledger
//! holds) never reaches a terminal raw: every text line escapes control characters and
//! bidirectional overrides (`ESC` shown as `\u{1b}`), every JSON line writes them as `\u`
//! escapes, keeping the exact text ([`text`]).

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::input::Reject;

pub mod files;
pub mod logs;
pub mod table;
pub mod text;

pub use files::{Inputs, Output};
pub use table::CsvWriter;

/// How messages are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A terminal: a progress bar, messages above it.
    Bar,
    /// Not a terminal: plain lines.
    Lines,
    /// `--log-format json`: every stderr line is one JSON object.
    Json,
}

/// The one writer of stdout and stderr.
pub struct Printer {
    style: Style,
    /// `--json` (or `--log-format json`): a command's result is one JSON object on stdout.
    json_result: bool,
    bar: Mutex<Option<ProgressBar>>,
    stdout_closed: AtomicBool,
    stderr_closed: AtomicBool,
}

impl Printer {
    /// `json_lines`: `--log-format json`, which also makes the result JSON; otherwise a bar when
    /// stderr is a terminal, lines when not. `json_result`: `--json`.
    pub fn new(json_lines: bool, json_result: bool) -> Printer {
        let style = if json_lines {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        };
        Printer {
            json_result: json_result || json_lines,
            ..Printer::with_style(style)
        }
    }

    pub fn with_style(style: Style) -> Printer {
        Printer {
            style,
            json_result: style == Style::Json,
            bar: Mutex::new(None),
            stdout_closed: AtomicBool::new(false),
            stderr_closed: AtomicBool::new(false),
        }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Whether stderr lines are JSON objects (`--log-format json`).
    pub fn is_json(&self) -> bool {
        self.style == Style::Json
    }

    /// Whether the command's result is one JSON object on stdout (`--json`, or
    /// `--log-format json`), instead of text for a person.
    pub fn json_result(&self) -> bool {
        self.json_result
    }

    /// Results on stdout (the caller ends its lines), control characters escaped: a result
    /// shows text from the sheet, the gateway or the ledger (see [`text`]).
    pub fn out(&self, text: &str) {
        self.write_stdout(&text::terminal(text));
    }

    /// Text the tool made itself (a completion script, a man page), written as it is.
    pub fn out_verbatim(&self, text: &str) {
        self.write_stdout(text);
    }

    fn write_stdout(&self, text: &str) {
        if self.stdout_closed.load(Relaxed) {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            self.stdout_closed.store(true, Relaxed);
        }
    }

    /// One line on stdout.
    pub fn out_line(&self, line: &str) {
        self.out(&format!("{line}\n"));
    }

    /// A JSON value as one line on stdout: the exact text, every control character escaped.
    pub fn out_json(&self, value: &Value) {
        self.write_stdout(&format!("{}\n", text::json_inert(&value.to_string())));
    }

    /// A message for the person: as it is in text, as `{"level":"info","message":…}` in JSON.
    pub fn info(&self, message: &str) {
        self.message("info", None, message, Map::new());
    }

    /// `warning: …` in text.
    pub fn warn(&self, message: &str) {
        self.message("warn", Some("warning: "), message, Map::new());
    }

    /// What opening an input found (unknown columns ignored), one warning each.
    pub fn input_notices(&self, notices: &[crate::input::Notice]) {
        for notice in notices {
            self.warn(&notice.to_string());
        }
    }

    /// `error: …` in text, then one `  caused by: …` line per cause.
    pub fn error(&self, message: &str, causes: &[String]) {
        let mut fields = Map::new();
        if !causes.is_empty() {
            fields.insert("causes".into(), json!(causes));
        }
        let mut text = message.to_owned();
        if self.style != Style::Json {
            for c in causes {
                text.push_str("\n  caused by: ");
                text.push_str(c);
            }
        }
        self.message("error", Some("error: "), &text, fields);
    }

    /// A message with fields of its own (`kind` names what it is), for the JSON style; the text
    /// style shows `text`.
    pub fn event(&self, level: &str, kind: &str, text: &str, fields: Map<String, Value>) {
        let mut fields = fields;
        fields.insert("kind".into(), json!(kind));
        let prefix = match level {
            "warn" if kind == "warning" => Some("warning: "),
            _ => None,
        };
        self.message(level, prefix, text, fields);
    }

    /// A rejected row: `FILE:LINE: column C: REASON`, or the same as a JSON object with each part.
    pub fn reject(&self, r: &Reject) {
        let fields = Map::from_iter([
            ("file".to_owned(), json!(r.file)),
            ("line".to_owned(), json!(r.line)),
            ("column".to_owned(), json!(r.column)),
            ("value".to_owned(), json!(r.value)),
            ("reason".to_owned(), json!(r.reason)),
        ]);
        self.event("warn", "reject", &r.to_string(), fields);
    }

    fn message(
        &self,
        level: &str,
        prefix: Option<&str>,
        text: &str,
        mut fields: Map<String, Value>,
    ) {
        let line = match self.style {
            Style::Json => {
                let mut object = Map::new();
                object.insert("timestamp".into(), json!(crate::ledger::now()));
                object.insert("level".into(), json!(level));
                object.insert("message".into(), json!(text));
                object.append(&mut fields);
                text::json_inert(&Value::Object(object).to_string()).into_owned()
            }
            _ => format!("{}{}", prefix.unwrap_or(""), text::terminal(text)),
        };
        self.err_line(&line);
    }

    /// One line on stderr, above the progress bar when there is one.
    fn err_line(&self, line: &str) {
        if self.stderr_closed.load(Relaxed) {
            return;
        }
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let write = || {
            let mut stderr = std::io::stderr().lock();
            if writeln!(stderr, "{line}").is_err() {
                self.stderr_closed.store(true, Relaxed);
            }
        };
        match bar.as_ref() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Starts the progress bar for `len` rows (only in the bar style).
    pub fn start_bar(&self, len: u64) {
        if self.style != Style::Bar {
            return;
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} rows  {msg}  eta {eta}")
        {
            bar.set_style(style);
        }
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    /// Progress so far: the bar moves, or a line is written (`progress: …`, or a JSON object).
    pub fn progress(&self, done: u64, total: u64, text: &str, fields: Map<String, Value>) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(text::terminal(text).into_owned());
            return;
        }
        let mut fields = fields;
        fields.insert("finished".into(), json!(done));
        fields.insert("to_send".into(), json!(total));
        self.event(
            "info",
            "progress",
            &format!("progress: {done}/{total} rows, {text}"),
            fields,
        );
    }

    /// Clears the bar for good.
    pub fn finish_bar(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// Where bulk data goes (an export's CSV or JSON, reconcile's list, an annotated sheet, the
/// rejects): the file of `-o PATH`, written whole or not at all (see [`files::Output`]), or
/// stdout. A closed stdout shows as a broken pipe, which `main` takes for the end, not an error.
pub enum Sink {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    File(std::io::BufWriter<files::Output>),
}

impl Sink {
    /// Writes are complete: flushed, and a file renamed into place.
    pub fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut w) => Ok(w.flush()?),
            Sink::File(w) => w.into_inner().map_err(|e| e.into_error())?.commit(),
        }
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
        }
    }
}

/// The [`Sink`] of `-o PATH`, or stdout without one.
pub fn sink(path: Option<&std::path::Path>) -> anyhow::Result<Sink> {
    Ok(match path {
        Some(p) => Sink::File(std::io::BufWriter::new(files::Output::create(p)?)),
        None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_stdout_is_remembered_not_fatal() {
        let p = Printer::with_style(Style::Lines);
        p.stdout_closed.store(true, Relaxed);
        // Nothing is written and nothing panics.
        p.out_line("dropped");
        assert!(p.stdout_closed.load(Relaxed));
    }
}
