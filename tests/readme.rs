//! The README's examples, checked so that they cannot go stale: its settings table is
//! `config::SETTINGS`, every `pms-onboard …` command line in it parses, the sample run under
//! "Start here" is what the binary prints today, the sample settings file it tells operators to
//! copy holds the defaults, and every `docs/…` file it names exists.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use pms_onboard::cli::Cli;
use pms_onboard::config::{Layers, SETTINGS};

use crate::util::{Scratch, bin, output, together};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn readme() -> String {
    std::fs::read_to_string(repo("README.md")).unwrap()
}

/// A fenced code block: the `## ` section it is in, and its lines.
struct Block {
    section: String,
    lines: Vec<String>,
}

fn code_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut open: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match open.take() {
                Some(lines) => blocks.push(Block {
                    section: section.clone(),
                    lines,
                }),
                None => open = Some(Vec::new()),
            }
        } else if let Some(lines) = open.as_mut() {
            lines.push(line.to_owned());
        } else if let Some(title) = line.strip_prefix("## ") {
            section = title.to_owned();
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

/// The cells of the table whose header line is `header`, row by row.
fn table(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    assert!(lines.next().is_some(), "no table headed {header:?}");
    lines
        .skip(1) // | --- | --- |
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_settings_table_is_config_settings() {
    let rows = table(
        &readme(),
        "| setting | flag, variable | default | meaning |",
    );
    let expected: Vec<Vec<String>> = SETTINGS
        .iter()
        .map(|s| {
            vec![
                format!("`{}`", s.name),
                format!("`{}`, `{}`", s.flag(), s.env_var()),
                s.default.map_or("—".to_owned(), |d| format!("`{d}`")),
                s.help.to_owned(),
            ]
        })
        .collect();
    let rendered: Vec<String> = expected
        .iter()
        .map(|cells| format!("| {} |", cells.join(" | ")))
        .collect();
    assert_eq!(
        rows,
        expected,
        "the README's settings table must list config::SETTINGS in order:\n{}",
        rendered.join("\n")
    );
}

/// Sample values for the placeholders the README writes in capitals.
fn sample_value(placeholder: &str) -> Option<&'static str> {
    Some(match placeholder {
        "FILE" => "stores.csv",
        "DIR" => "keys",
        "PATH" => "out.csv",
        "N" => "5",
        "ID" => "1",
        "STATE" => "failed",
        "NAME" => "Stores",
        "BODY_FILE" => "body.json",
        "ADDR" => "127.0.0.1:8765",
        _ => return None,
    })
}

/// Splits a shell command line into words (quotes removed), up to a redirection or a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '>' | '<' | ';' | '#' | '&') if !in_word || word == "2" => {
                if word == "2" {
                    word.clear();
                    in_word = false;
                }
                break;
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The words a command line gives `pms-onboard` (up to a pipe), placeholders replaced:
/// `FILE...` is a file, `csv|json` is `csv`.
fn as_arguments(line: &str) -> Vec<String> {
    shell_words(line)
        .into_iter()
        .take_while(|w| w != "|")
        .map(|w| {
            let w = w.replace(['[', ']'], "");
            let w = w.trim_end_matches("...").to_owned();
            let w = w.split('|').next().unwrap_or_default().to_owned();
            let placeholder = w.chars().any(|c| c.is_ascii_uppercase())
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if placeholder {
                sample_value(&w)
                    .unwrap_or_else(|| panic!("give the README placeholder {w} a sample value"))
                    .to_owned()
            } else {
                w
            }
        })
        .collect()
}

/// Every `pms-onboard …` command line of the README: in code blocks (a `$ ` prompt, a line
/// continued with `\`, and `cargo run -- …` included) and in inline code.
fn command_lines(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for block in code_blocks(text) {
        let joined = block.lines.join("\n").replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.trim().trim_start_matches("$ ");
            if line.starts_with("pms-onboard ") {
                found.push(line.to_owned());
            } else if line.starts_with("cargo run")
                && let Some((_, args)) = line.split_once(" -- ")
            {
                found.push(format!("pms-onboard {args}"));
            }
        }
    }
    // Inline code in the prose (a span may run over a line break).
    let mut prose = String::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    for (i, span) in prose.split('`').enumerate() {
        let span = span.replace('\n', " ");
        if i % 2 == 1 && span.starts_with("pms-onboard ") {
            found.push(span);
        }
    }
    found
}

#[test]
fn every_command_line_in_the_readme_parses() {
    let lines = command_lines(&readme());
    assert!(lines.len() >= 20, "found only {lines:?}");
    for line in &lines {
        let args = as_arguments(line);
        if let Err(e) = Cli::try_parse_from(&args) {
            use clap::error::ErrorKind;
            if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                panic!("README: `{line}` does not parse as {args:?}:\n{e}");
            }
        }
    }
}

