//! Character encodings of the input files, and the byte stream the CSV parser reads.
//!
//! UTF-8 is read as raw bytes so that invalid UTF-8 is detected (and refused) rather than
//! silently replaced; legacy exports (`--encoding big5|gbk|utf-16`) are decoded to UTF-8 first.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::str::FromStr;

use encoding_rs_io::DecodeReaderBytesBuilder;

/// The encoding of an input file (`--encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Big5,
    Gbk,
    /// UTF-16 with a byte-order mark (either order); little-endian without one.
    Utf16,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Big5 => "big5",
            Encoding::Gbk => "gbk",
            Encoding::Utf16 => "utf-16",
        }
    }

    fn legacy(self) -> Option<&'static encoding_rs::Encoding> {
        match self {
            Encoding::Utf8 => None,
            Encoding::Big5 => Some(encoding_rs::BIG5),
            Encoding::Gbk => Some(encoding_rs::GBK),
            Encoding::Utf16 => Some(encoding_rs::UTF_16LE),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of an unknown `--encoding` value; its message lists the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding {0:?}: use utf-8, big5, gbk or utf-16")]
pub struct UnknownEncoding(pub String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "big5" => Ok(Encoding::Big5),
            "gbk" => Ok(Encoding::Gbk),
            "utf-16" | "utf16" => Ok(Encoding::Utf16),
            _ => Err(UnknownEncoding(s.to_string())),
        }
    }
}

/// Opens `file` as a stream of UTF-8 bytes (or, for `Utf8`, of bytes that should be UTF-8),
/// without its byte-order mark, always ending with a line feed (see `reader::record_line`).
///
/// A UTF-16 byte-order mark is honoured whatever the encoding asked for: Excel's "Unicode Text"
/// export is UTF-16, and no UTF-8 or Big5 file starts with those bytes.
pub(crate) fn open_stream(file: File, encoding: Encoding) -> io::Result<Box<dyn Read + Send>> {
    let stream = decoded(file, encoding)?;
    Ok(Box::new(stream.chain(&b"\n"[..])))
}

fn decoded(file: File, encoding: Encoding) -> io::Result<Box<dyn Read + Send>> {
    let mut file = file;
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = head[..n].to_vec();
    let utf16_bom = head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]);
    let utf8_bom = head.starts_with(&[0xEF, 0xBB, 0xBF]);
    let rest = io::Cursor::new(head).chain(file);
    let legacy = if utf16_bom {
        Some(encoding_rs::UTF_16LE)
    } else {
        encoding.legacy()
    };
    match legacy {
        // A byte-order mark overrides the encoding given (it is the surer sign) and is dropped.
        Some(enc) => Ok(Box::new(
            DecodeReaderBytesBuilder::new()
                .encoding(Some(enc))
                .bom_override(true)
                .strip_bom(true)
                .build(rest),
        )),
        None => {
            let mut rest = rest;
            if utf8_bom {
                io::copy(&mut (&mut rest).take(3), &mut io::sink())?;
            }
            Ok(Box::new(rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively() {
        for (s, e) in [
            ("utf-8", Encoding::Utf8),
            ("UTF8", Encoding::Utf8),
            ("Big5", Encoding::Big5),
            ("GBK", Encoding::Gbk),
            ("utf-16", Encoding::Utf16),
            ("UTF16", Encoding::Utf16),
        ] {
            assert_eq!(s.parse::<Encoding>(), Ok(e), "{s}");
        }
        let err = "latin1".parse::<Encoding>().unwrap_err();
        assert!(err.to_string().contains("big5"), "{err}");
        assert_eq!(Encoding::default(), Encoding::Utf8);
        assert_eq!(Encoding::Utf16.to_string(), "utf-16");
    }
}
