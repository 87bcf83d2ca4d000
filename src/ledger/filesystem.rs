//! Where a ledger may live, and who may read it.
//!
//! - **Not on a network or FUSE filesystem** ([`remote`]). There SQLite's write-ahead log does
//!   not work (its `-shm` index is memory shared between the processes that open the file, which
//!   a network filesystem cannot share), and `flock`, the one-writer lock, is emulated with POSIX
//!   locks, which then meet SQLite's own on the same file: one releases the other, and two runs
//!   may both believe they hold the ledger. Linux says what holds a path in `statfs`'s `f_type`,
//!   macOS in `f_fstypename` and `MNT_LOCAL`, Windows by a UNC path or a drive whose type is
//!   remote. A run refuses such a ledger before anything is sent (`lock`); reading commands warn.
//! - **Readable by its owner only.** It holds merchant ids and pmsLabels: the ledger, and so the
//!   `-wal` and `-shm` SQLite makes beside it (they take the database file's mode), the side file
//!   and the lines set aside from it are created 0600 ([`private`], [`create_private`]);
//!   [`readable_by_others`] says when an older one is not.
//!
//! A test hook fakes the filesystem: with `PMS_ONBOARD_TEST_FILESYSTEM=NAME` (a type as Linux's
//! mount table or macOS's `f_fstypename` names it: `nfs`, `cifs`, `fuse.sshfs`, `smbfs`, or a
//! local one such as `ext4`) every ledger is taken to be on that filesystem, so that the refusal
//! is tested on any machine. It can only make the tool refuse more, never less.

use std::path::{Path, PathBuf};

/// The test hook (see the module header).
pub const TEST_HOOK: &str = "PMS_ONBOARD_TEST_FILESYSTEM";

/// What to do instead, for every message about a remote ledger.
pub const WAY_OUT: &str = "keep the ledger on a local disk of the machine that runs pms-onboard \
     (--ledger PATH, PMS_ONBOARD_LEDGER or `ledger` in the config file, and move the ledger's \
     files there); for a ledger a team shares across machines, use a PostgreSQL ledger (`ledger = \
     \"postgresql://USER@HOST/DB\"`)";

/// A filesystem a ledger must not live on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// What it is, for a person: `NFS`, `SMB/CIFS`, `FUSE (sshfs)`, `a network share (UNC path)`.
    pub kind: String,
}

impl Remote {
    /// The warning of a command that only reads the ledger.
    pub fn when_reading(&self, ledger: &Path) -> String {
        format!(
            "the ledger {} is on a network or FUSE filesystem ({}): it is read as it is, but a \
             run refuses it, and answers an earlier run left beside it are taken in only from a \
             local disk; {WAY_OUT}",
            ledger.display(),
            self.kind
        )
    }
}

/// A network or FUSE filesystem, with its network kind, a family of names and the magic numbers
/// Linux's `statfs` gives it.
struct Kind {
    label: &'static str,
    magic: &'static [u32],
    names: &'static [&'static str],
}

/// Filesystems whose locks or shared memory SQLite cannot rely on. FUSE is one entry whatever
/// serves it (sshfs, rclone, s3fs, GlusterFS, bindfs, ntfs-3g…): the program decides what locks
/// mean there.
const REMOTE: &[Kind] = &[
    Kind {
        label: "NFS",
        magic: &[0x6969],
        names: &["nfs", "nfs4"],
    },
    Kind {
        label: "SMB/CIFS",
        magic: &[0x517B, 0xFF53_4D42, 0xFE53_4D42],
        names: &["smbfs", "cifs", "smb2", "smb3"],
    },
    Kind {
        label: "FUSE",
        magic: &[0x6573_5546],
        names: &["fuse", "fuseblk", "macfuse", "osxfuse", "fusefs", "fuse-t"],
    },
    Kind {
        label: "AFS",
        magic: &[0x5346_414F, 0x6B41_4653],
        names: &["afs", "openafs"],
    },
    Kind {
        label: "Ceph",
        magic: &[0x00C3_6400],
        names: &["ceph"],
    },
    Kind {
        label: "9P (also WSL's Windows drives)",
        magic: &[0x0102_1997],
        names: &["9p", "drvfs"],
    },
    Kind {
        label: "Coda",
        magic: &[0x7375_7245],
        names: &["coda"],
    },
    Kind {
        label: "NetWare (NCP)",
        magic: &[0x564C],
        names: &["ncpfs"],
    },
    Kind {
        label: "Lustre",
        magic: &[0x0BD0_0BD0],
        names: &["lustre"],
    },
    Kind {
        label: "GPFS",
        magic: &[0x4750_4653],
        names: &["gpfs"],
    },
    Kind {
        label: "GFS2",
        magic: &[0x0116_1970],
        names: &["gfs2"],
    },
    Kind {
        label: "OCFS2",
        magic: &[0x7461_636F],
        names: &["ocfs2"],
    },
    Kind {
        label: "BeeGFS",
        magic: &[0x1983_0326],
        names: &["beegfs"],
    },
    Kind {
        label: "OrangeFS",
        magic: &[0x2003_0528],
        names: &["pvfs2", "orangefs"],
    },
    Kind {
        label: "GlusterFS",
        magic: &[],
        names: &["glusterfs"],
    },
    Kind {
        label: "VirtualBox shared folder",
        magic: &[0x786F_4256],
        names: &["vboxsf"],
    },
    Kind {
        label: "VMware shared folder",
        magic: &[0xBACB_ACBC],
        names: &["vmhgfs"],
    },
    Kind {
        label: "AFP",
        magic: &[],
        names: &["afpfs"],
    },
    Kind {
        label: "WebDAV",
        magic: &[],
        names: &["webdav", "davfs"],
    },
];

