//! The one CSV writer of the tool's own CSV files (`export`, `reconcile -o`, the rejects): every
//! cell goes through [`super::text::csv_cell`], so text from the sheet or the gateway is never a
//! live formula in a spreadsheet. (`export --annotate` copies the operator's own bytes and
//! passes only its appended cells through the same function.)

use std::io::Write;

use serde::Serialize;

use super::text::csv_cell;

pub struct CsvWriter<W: Write> {
    csv: csv::Writer<W>,
}

impl<W: Write> CsvWriter<W> {
    /// A writer that writes no header of its own: give it with [`CsvWriter::write_record`].
    pub fn new(w: W) -> CsvWriter<W> {
        CsvWriter {
            csv: csv::WriterBuilder::new().has_headers(false).from_writer(w),
        }
    }

    /// One record of text cells.
    pub fn write_record<I, T>(&mut self, cells: I) -> csv::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.csv
            .write_record(cells.into_iter().map(|c| csv_cell(c.as_ref()).into_owned()))
    }

    /// One record from a struct's fields, as the csv crate writes them (numbers, booleans and
    /// empty options included), each cell then made inert like any other.
    pub fn serialize<T: Serialize>(&mut self, record: &T) -> csv::Result<()> {
        let mut plain = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        plain.serialize(record)?;
        let bytes = plain
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))?;
        let mut cells = csv::StringRecord::new();
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&bytes[..])
            .read_record(&mut cells)?;
        self.write_record(&cells)
    }

    /// Flushes and returns the writer.
    pub fn into_inner(self) -> std::io::Result<W> {
        self.csv.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Line {
        name: String,
        line: u64,
        done: bool,
        label: Option<String>,
    }

    #[test]
    fn a_struct_is_written_as_the_csv_crate_writes_it_with_formulas_made_inert() {
        let mut w = CsvWriter::new(Vec::new());
        w.write_record(["name", "line", "done", "label"]).unwrap();
        let line = |name: &str| Line {
            name: name.into(),
            line: 7,
            done: true,
            label: None,
        };
        w.serialize(&line("=HYPERLINK(\"http://x\",\"x\")"))
            .unwrap();
        w.serialize(&line("旺角,\n分店")).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            out,
            "name,line,done,label\n\"'=HYPERLINK(\"\"http://x\"\",\"\"x\"\")\",7,true,\n\
             \"旺角,\n分店\",7,true,\n"
        );
    }
}
