//! Files that lie about their size (issue 18 item 1): a workbook whose shared-strings table
//! declares 10^11 entries, a zip bomb, an `.xls` with a far cell or a DIMENSIONS record of four
//! billion rows, a CSV quote never closed and a record past 1 MiB. Each is made here, byte by
//! byte where no writer would make it, and refused by `validate`, `run`, `reconcile` and
//! `export --annotate` with exit 1 and a message naming the file and what to do, the process
//! staying under 200 MiB (its peak resident memory, from `wait4`).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{CLIENT_ID, SandboxProcess, Scratch, bin, together};

const HEADER: &str = "save_way_type,ipay_trade_no,partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label";

/// Exit code, stderr and peak resident memory (KiB) of `cmd`.
///
/// The peak is the child's own `ru_maxrss` from `wait4`. A child spawned by this test process
/// starts with this process's pages counted (Linux records the old address space's peak at
/// `exec`, and `vfork` shares it), so the command is spawned by a fresh copy of this test binary
/// running [`peak_probe`], a few MiB large.
fn measured(cmd: &mut Command) -> (i32, String, u64) {
    let spec = serde_json::json!({
        "program": cmd.get_program().to_string_lossy(),
        "args": cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "envs": cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
            .collect::<Vec<_>>(),
        "dir": cmd.get_current_dir().map(|d| d.to_string_lossy().into_owned()),
    });
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "hostile_input::peak_probe",
            "--exact",
            "--test-threads=1",
            "-q",
        ])
        .env(PROBE_SPEC, spec.to_string())
        .env(PROBE_OUT, out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the probe failed");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap();
    (
        report["code"].as_i64().unwrap() as i32,
        report["stderr"].as_str().unwrap().to_string(),
        report["maxrss_kib"].as_u64().unwrap(),
    )
}

const PROBE_SPEC: &str = "HOSTILE_INPUT_PROBE_SPEC";
const PROBE_OUT: &str = "HOSTILE_INPUT_PROBE_OUT";

/// Not a test of its own: run by [`measured`] in a fresh test process, it spawns the command
/// described in its environment and writes its exit code, stderr and peak memory. Run by the
/// suite, it does nothing.
#[test]
// The child is waited for with `wait4`, which gives its own resource usage.
#[allow(clippy::zombie_processes)]
fn peak_probe() {
    let (Ok(spec), Ok(out)) = (std::env::var(PROBE_SPEC), std::env::var(PROBE_OUT)) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let mut cmd = Command::new(spec["program"].as_str().unwrap());
    for a in spec["args"].as_array().unwrap() {
        cmd.arg(a.as_str().unwrap());
    }
    for kv in spec["envs"].as_array().unwrap() {
        cmd.env(kv[0].as_str().unwrap(), kv[1].as_str().unwrap());
    }
    if let Some(dir) = spec["dir"].as_str() {
        cmd.current_dir(dir);
    }
    cmd.env_remove(PROBE_SPEC).env_remove(PROBE_OUT);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for this child only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: pid is our own child, not yet waited for.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let report = serde_json::json!({
        "code": code,
        "stderr": err,
        "maxrss_kib": usage.ru_maxrss,
    });
    std::fs::write(out, report.to_string()).unwrap();
}

