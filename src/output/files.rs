//! The files a command writes (`-o`, `--rejects`, `--report`, `export --annotate`'s output):
//! never one of the files it reads, and never half-written.
//!
//! - [`Inputs`] holds every file a command reads: the sheets, the ledger and the files beside it
//!   (`-wal`, `-shm`, the side file and the lines set aside from it). An output that is one of
//!   them is refused before anything is written, naming both. "The same file" is judged by file
//!   identity (device and inode on Unix, so a hard link or a path through `../` or a symlink is
//!   caught), and, for a file that does not exist yet, by its resolved folder and name.
//! - [`Output`] writes to a temporary file in the target's folder, readable by its owner only
//!   (what the tool writes holds merchant ids and labels), and renames it into place once it is
//!   complete: an interrupted write leaves the old file, or none.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A file as the filesystem knows it: its device and inode. `None` where there is no such
/// number (Windows, where `file_index` is not stable Rust yet): the resolved path decides alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(path).ok().map(|m| FileId(m.dev(), m.ino()))
    }

    #[cfg(not(unix))]
    fn of(_path: &Path) -> Option<FileId> {
        None
    }
}

/// Where `path` leads: the file itself when it exists, otherwise its resolved folder joined with
/// its name (a symlink to a file not yet there leads to where the link points).
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = fs::canonicalize(path) {
        return Some(p);
    }
    let mut path = path.to_path_buf();
    // A dangling symlink (or a chain of them, bounded as the kernel bounds it).
    for _ in 0..40 {
        let Ok(target) = fs::read_link(&path) else {
            break;
        };
        path = path.parent().unwrap_or(Path::new("")).join(target);
    }
    let name = path.file_name()?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(fs::canonicalize(folder).ok()?.join(name))
}

/// One file a command reads.
#[derive(Debug)]
struct Input {
    /// What it is, for the message: "the sheet", "the ledger", "the ledger's -wal file".
    role: String,
    /// One of the ledger's files (else a sheet).
    ledger: bool,
    path: PathBuf,
    id: Option<FileId>,
    resolved: Option<PathBuf>,
}

impl Input {
    fn new(role: String, ledger: bool, path: &Path) -> Input {
        Input {
            role,
            ledger,
            path: path.to_owned(),
            id: FileId::of(path),
            resolved: resolve(path),
        }
    }

    fn is(&self, id: Option<FileId>, resolved: Option<&Path>) -> bool {
        (id.is_some() && id == self.id)
            || (resolved.is_some() && resolved == self.resolved.as_deref())
    }
}

/// Every file a command reads; see the module header.
#[derive(Debug, Default)]
pub struct Inputs {
    files: Vec<Input>,
}

impl Inputs {
    pub fn new() -> Inputs {
        Inputs::default()
    }

    /// The sheets read.
    pub fn sheets(mut self, files: &[PathBuf]) -> Inputs {
        for f in files {
            self.files
                .push(Input::new("the sheet".to_owned(), false, f));
        }
        self
    }

    /// Another file the command reads (`role`: "the settings file", "the private key"), when
    /// there is one.
    pub fn file(mut self, role: &str, path: Option<&Path>) -> Inputs {
        if let Some(path) = path {
            self.files.push(Input::new(role.to_owned(), false, path));
        }
        self
    }

    /// The settings file read: `--config`, or `pms-onboard.toml` when present.
    pub fn settings(self, config: Option<&Path>) -> Inputs {
        let default = Path::new(crate::config::DEFAULT_CONFIG_FILE);
        let config = config.or_else(|| default.exists().then_some(default));
        self.file("the settings file", config)
    }

    /// The sheet `export --annotate` reads.
    pub fn annotated(mut self, sheet: Option<&Path>) -> Inputs {
        if let Some(sheet) = sheet {
            let csv = sheet
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("txt"));
            let role = if csv { "the sheet" } else { "the workbook" };
            self.files
                .push(Input::new(format!("{role} being annotated"), false, sheet));
        }
        self
    }

    /// The ledger and every file beside it that belongs to it, whether it exists yet or not.
    pub fn ledger(mut self, ledger: &Path) -> Inputs {
        for f in crate::ledger::filesystem::files_of(ledger) {
            let role = if f == ledger {
                "the ledger".to_owned()
            } else {
                // What the file's name adds to the ledger's: `-wal`, `.unwritten.jsonl`, …
                let name = f.to_string_lossy();
                let suffix = name
                    .strip_prefix(&*ledger.to_string_lossy())
                    .unwrap_or(&name);
                format!("the ledger's {} file", suffix.trim_start_matches('.'))
            };
            self.files.push(Input::new(role, true, &f));
        }
        self
    }

    /// Refuses `output` (given with `flag`) when it is one of the inputs, naming both.
    pub fn check(&self, flag: &str, output: &Path) -> anyhow::Result<()> {
        let id = FileId::of(output);
        let resolved = resolve(output);
        if let Some(input) = self.files.iter().find(|i| i.is(id, resolved.as_deref())) {
            let what = if input.ledger {
                "every label the ledger holds would be lost, and the next run would send every row again"
            } else if input.role.contains("sheet") || input.role.contains("workbook") {
                "the sheet would be lost"
            } else {
                "it would be lost"
            };
            bail!(
                "{flag} {}: that is {} {}, which this command reads; writing there would \
                 destroy it ({what}). Nothing was written: name another file for {flag}",
                output.display(),
                input.role,
                input.path.display()
            );
        }
        Ok(())
    }
}

