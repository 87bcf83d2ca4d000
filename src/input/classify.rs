//! Classify: a row's values as an item of the input: a valid row, a reject (a rule broken, see
//! `rules`), a duplicate of an earlier row (same identity, same payload: skipped) or a conflict
//! with it (same identity, another payload: rejected), by the identity check across every file
//! of the input (see `identity`).

use super::columns::Column;
use super::error::InputError;
use super::identity::{Identities, Verdict};
use super::reader::Item;
use super::row::Reject;
use super::rules::{self, Valid, Values};

/// Where a row is: its file, its line, and what its file's lines add up to before it (an
/// ordinal unique across the input is `base + line`).
pub(super) struct Place<'a> {
    pub(super) file: &'a str,
    pub(super) line: u64,
    pub(super) base: u64,
}

/// The item `values` make at `at`. `suspect`: the record may hold a control character;
/// `locate`: the file and line of an earlier row's ordinal; `make`: what a valid row becomes.
pub(super) fn classify<'s, R>(
    values: &Values<'_>,
    suspect: bool,
    at: &Place<'_>,
    identities: &mut Identities,
    locate: impl Fn(u32) -> (&'s str, u64),
    make: &impl Fn(&Valid<'_>, &str, u64) -> R,
) -> Result<Item<R>, InputError> {
    let (file, line) = (at.file, at.line);
    let row = match rules::validate(values, suspect) {
        Ok(row) => row,
        Err(p) => return Ok(Item::Reject(Reject::from_problem(file, line, p))),
    };
    let ordinal = u32::try_from(at.base + line).map_err(|_| InputError::Csv {
        file: file.to_string(),
        line,
        message: "the input has more than 4,294,967,295 lines in all: split it into several runs"
            .to_string(),
    })?;
    let verdict = identities
        .check_valid(&row, ordinal)
        .map_err(|source| InputError::Spill { source })?;
    Ok(match verdict {
        Verdict::New => Item::Row(make(&row, file, line)),
        Verdict::Duplicate { first_ordinal } => {
            let (first_file, first_line) = locate(first_ordinal);
            Item::Duplicate {
                file: file.to_string(),
                line,
                key: row.key(),
                first_file: first_file.to_string(),
                first_line,
            }
        }
        Verdict::Conflict {
            first_ordinal,
            column,
        } => {
            let (first_file, first_line) = locate(first_ordinal);
            let value = match column {
                Some(c) => payload_value(&row, c).to_string(),
                None => row.key(),
            };
            Item::Reject(Reject::conflict(
                file,
                line,
                row.save_way,
                column,
                value,
                (first_file, first_line),
            ))
        }
    })
}

/// The value of a payload column (as the identity check names it) in `row`.
fn payload_value<'a>(row: &Valid<'a>, column: &str) -> &'a str {
    let c = match column {
        "merchant_name" => Column::MerchantName,
        "store_name" => Column::StoreName,
        "mall_group_label" => Column::MallGroupLabel,
        _ => Column::MallLabel,
    };
    row.get(c)
}
