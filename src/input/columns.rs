//! The known columns, how header names are matched, and where each column sits in a file.

/// The columns the tool reads, in the order rules are checked and rejects are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    SaveWayType,
    IpayTradeNo,
    PartnerId,
    MerchantId,
    MerchantName,
    StoreId,
    StoreName,
    MallGroupLabel,
    MallLabel,
}

impl Column {
    pub(crate) const ALL: [Column; 9] = [
        Column::SaveWayType,
        Column::IpayTradeNo,
        Column::PartnerId,
        Column::MerchantId,
        Column::MerchantName,
        Column::StoreId,
        Column::StoreName,
        Column::MallGroupLabel,
        Column::MallLabel,
    ];

    /// Columns a file must have; the others may be absent (then every value is empty).
    const MANDATORY: [Column; 2] = [Column::MallGroupLabel, Column::MallLabel];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Column::SaveWayType => "save_way_type",
            Column::IpayTradeNo => "ipay_trade_no",
            Column::PartnerId => "partner_id",
            Column::MerchantId => "merchant_id",
            Column::MerchantName => "merchant_name",
            Column::StoreId => "store_id",
            Column::StoreName => "store_name",
            Column::MallGroupLabel => "mall_group_label",
            Column::MallLabel => "mall_label",
        }
    }

    pub(crate) fn from_header(name: &str) -> Option<Column> {
        let n = normalize_header(name);
        Column::ALL
            .into_iter()
            .find(|c| normalize_header(c.name()) == n)
    }
}

/// Lower-cases a header name and removes spaces, `_`, `-` and a byte-order mark, so that
/// `partner_id`, `partnerId` and `Partner ID` name the same column.
pub fn normalize_header(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '_' | '-' | '\u{FEFF}'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Where each known column is in one file's records; computed once per file.
#[derive(Debug, Clone)]
pub(crate) struct ColumnMap {
    /// The column of each header cell, if it is a known one.
    by_cell: Vec<Option<Column>>,
    /// Number of cells in the header.
    pub(crate) width: usize,
}

/// What is wrong with a header (the caller adds the file name).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    Missing {
        missing: Vec<String>,
        found: Vec<String>,
    },
    /// Two header cells name the same column: which one to send is anybody's guess.
    Duplicate { column: String, cells: Vec<String> },
}

impl ColumnMap {
    /// Maps the header cells to columns; returns the map and the unknown (non-empty) names.
    pub(crate) fn new(header: &[&str]) -> Result<(ColumnMap, Vec<String>), HeaderProblem> {
        let mut index: [Option<usize>; 9] = [None; 9];
        let mut unknown = Vec::new();
        for (i, cell) in header.iter().enumerate() {
            let cell = cell.trim().trim_start_matches('\u{FEFF}');
            match Column::from_header(cell) {
                Some(c) => {
                    if let Some(first) = index[c as usize] {
                        return Err(HeaderProblem::Duplicate {
                            column: c.name().to_string(),
                            cells: vec![header[first].to_string(), cell.to_string()],
                        });
                    }
                    index[c as usize] = Some(i);
                }
                None if cell.is_empty() => {}
                None => unknown.push(cell.to_string()),
            }
        }
        let missing: Vec<String> = Column::MANDATORY
            .iter()
            .filter(|c| index[**c as usize].is_none())
            .map(|c| c.name().to_string())
            .collect();
        if !missing.is_empty() {
            let found = header
                .iter()
                .map(|c| c.trim().trim_start_matches('\u{FEFF}'))
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            return Err(HeaderProblem::Missing { missing, found });
        }
        let width = header.len();
        let mut by_cell = vec![None; width];
        for c in Column::ALL {
            if let Some(i) = index[c as usize] {
                by_cell[i] = Some(c);
            }
        }
        Ok((ColumnMap { by_cell, width }, unknown))
    }

    /// The column at cell index `i`, if it is a known one.
    pub(crate) fn column_at(&self, i: usize) -> Option<Column> {
        self.by_cell.get(i).copied().flatten()
    }

    /// The cell index of `column` in this file, if the file has it.
    #[cfg(test)]
    pub(crate) fn get(&self, column: Column) -> Option<usize> {
        self.by_cell.iter().position(|c| *c == Some(column))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_spellings_are_the_same_column() {
        for s in [
            "partner_id",
            "partnerId",
            "Partner ID",
            "PARTNER-ID",
            "\u{FEFF}partner_id",
        ] {
            assert_eq!(normalize_header(s), "partnerid", "{s}");
        }
    }

    #[test]
    fn mandatory_columns_missing_are_named_with_those_found() {
        let err = ColumnMap::new(&["store_id", "Mall Label", "notes"]).unwrap_err();
        assert_eq!(
            err,
            HeaderProblem::Missing {
                missing: vec!["mall_group_label".into()],
                found: vec!["store_id".into(), "Mall Label".into(), "notes".into()],
            }
        );
    }

    #[test]
    fn unknown_columns_are_listed_and_order_is_free() {
        let (map, unknown) =
            ColumnMap::new(&["mallLabel", "Notes", "", "MALL_GROUP_LABEL", "Store ID"]).unwrap();
        assert_eq!(unknown, vec!["Notes".to_string()]);
        assert_eq!(map.get(Column::MallLabel), Some(0));
        assert_eq!(map.get(Column::MallGroupLabel), Some(3));
        assert_eq!(map.get(Column::StoreId), Some(4));
        assert_eq!(map.get(Column::PartnerId), None);
        assert_eq!(map.width, 5);
    }

    #[test]
    fn a_column_named_twice_is_refused() {
        let err = ColumnMap::new(&["mall_label", "Mall Label", "mall_group_label"]).unwrap_err();
        assert!(matches!(err, HeaderProblem::Duplicate { column, .. } if column == "mall_label"));
    }
}