/// A file being written: a temporary file beside its target until [`Output::commit`] renames it
/// into place. Dropped without a commit, the temporary file is removed and the target is as it
/// was.
pub struct Output {
    inner: Inner,
    /// The path as the user gave it, for messages.
    shown: PathBuf,
}

enum Inner {
    Temporary {
        file: tempfile::NamedTempFile,
        target: PathBuf,
    },
    /// An existing file that is not a regular one (`/dev/null`, a named pipe): written in place,
    /// since renaming over it would replace the device or the pipe.
    Special(File),
}

impl Output {
    /// Starts writing `path` (through a symlink, to where it points).
    pub fn create(path: &Path) -> anyhow::Result<Output> {
        let cannot = || format!("cannot write {}", path.display());
        if let Ok(meta) = fs::metadata(path)
            && !meta.is_file()
        {
            if meta.is_dir() {
                bail!(
                    "cannot write {}: it is a folder; name a file in it",
                    path.display()
                );
            }
            let file = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(cannot)?;
            return Ok(Output {
                inner: Inner::Special(file),
                shown: path.to_owned(),
            });
        }
        let target = resolve(path)
            .with_context(|| format!("{}: its folder does not exist", path.display()))
            .with_context(cannot)?;
        let folder = target.parent().unwrap_or(Path::new("."));
        let mut prefix = OsString::from(".");
        prefix.push(target.file_name().unwrap_or_default());
        prefix.push(".");
        // 0600 on Unix: tempfile creates its files readable by their owner only.
        let file = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".partial")
            .tempfile_in(folder)
            .with_context(cannot)?;
        Ok(Output {
            inner: Inner::Temporary { file, target },
            shown: path.to_owned(),
        })
    }

    /// Makes the file complete: synced, then renamed over the target.
    pub fn commit(self) -> anyhow::Result<()> {
        let shown = self.shown;
        let cannot = || format!("cannot write {}", shown.display());
        match self.inner {
            Inner::Special(mut f) => f.flush().with_context(cannot),
            Inner::Temporary { mut file, target } => {
                file.flush().with_context(cannot)?;
                file.as_file().sync_all().with_context(cannot)?;
                file.persist(&target)
                    .map_err(|e| e.error)
                    .with_context(cannot)?;
                Ok(())
            }
        }
    }

    fn file(&mut self) -> &mut File {
        match &mut self.inner {
            Inner::Temporary { file, .. } => file.as_file_mut(),
            Inner::Special(f) => f,
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Seek for Output {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file().seek(pos)
    }
}

/// Writes `bytes` to `path` whole (see [`Output`]).
pub fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = Output::create(path)?;
    out.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_through_dotdot_a_symlink_or_a_hard_link_is_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let sheet = dir.path().join("s.csv");
        fs::write(&sheet, "a\n").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let inputs = Inputs::new().sheets(std::slice::from_ref(&sheet));
        let dotdot = dir.path().join("sub/../s.csv");
        let hard = dir.path().join("hard.csv");
        fs::hard_link(&sheet, &hard).unwrap();
        let mut same = vec![sheet.clone(), dotdot, hard];
        #[cfg(unix)]
        {
            let soft = dir.path().join("soft.csv");
            std::os::unix::fs::symlink(&sheet, &soft).unwrap();
            same.push(soft);
        }
        for same in &same {
            let e = inputs.check("-o", same).unwrap_err().to_string();
            assert!(e.contains("the sheet") && e.contains("s.csv"), "{e}");
        }
        inputs.check("-o", &dir.path().join("other.csv")).unwrap();
    }

    #[test]
    fn a_file_of_the_ledger_not_there_yet_is_still_the_ledgers() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let inputs = Inputs::new().ledger(&ledger);
        let e = inputs
            .check("--report", &dir.path().join("l.db-wal"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the ledger's -wal file"), "{e}");
        let e = inputs
            .check("--report", &dir.path().join("./l.db"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is the ledger") || e.contains("the ledger"),
            "{e}"
        );
    }

    #[test]
    fn an_output_dropped_before_its_commit_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        fs::write(&path, "old").unwrap();
        let mut out = Output::create(&path).unwrap();
        out.write_all(b"new, but never finished").unwrap();
        drop(out);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        write_whole(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
