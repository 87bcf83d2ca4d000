//! The rejects report: one CSV line per rejected row (`validate --rejects PATH`).

use std::io::{self, Write};

use super::row::Reject;
use crate::output::CsvWriter;

/// Writes rejects as CSV with the header `file,line,column,value,reason`, as they come, each
/// cell made inert for a spreadsheet ([`crate::output::CsvWriter`]).
pub struct RejectsWriter<W: Write> {
    csv: CsvWriter<W>,
}

impl<W: Write> RejectsWriter<W> {
    /// Writes the header.
    pub fn new(w: W) -> io::Result<Self> {
        let mut csv = CsvWriter::new(w);
        csv.write_record(["file", "line", "column", "value", "reason"])?;
        Ok(RejectsWriter { csv })
    }

    pub fn write(&mut self, r: &Reject) -> io::Result<()> {
        let line = r.line.to_string();
        self.csv
            .write_record([&r.file, &line, &r.column, &r.value, &r.reason])?;
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.csv.into_inner()
    }
}

/// Writes all `rejects` at once; see [`RejectsWriter`] for a stream.
pub fn write_rejects_csv<W: Write>(w: W, rejects: &[Reject]) -> io::Result<()> {
    let mut out = RejectsWriter::new(w)?;
    for r in rejects {
        out.write(r)?;
    }
    out.finish().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_csv_has_header_and_quotes_values() {
        let r = Reject {
            file: "stores.csv".into(),
            line: 7,
            column: "store_name".into(),
            value: "旺角,\n分店".into(),
            reason: "store_name contains a line break (U+000A): remove it from the cell".into(),
        };
        let mut out = Vec::new();
        write_rejects_csv(&mut out, std::slice::from_ref(&r)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "file,line,column,value,reason\nstores.csv,7,store_name,\"旺角,\n分店\",\
             store_name contains a line break (U+000A): remove it from the cell\n"
        );
        assert_eq!(
            r.to_string(),
            "stores.csv:7: column store_name: store_name contains a line break (U+000A): remove it from the cell"
        );
    }
}