// ---- zip, written by hand (a zip writer would not declare what it does not hold) ----

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn gf2_times(mat: &[u32; 32], mut vec: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn gf2_square(mat: &[u32; 32]) -> [u32; 32] {
    let mut out = [0; 32];
    for (n, o) in out.iter_mut().enumerate() {
        *o = gf2_times(mat, mat[n]);
    }
    out
}

/// zlib's `crc32_combine`: the CRC of A then B from theirs and B's length.
fn crc32_combine(mut crc1: u32, crc2: u32, mut len2: u64) -> u32 {
    let mut odd = [0u32; 32];
    odd[0] = 0xEDB8_8320;
    let mut row = 1;
    for o in odd.iter_mut().skip(1) {
        *o = row;
        row <<= 1;
    }
    let mut even = gf2_square(&odd);
    odd = gf2_square(&even);
    loop {
        even = gf2_square(&odd);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        odd = gf2_square(&even);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

/// One part of a zip: its name, its bytes as stored, how (0 stored, 8 deflated), its CRC and
/// the size it declares once inflated.
struct Part {
    name: String,
    data: Vec<u8>,
    method: u16,
    crc: u32,
    size: u64,
}

impl Part {
    fn stored(name: &str, data: Vec<u8>) -> Part {
        Part {
            name: name.to_string(),
            crc: crc32(&data),
            size: data.len() as u64,
            data,
            method: 0,
        }
    }
}

fn write_zip(path: &Path, parts: &[Part]) {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for p in parts {
        let offset = out.len() as u32;
        let size = u32::try_from(p.size).unwrap();
        let fields = |sig: u32, buf: &mut Vec<u8>, central: bool| {
            buf.extend(sig.to_le_bytes());
            if central {
                buf.extend(20u16.to_le_bytes()); // made by
            }
            buf.extend(20u16.to_le_bytes()); // needed
            buf.extend(0u16.to_le_bytes()); // flags
            buf.extend(p.method.to_le_bytes());
            buf.extend([0, 0, 0x21, 0]); // time, date (1980-01-01)
            buf.extend(p.crc.to_le_bytes());
            buf.extend((p.data.len() as u32).to_le_bytes());
            buf.extend(size.to_le_bytes());
            buf.extend((p.name.len() as u16).to_le_bytes());
            buf.extend(0u16.to_le_bytes()); // extra
            if central {
                buf.extend([0; 6]); // comment, disk, internal attributes
                buf.extend(0u32.to_le_bytes()); // external attributes
                buf.extend(offset.to_le_bytes());
            }
            buf.extend(p.name.as_bytes());
        };
        fields(0x0403_4b50, &mut out, false);
        out.extend(&p.data);
        fields(0x0201_4b50, &mut central, true);
    }
    let at = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0; 4]);
    out.extend((parts.len() as u16).to_le_bytes());
    out.extend((parts.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(at.to_le_bytes());
    out.extend([0; 2]);
    std::fs::write(path, out).unwrap();
}

/// The parts of a real workbook with a header and one row, written by rust_xlsxwriter, as
/// they are stored (inflated).
fn honest_parts(dir: &Path) -> Vec<Part> {
    let path = dir.join("honest.xlsx");
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet().set_name("Stores").unwrap();
    let row = "MERCHANT_PMS,,2088001,M1,Merchant,S1,Store,100,200";
    for (r, line) in [HEADER, row].iter().enumerate() {
        for (c, cell) in line.split(',').enumerate() {
            ws.write_string(r as u32, c as u16, cell).unwrap();
        }
    }
    wb.save(&path).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            Part::stored(&f.name().unwrap(), data)
        })
        .collect()
}

/// The workbook with its shared-strings part replaced.
fn with_shared_strings(dir: &Path, name: &str, sst: Part) -> PathBuf {
    let mut parts = honest_parts(dir);
    let at = parts
        .iter()
        .position(|p| p.name == "xl/sharedStrings.xml")
        .unwrap();
    parts[at] = sst;
    let path = dir.join(name);
    write_zip(&path, &parts);
    path
}

/// A 2 KB workbook whose shared strings declare 99,999,999,999 entries.
fn forged_count(dir: &Path) -> PathBuf {
    let parts = honest_parts(dir);
    let sst = parts
        .iter()
        .find(|p| p.name == "xl/sharedStrings.xml")
        .unwrap();
    let text = String::from_utf8(sst.data.clone()).unwrap();
    let start = text.find("uniqueCount=\"").unwrap() + "uniqueCount=\"".len();
    let end = start + text[start..].find('"').unwrap();
    let forged = format!("{}99999999999{}", &text[..start], &text[end..]);
    with_shared_strings(
        dir,
        "forged_count.xlsx",
        Part::stored("xl/sharedStrings.xml", forged.into_bytes()),
    )
}

/// The workbook with its sheet's XML changed by `edit`.
fn with_sheet(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let mut parts = honest_parts(dir);
    let at = parts
        .iter()
        .position(|p| p.name == "xl/worksheets/sheet1.xml")
        .unwrap();
    let xml = edit(std::str::from_utf8(&parts[at].data).unwrap());
    assert_ne!(xml.as_bytes(), parts[at].data, "{name}: nothing changed");
    parts[at] = Part::stored("xl/worksheets/sheet1.xml", xml.into_bytes());
    let path = dir.join(name);
    write_zip(&path, &parts);
    path
}

/// A 2 KB sheet that declares the whole grid as its range.
fn forged_dimension(dir: &Path) -> PathBuf {
    with_sheet(dir, "forged_dimension.xlsx", |xml| {
        xml.replace(
            "<dimension ref=\"A1:I2\"/>",
            "<dimension ref=\"A1:XFD1048576\"/>",
        )
    })
}

/// A sheet with a cell one column past Excel's last (XFE).
fn cell_past_the_grid(dir: &Path) -> PathBuf {
    with_sheet(dir, "cell_past_the_grid.xlsx", |xml| {
        xml.replace("r=\"I2\"", "r=\"XFE2\"")
    })
}

/// Bits written LSB first, as deflate packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u32, bits: u32) {
        let reversed = code.reverse_bits() >> (32 - bits);
        self.put(reversed, bits);
    }

    /// A literal byte in deflate's fixed Huffman code.
    fn literal(&mut self, b: u8) {
        if b < 144 {
            self.code(0x30 + u32::from(b), 8);
        } else {
            self.code(0x190 + u32::from(b) - 144, 9);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.code(0, 7); // end of block
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A zip bomb: a shared-strings part of 1 GiB (179 million `<si/>`) deflated into 7 MB, by
/// hand: the pattern once, then copies of 258 bytes at distance 6.
fn zip_bomb(dir: &Path) -> PathBuf {
    let head = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<sst xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\">";
    let pattern = b"<si/> ";
    let tail = b"</sst>";
    let copies: u64 = (1 << 30) / 258;
    let mut bits = Bits::default();
    bits.put(1, 1); // final block
    bits.put(1, 2); // fixed Huffman codes
    for &b in head.iter().chain(pattern) {
        bits.literal(b);
    }
    for _ in 0..copies {
        bits.code(0xC5, 8); // length 258 (code 285)
        bits.code(4, 5); // distance 5-6 (code 4), one extra bit
        bits.put(1, 1); // distance 6
    }
    for &b in tail {
        bits.literal(b);
    }
    let data = bits.finish();
    let repeated = pattern.len() as u64 + copies * 258;
    // The CRC of the pattern repeated, by doubling.
    let mut crc_rep = crc32(pattern);
    let mut len_rep = pattern.len() as u64;
    let mut crc_all = crc32(head);
    let mut left = repeated / pattern.len() as u64;
    while left > 0 {
        if left & 1 != 0 {
            crc_all = crc32_combine(crc_all, crc_rep, len_rep);
        }
        crc_rep = crc32_combine(crc_rep, crc_rep, len_rep);
        len_rep *= 2;
        left >>= 1;
    }
    crc_all = crc32_combine(crc_all, crc32(tail), tail.len() as u64);
    let size = head.len() as u64 + repeated + tail.len() as u64;
    assert!(
        size >= 1 << 30 && data.len() < 8 << 20,
        "{size} {}",
        data.len()
    );
    with_shared_strings(
        dir,
        "zip_bomb.xlsx",
        Part {
            name: "xl/sharedStrings.xml".to_string(),
            data,
            method: 8,
            crc: crc_all,
            size,
        },
    )
}

// ---- .xls, written by hand: a compound file holding one BIFF8 workbook stream ----

fn record(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    out.extend(typ.to_le_bytes());
    out.extend((data.len() as u16).to_le_bytes());
    out.extend(data);
}

fn number(row: u16, col: u16, v: f64) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(row.to_le_bytes());
    d.extend(col.to_le_bytes());
    d.extend(0u16.to_le_bytes());
    d.extend(v.to_le_bytes());
    d
}

/// A workbook stream: globals naming one sheet "Stores", then the sheet's records.
fn biff(sheet: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let bof = |dt: u16| {
        let mut d = vec![0x00, 0x06];
        d.extend(dt.to_le_bytes());
        d.extend([0; 12]);
        d
    };
    let name = b"Stores";
    let bound = |pos: u32| {
        let mut d = pos.to_le_bytes().to_vec();
        d.extend([0, 0, name.len() as u8, 0]);
        d.extend(name);
        d
    };
    let mut globals = Vec::new();
    record(&mut globals, 0x0809, &bof(0x0005));
    let at = globals.len();
    record(&mut globals, 0x0085, &bound(0));
    record(&mut globals, 0x000A, &[]);
    let pos = globals.len() as u32;
    globals.splice(at + 4..at + 8, pos.to_le_bytes());
    record(&mut globals, 0x0809, &bof(0x0010));
    for (typ, data) in sheet {
        record(&mut globals, *typ, data);
    }
    record(&mut globals, 0x000A, &[]);
    // Past the mini-stream cutoff, so the stream lives in regular sectors.
    while globals.len() < 4096 {
        record(&mut globals, 0x0000, &[0; 60]);
    }
    globals
}

/// A compound file (512-byte sectors) holding `stream` as `Workbook`.
fn compound_file(path: &Path, stream: &[u8]) {
    let sectors = stream.len().div_ceil(512);
    let mut header = vec![0u8; 512];
    header[..8].copy_from_slice(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1");
    header[24..26].copy_from_slice(&0x3Eu16.to_le_bytes());
    header[26..28].copy_from_slice(&3u16.to_le_bytes());
    header[28..30].copy_from_slice(&0xFFFEu16.to_le_bytes());
    header[30..32].copy_from_slice(&9u16.to_le_bytes());
    header[32..34].copy_from_slice(&6u16.to_le_bytes());
    header[44..48].copy_from_slice(&1u32.to_le_bytes()); // FAT sectors
    header[48..52].copy_from_slice(&1u32.to_le_bytes()); // directory at sector 1
    header[56..60].copy_from_slice(&4096u32.to_le_bytes());
    header[60..64].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    header[68..72].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    for i in 0..109 {
        let v: u32 = if i == 0 { 0 } else { 0xFFFF_FFFF };
        header[76 + i * 4..80 + i * 4].copy_from_slice(&v.to_le_bytes());
    }
    let mut fat: Vec<u32> = vec![0xFFFF_FFFD, 0xFFFF_FFFE];
    for i in 0..sectors {
        fat.push(if i + 1 == sectors {
            0xFFFF_FFFE
        } else {
            (i + 3) as u32
        });
    }
    fat.resize(128, 0xFFFF_FFFF);
    let entry = |name: &str, typ: u8, start: u32, size: u32| {
        let mut e = vec![0u8; 128];
        let units: Vec<u16> = name.encode_utf16().chain([0]).collect();
        for (i, u) in units.iter().enumerate() {
            e[i * 2..i * 2 + 2].copy_from_slice(&u.to_le_bytes());
        }
        e[64..66].copy_from_slice(&((units.len() * 2) as u16).to_le_bytes());
        e[66] = typ;
        e[68..80].copy_from_slice(&[0xFF; 12]);
        e[116..120].copy_from_slice(&start.to_le_bytes());
        e[120..124].copy_from_slice(&size.to_le_bytes());
        e
    };
    let mut dir = entry("Root Entry", 5, 0xFFFF_FFFE, 0);
    dir[76..80].copy_from_slice(&1u32.to_le_bytes());
    dir.extend(entry("Workbook", 2, 2, stream.len() as u32));
    dir.resize(512, 0);
    let mut out = header;
    out.extend(fat.iter().flat_map(|v| v.to_le_bytes()));
    out.extend(dir);
    out.extend(stream);
    out.resize(512 * (3 + sectors), 0);
    std::fs::write(path, out).unwrap();
}

/// An `.xls` with one number at A1 and one at IV65536: laid out whole, 16.7 million cells.
fn far_cell(dir: &Path) -> PathBuf {
    let path = dir.join("far_cell.xls");
    compound_file(
        &path,
        &biff(&[
            (0x0203, number(0, 0, 1.0)),
            (0x0203, number(65_535, 255, 2.0)),
        ]),
    );
    path
}

/// An `.xls` whose DIMENSIONS record declares rows 1 to 4,294,967,295.
fn huge_dimensions(dir: &Path) -> PathBuf {
    let path = dir.join("huge_dimensions.xls");
    let mut d = Vec::new();
    d.extend(0u32.to_le_bytes());
    d.extend(u32::MAX.to_le_bytes());
    d.extend(0u16.to_le_bytes());
    d.extend(9u16.to_le_bytes());
    d.extend(0u16.to_le_bytes());
    compound_file(&path, &biff(&[(0x0200, d), (0x0203, number(0, 0, 1.0))]));
    path
}

/// An OpenDocument sheet of 2 KB whose one row, a number repeated across 16,384 columns,
/// repeats a million times: 17 billion cells as calamine lays it out.
fn repeated_cells(dir: &Path) -> PathBuf {
    let path = dir.join("repeated_cells.ods");
    let header: String = HEADER
        .split(',')
        .map(|h| {
            format!(
                "<table:table-cell office:value-type=\"string\"><text:p>{h}</text:p></table:table-cell>"
            )
        })
        .collect();
    let content = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><office:document-content \
         xmlns:office=\"urn:oasis:names:tc:opendocument:xmlns:office:1.0\" \
         xmlns:table=\"urn:oasis:names:tc:opendocument:xmlns:table:1.0\" \
         xmlns:text=\"urn:oasis:names:tc:opendocument:xmlns:text:1.0\" office:version=\"1.2\">\
         <office:body><office:spreadsheet><table:table table:name=\"Stores\">\
         <table:table-row>{header}</table:table-row>\
         <table:table-row table:number-rows-repeated=\"1000000\"><table:table-cell \
         table:number-columns-repeated=\"16384\" office:value-type=\"float\" \
         office:value=\"1\"><text:p>1</text:p></table:table-cell></table:table-row>\
         </table:table></office:spreadsheet></office:body></office:document-content>"
    );
    let manifest = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><manifest:manifest \
         xmlns:manifest=\"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0\"><manifest:file-entry \
         manifest:full-path=\"/\" manifest:media-type=\"application/vnd.oasis.opendocument.spreadsheet\"/>\
         <manifest:file-entry manifest:full-path=\"content.xml\" manifest:media-type=\"text/xml\"/>\
         </manifest:manifest>";
    write_zip(
        &path,
        &[
            Part::stored(
                "mimetype",
                b"application/vnd.oasis.opendocument.spreadsheet".to_vec(),
            ),
            Part::stored("content.xml", content.into_bytes()),
            Part::stored("META-INF/manifest.xml", manifest.as_bytes().to_vec()),
        ],
    );
    path
}

/// A CSV whose quote on line 3 never closes, then 3 MB of rows.
fn open_quote(dir: &Path) -> PathBuf {
    let path = dir.join("open_quote.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "{HEADER}").unwrap();
    writeln!(f, "MERCHANT_PMS,,2088001,M1,Merchant,S1,Store,100,200").unwrap();
    writeln!(f, "MERCHANT_PMS,,2088001,M1,\"Merchant,S2,Store,100,200").unwrap();
    for i in 0..50_000 {
        writeln!(f, "MERCHANT_PMS,,2088001,M1,Merchant,S{i},Store,100,200").unwrap();
    }
    path
}

/// A CSV whose fourth line is 2 MiB long.
fn long_record(dir: &Path) -> PathBuf {
    let path = dir.join("long_record.csv");
    let mut body = format!("{HEADER}\nMERCHANT_PMS,,2088001,M1,Merchant,S1,Store,100,200\n\n");
    body.push_str("MERCHANT_PMS,,2088001,M1,");
    body.push_str(&"x".repeat(2 << 20));
    body.push_str(",S2,Store,100,200\n");
    std::fs::write(&path, body).unwrap();
    path
}

/// Each lying file, and what its refusal says.
fn lying_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (
            forged_count(dir),
            "declare 99999999999 distinct texts, but the part's",
        ),
        (zip_bomb(dir), "xl/sharedStrings.xml declares 1024.0 MiB"),
        (
            forged_dimension(dir),
            "[Stores]: the sheet declares the range A1:XFD1048576 (17179869184 cells), more than",
        ),
        (
            cell_past_the_grid(dir),
            "the sheet holds a cell at XFE2, beyond Excel's last cell XFD1048576",
        ),
        (
            far_cell(dir),
            "sheet \"Stores\" holds cells from A1 to IV65536",
        ),
        (
            huge_dimensions(dir),
            "sheet \"Stores\" declares the range A1:I4294967295",
        ),
        (
            repeated_cells(dir),
            "OpenDocument sheets with their repeated cells) would take about",
        ),
        (
            open_quote(dir),
            "open_quote.csv:3: a quote opened at line 3, column 26 is not closed within 1 MiB",
        ),
        (
            long_record(dir),
            "long_record.csv:4: the record starting on this line is longer than 1 MiB",
        ),
    ]
}

