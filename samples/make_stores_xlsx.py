#!/usr/bin/env python3
"""Makes samples/stores.xlsx from samples/stores.csv: the same stores as an operator keeps them
in Excel, with a few of the damages Excel does to such a sheet.

    pip install openpyxl && python3 samples/make_stores_xlsx.py

- A title and a note above the header (row 3); a blank row and a hidden row in the table.
- Ids typed as text, as they must be; mall labels typed as numbers (they fit in 15 digits).
- The row whose partner_id the CSV holds as "2.08802E+15" holds the number Excel kept when the
  16-digit id was typed into a General cell: 2088021966641230 (rejected).
- Two rows more than the CSV: a date where a mall label was, and #N/A where a lookup failed
  (both rejected).
"""

import csv
import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font

HERE = Path(__file__).resolve().parent
LABELS = {"mall_group_label", "mall_label"}


def main():
    with open(HERE / "stores.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    wb = Workbook()
    ws = wb.active
    ws.title = "Stores"
    ws.append(["Mall rollout: stores to tag (sample)"])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append(["Ids are typed as text; see README, 'Workbooks'"])
    ws.append(header)
    for i, values in enumerate(body):
        cells = []
        for name, value in zip(header, values):
            if name in LABELS and value.isdigit():
                cells.append(int(value))
            elif name == "partner_id" and value == "2.08802E+15":
                cells.append(2088021966641230)
            else:
                cells.append(value or None)
        ws.append(cells)
        if i == 9:
            ws.append([])  # a blank row inside the table
    hidden = 8  # the sixth data row
    ws.row_dimensions[hidden].hidden = True
    date_row = ["MERCHANT_PMS", None, "2088021966640010", "SECM9010", "日期代替了商場", "STORE90010",
                None, 20230316, datetime.datetime(2023, 3, 16)]  # fmt: skip
    ws.append(date_row)
    ws.cell(row=ws.max_row, column=9).number_format = "yyyy-mm-dd"
    ws.append(["MERCHANT_PMS", None, "2088021966640011", "#N/A", "查找失敗", "STORE90011", None,
               20230316, 20230316001])  # fmt: skip
    for col, width in zip("ABCDEFGHI", [16, 24, 20, 12, 20, 12, 20, 18, 14]):
        ws.column_dimensions[col].width = width
    wb.save(HERE / "stores.xlsx")


if __name__ == "__main__":
    main()