#[test]
fn the_parser_of_command_lines_finds_what_a_shell_would_run() {
    assert_eq!(
        as_arguments(
            r#"pms-onboard --log-format json run master.csv --report "reports/$day.html" >"logs/x.json" 2>"logs/x.jsonl""#
        ),
        [
            "pms-onboard",
            "--log-format",
            "json",
            "run",
            "master.csv",
            "--report",
            "reports/$day.html"
        ]
    );
    assert_eq!(
        as_arguments("pms-onboard export --state STATE --format csv|json   # rows"),
        [
            "pms-onboard",
            "export",
            "--state",
            "failed",
            "--format",
            "csv"
        ]
    );
    assert_eq!(
        as_arguments("pms-onboard reconcile master.csv 2>&1"),
        ["pms-onboard", "reconcile", "master.csv"]
    );
    // A line that does not parse is caught.
    assert!(Cli::try_parse_from(as_arguments("pms-onboard run --no-such-flag FILE")).is_err());
}

/// What varies from one run to the next: the sandbox's port and the run's duration.
fn normalised(line: &str) -> String {
    let mut line = line.to_owned();
    for (prefix, what) in [
        ("127.0.0.1:", "PORT"),
        ("completed in ", "TIME"),
        ("at most ", "N"),
    ] {
        if let Some(at) = line.find(prefix) {
            let start = at + prefix.len();
            let end = line[start..]
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 's'))
                .map_or(line.len(), |n| start + n);
            line.replace_range(start..end, what);
        }
    }
    line
}

/// `pms-onboard run samples/stores.csv --sandbox` run from `dir` (holding a copy of the samples
/// the sandbox reads), with no settings from this environment.
fn run_sample(dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .args(["run", "samples/stores.csv", "--sandbox"])
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("PMS_ONBOARD_") {
            cmd.env_remove(name);
        }
    }
    output(&mut cmd)
}

#[test]
fn the_sample_run_under_start_here_is_what_the_binary_prints() {
    let _turn = together();
    let blocks: Vec<Block> = code_blocks(&readme())
        .into_iter()
        .filter(|b| b.section == "Start here")
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "Start here: the two commands, then the run"
    );
    for command in [
        "cargo run --release -- run samples/stores.csv --sandbox   # the main job, on the built-in sandbox",
        "cargo test                                                 # the tests",
    ] {
        assert!(
            blocks[0].lines.iter().any(|l| l == command),
            "Start here must keep this line exactly: {command}"
        );
    }
    let shown: Vec<String> = blocks[1].lines.iter().map(|l| normalised(l)).collect();

    let s = Scratch::new();
    std::fs::create_dir(s.path("samples")).unwrap();
    for name in ["stores.csv", "malls.csv", "trades.txt"] {
        std::fs::copy(repo("samples").join(name), s.path("samples").join(name)).unwrap();
    }
    let (code, out, err) = run_sample(s.dir.path());
    assert_eq!(code, 3, "the README says exit code 3: {out}\n{err}");
    let stdout: Vec<String> = out.lines().map(normalised).collect();
    // A slow machine may add a progress line or the advice about concurrency.
    let stderr: Vec<String> = err
        .lines()
        .filter(|l| !l.starts_with("progress: ") && !l.starts_with("warning: "))
        .map(normalised)
        .collect();
    // On a terminal the two streams interleave: the summary comes after the rejects, before
    // the last message.
    let matches = (0..=stderr.len()).any(|k| {
        let printed: Vec<&String> = stderr[..k]
            .iter()
            .chain(&stdout)
            .chain(&stderr[k..])
            .collect();
        printed.len() == shown.len() && printed.iter().zip(&shown).all(|(a, b)| *a == b)
    });
    assert!(
        matches,
        "the README's sample run differs from a real one; paste this (port and time vary):\n{}{}",
        err, out
    );
    assert!(
        stderr
            .iter()
            .filter(|l| l.contains("samples/stores.csv:"))
            .count()
            >= 6,
        "the rejects are part of what the README shows: {err}"
    );

    // "Run the same command again: it sends nothing."
    let (_, out, err) = run_sample(s.dir.path());
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["sent", "this", "run", "0"])),
        "{out}\n{err}"
    );
}

#[test]
fn every_docs_file_the_readme_names_exists() {
    let text = readme();
    let mut named = Vec::new();
    for (at, _) in text.match_indices("docs/") {
        let path: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
            .collect();
        named.push(path.trim_end_matches('.').to_owned());
    }
    assert!(
        text.matches("](docs/").count() >= 7,
        "the README links the maintainer's docs"
    );
    for path in &named {
        assert!(
            repo(path).is_file(),
            "README names {path}, which does not exist"
        );
    }
}

#[test]
fn the_sample_settings_file_holds_every_setting_with_its_default() {
    let path = repo("samples/pms-onboard.toml");
    // Read as the tool reads it: an unknown key is refused.
    Layers::resolve(&vec![], Some(&path)).unwrap();
    let file: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    for s in &SETTINGS {
        let value = file
            .get(s.name)
            .unwrap_or_else(|| panic!("samples/pms-onboard.toml lacks `{}`", s.name));
        let value = match value {
            toml::Value::String(v) => v.clone(),
            other => other.to_string(),
        };
        if let Some(default) = s.default {
            assert_eq!(
                value, default,
                "samples/pms-onboard.toml: `{}` is not the default",
                s.name
            );
        }
    }
}