/// The network or FUSE filesystem that holds `path` (or, for a file not there yet, its folder);
/// `None` on a local disk, or when it cannot be told.
pub fn remote(path: &Path) -> Option<Remote> {
    if let Some(name) = std::env::var_os(TEST_HOOK).filter(|v| !v.is_empty()) {
        return by_name(&name.to_string_lossy());
    }
    detect(&nearest_existing(path)?)
}

/// `path` if it exists, or the nearest folder above it that does (what a new file would be on).
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    absolute
        .ancestors()
        .find(|p| p.exists())
        .map(Path::to_owned)
}

/// A filesystem by the name a mount table gives it (`nfs4`, `fuse.sshfs`, macOS's `smbfs`).
fn by_name(name: &str) -> Option<Remote> {
    let lower = name.trim().to_ascii_lowercase();
    // Linux names a FUSE mount `fuse.PROGRAM` (or `fuseblk`); the program is worth naming.
    if let Some(program) = lower.strip_prefix("fuse.") {
        return Some(Remote {
            kind: format!("FUSE ({program})"),
        });
    }
    let kind = REMOTE.iter().find(|k| k.names.contains(&lower.as_str()))?;
    Some(Remote {
        kind: kind.label.to_owned(),
    })
}

/// A filesystem by Linux's `statfs` magic number.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn by_magic(magic: u32) -> Option<&'static Kind> {
    REMOTE.iter().find(|k| k.magic.contains(&magic))
}

/// What the kernel says of the filesystem that holds `path`.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn statfs(path: &Path) -> Option<libc::statfs> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed `statfs` is a valid out-buffer, and `c_path` is a NUL-terminated string
    // that outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st)
}

#[cfg(target_os = "linux")]
fn detect(path: &Path) -> Option<Remote> {
    let st = statfs(path)?;
    // `f_type`'s width differs between targets; the magic numbers are its low 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let kind = by_magic(st.f_type as u32)?;
    // The mount table says which program serves a FUSE mount (`fuse.sshfs`).
    let named = (kind.label == "FUSE")
        .then(|| mount_type(path))
        .flatten()
        .and_then(|t| by_name(&t));
    Some(named.unwrap_or(Remote {
        kind: kind.label.to_owned(),
    }))
}