/// 200 MiB, in the KiB `ru_maxrss` counts.
const CEILING_KIB: u64 = 200 * 1024;

#[test]
fn lying_files_are_refused_by_validate_within_200_mib() {
    let _turn = together();
    let dir = tempfile::tempdir().unwrap();
    for (file, says) in lying_files(dir.path()) {
        let (code, err, peak) = measured(Command::new(bin()).arg("validate").arg(&file));
        let name = file.file_name().unwrap().to_string_lossy();
        assert_eq!(code, 1, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        assert!(err.contains(&*name), "{name}: {err}");
        assert!(peak < CEILING_KIB, "{name}: peak {peak} KiB");
        if file.extension().is_some_and(|e| e != "csv") {
            assert!(
                err.contains("open it in Excel and save it again")
                    || err.contains("save it as .xlsx"),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn lying_files_are_refused_by_run_reconcile_and_annotate() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    // A ledger to reconcile and annotate against.
    let stores = s.sheet("stores.csv", 1, 2);
    let (code, _, err) = measured(
        s.run_cmd(&sandbox.endpoint, &[&stores])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{err}");
    let requests = || sandbox.stats()["requests"].as_u64().unwrap();
    let before = requests();
    for (file, says) in lying_files(s.dir.path()) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let nightly = |args: &[&str]| {
            let mut cmd = Command::new(bin());
            cmd.current_dir(s.dir.path())
                .args(args)
                .arg(&file)
                .arg("--ledger")
                .arg(s.ledger())
                .env("PMS_ONBOARD_ENDPOINT", &sandbox.endpoint)
                .env("PMS_ONBOARD_CLIENT_ID", CLIENT_ID);
            cmd
        };
        let annotated = s.path("annotated.xlsx");
        let commands: Vec<(&str, Command)> = vec![
            ("run", s.run_cmd(&sandbox.endpoint, &[&file])),
            ("reconcile", nightly(&["reconcile"])),
            (
                "export --annotate",
                nightly(&["export", "-o", annotated.to_str().unwrap(), "--annotate"]),
            ),
        ];
        for (what, mut cmd) in commands {
            if what == "export --annotate" && file.extension().is_some_and(|e| e == "csv") {
                continue;
            }
            let (code, err, peak) = measured(&mut cmd);
            assert_eq!(code, 1, "{what} {name}: {err}");
            assert!(err.contains(says), "{what} {name}: {err}");
            assert!(peak < CEILING_KIB, "{what} {name}: peak {peak} KiB");
        }
    }
    assert_eq!(requests(), before, "nothing is sent from a lying file");
}

#[test]
fn honest_workbooks_built_the_same_way_are_read() {
    let _turn = together();
    let dir = tempfile::tempdir().unwrap();
    // The same writer of zips and of compound files, with honest sizes.
    let honest = dir.path().join("honest_by_hand.xlsx");
    write_zip(&honest, &honest_parts(dir.path()));
    let xls = dir.path().join("honest_by_hand.xls");
    compound_file(
        &xls,
        &biff(&[(0x0203, number(0, 0, 1.0)), (0x0203, number(3, 2, 2.0))]),
    );
    let (code, err, _) = measured(Command::new(bin()).arg("validate").arg(&honest));
    assert_eq!(code, 0, "{err}");
    // Numbers only: no header, but read (no refusal of its sizes).
    let (code, err, _) = measured(Command::new(bin()).arg("validate").arg(&xls));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no row names the column(s)"), "{err}");
}