/// The type the mount table gives the mount that holds `path` (the longest mount point above it).
#[cfg(target_os = "linux")]
fn mount_type(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - TYPE SOURCE SUPER_OPTIONS
            let (head, tail) = line.split_once(" - ")?;
            let point = unescape_mount_point(head.split(' ').nth(4)?);
            let kind = tail.split(' ').next()?;
            path.starts_with(&point)
                .then(|| (point.as_os_str().len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// The mount table writes a space, a tab, a newline and a backslash in octal (`\040`).
#[cfg(target_os = "linux")]
fn unescape_mount_point(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(target_os = "macos")]
fn detect(path: &Path) -> Option<Remote> {
    let st = statfs(path)?;
    let name: Vec<u8> = st
        .f_fstypename
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let name = String::from_utf8_lossy(&name).into_owned();
    let local = st.f_flags & (libc::MNT_LOCAL as u32) != 0;
    // A FUSE mount may call itself local; a filesystem that is not local is refused by any name.
    by_name(&name).or_else(|| {
        (!local).then(|| Remote {
            kind: format!("{name} (not a local disk)"),
        })
    })
}

#[cfg(windows)]
fn detect(path: &Path) -> Option<Remote> {
    let text = path.to_string_lossy();
    if is_unc(&text) {
        return Some(Remote {
            kind: "a network share (UNC path)".to_owned(),
        });
    }
    let letter = text
        .strip_prefix(r"\\?\")
        .unwrap_or(&text)
        .chars()
        .next()
        .filter(char::is_ascii_alphabetic)?;
    /// `GetDriveTypeW`'s answer for a network drive.
    const DRIVE_REMOTE: u32 = 4;
    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn GetDriveTypeW(root: *const u16) -> u32;
    }
    let root: Vec<u16> = format!("{letter}:\\").encode_utf16().chain([0]).collect();
    // SAFETY: `root` is a NUL-terminated UTF-16 string that outlives the call.
    let kind = unsafe { GetDriveTypeW(root.as_ptr()) };
    (kind == DRIVE_REMOTE).then(|| Remote {
        kind: format!("the mapped network drive {letter}:"),
    })
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn detect(_path: &Path) -> Option<Remote> {
    None
}

/// A UNC path (`\\server\share\…`, `\\?\UNC\server\share\…`) names a share on another machine.
#[cfg_attr(not(windows), allow(dead_code))]
fn is_unc(path: &str) -> bool {
    let path = path.replace('/', "\\");
    match path
        .strip_prefix(r"\\?\")
        .or_else(|| path.strip_prefix(r"\\.\"))
    {
        Some(rest) => rest
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(r"UNC\")),
        None => path.starts_with(r"\\"),
    }
}

/// Options that create a file readable by its owner only (the mode applies when it is created).
pub fn private() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

/// Creates `path` empty and readable by its owner only, unless it exists.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    match private().write(true).create_new(true).open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The files of a ledger that may exist: itself, SQLite's `-wal` and `-shm`, the side file and
/// the lines set aside from it.
pub fn files_of(ledger: &Path) -> Vec<PathBuf> {
    let beside = |suffix: &str| {
        let mut name = ledger.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let side = super::spill::path_for(ledger);
    vec![
        ledger.to_owned(),
        beside("-wal"),
        beside("-shm"),
        super::spill::aside_path(&side),
        side,
    ]
}

/// For `doctor`: the files of the ledger that other users of this machine may read or write,
/// and what to run; `None` when there are none (or on a system without Unix modes).
pub fn readable_by_others(ledger: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let open: Vec<(PathBuf, u32)> = files_of(ledger)
            .into_iter()
            .filter_map(|p| {
                let mode = std::fs::metadata(&p).ok()?.permissions().mode() & 0o777;
                (mode & 0o077 != 0).then_some((p, mode))
            })
            .collect();
        if open.is_empty() {
            return None;
        }
        let shown: Vec<String> = open
            .iter()
            .map(|(p, mode)| format!("{} (mode {mode:o})", p.display()))
            .collect();
        let names: Vec<String> = open.iter().map(|(p, _)| p.display().to_string()).collect();
        Some(format!(
            "other users of this machine can read {}: a ledger holds merchant ids and pmsLabels; \
             run: chmod 600 {}",
            shown.join(", "),
            names.join(" ")
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = files_of(ledger);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_magic_numbers_are_told_apart() {
        assert_eq!(by_name("nfs4").unwrap().kind, "NFS");
        assert_eq!(by_name("cifs").unwrap().kind, "SMB/CIFS");
        assert_eq!(by_name("smbfs").unwrap().kind, "SMB/CIFS");
        assert_eq!(by_name("fuse.sshfs").unwrap().kind, "FUSE (sshfs)");
        assert_eq!(by_name("macfuse").unwrap().kind, "FUSE");
        for local in [
            "ext4", "xfs", "btrfs", "apfs", "hfs", "tmpfs", "overlay", "zfs", "",
        ] {
            assert_eq!(by_name(local), None, "{local}");
        }
        assert_eq!(by_magic(0x6969).unwrap().label, "NFS");
        assert_eq!(by_magic(0xFE53_4D42).unwrap().label, "SMB/CIFS");
        assert_eq!(by_magic(0x6573_5546).unwrap().label, "FUSE");
        // ext4, tmpfs, overlayfs, btrfs, xfs
        for local in [0xEF53, 0x0102_1994, 0x794C_7630, 0x9123_683E, 0x5846_5342] {
            assert!(by_magic(local).is_none(), "{local:x}");
        }
    }

    #[test]
    fn unc_paths_are_network_shares() {
        assert!(is_unc(r"\\server\share\pms-ledger.db"));
        assert!(is_unc("//server/share/pms-ledger.db"));
        assert!(is_unc(r"\\?\UNC\server\share\pms-ledger.db"));
        assert!(!is_unc(r"\\?\C:\work\pms-ledger.db"));
        assert!(!is_unc(r"C:\work\pms-ledger.db"));
        assert!(!is_unc("/home/ops/pms-ledger.db"));
        assert!(!is_unc(r"\\?\é"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_mount_table_is_unescaped_and_this_disk_is_local() {
        assert_eq!(
            unescape_mount_point(r"/mnt/a\040share\134x"),
            PathBuf::from(r"/mnt/a share\x")
        );
        assert_eq!(unescape_mount_point(r"/a\04"), PathBuf::from(r"/a\04"));
        assert!(mount_type(Path::new("/")).is_some());
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os(TEST_HOOK).is_none() {
            assert_eq!(remote(&dir.path().join("not-yet/l.db")), None);
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_created_private_and_older_ones_found_open() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        create_private(&ledger).unwrap();
        create_private(&ledger).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ledger), 0o600);
        assert_eq!(readable_by_others(&ledger), None);
        let wal = dir.path().join("l.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        let said = readable_by_others(&ledger).unwrap();
        assert!(said.contains("l.db-wal (mode 644)"), "{said}");
        assert!(said.contains("chmod 600"), "{said}");
        assert!(!said.contains("l.db (mode"), "{said}");
    }
}
