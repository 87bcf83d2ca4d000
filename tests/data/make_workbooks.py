#!/usr/bin/env python3
"""Makes the workbook fixtures in tests/data/, each by another program than the tool's own
writer (rust_xlsxwriter, which the tests use for workbooks they build themselves):

    workbook_openpyxl.xlsx   openpyxl: a title above the header, every kind of damage, two sheets
    workbook_xlwt.xls        xlwt: the same kinds in the old binary format
    workbook_odfpy.ods       odfpy: an OpenDocument sheet

    pip install openpyxl xlwt odfpy && python3 tests/data/make_workbooks.py

The expected outcome of each row is written beside it, in the `expect` column (the tool ignores
it); tests/workbook.rs and src/input/workbook check the rows against the same expectations.
"""

import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

HEADER = [
    "save_way_type", "ipay_trade_no", "partner_id", "merchant_id", "merchant_name",
    "store_id", "store_name", "mall_group_label", "mall_label", "expect",
]  # fmt: skip

# The first rows of every fixture, in this order.
COMMON = [
    # Text ids exactly as typed, a leading zero kept, Traditional Chinese names.
    ["MERCHANT_PMS", None, "2088021966641234", "SECM0001", "海港城餐飲集團", "00123",
     "荃灣店 1號舖", "20230512", "20230512002", "row"],
    # A 15-digit number id: Excel holds it exactly; labels typed as numbers.
    ["MERCHANT_PMS", None, 208802196664123, "SECM0002", "翠華餐廳", "STORE00002",
     "銅鑼灣分店", 20230316, 20230316001, "row"],
    # A 16-digit number id: Excel keeps 15 digits, the last may be lost.
    ["MERCHANT_PMS", None, 2088021966641236, "SECM0003", "美心集團", "STORE00003",
     "沙田分店", "20230512", "20230512001", "reject partner_id"],
    # A date where the mall label was.
    ["MERCHANT_PMS", None, "2088021966641237", "SECM0004", "大家樂", "STORE00004",
     "荃灣店", "20230316", datetime.datetime(2023, 3, 16), "reject mall_label"],
]  # fmt: skip


def openpyxl_workbook():
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Stores"
    ws["A1"] = "Mall rollout: stores of the Harbour group"
    ws.merge_cells("A1:F1")
    ws["A2"] = "Prepared by operations; ids typed as text"
    # Row 3 is blank; the header is row 4.
    for col, name in enumerate(HEADER, start=1):
        ws.cell(row=4, column=col, value=name)
    rows = dict(enumerate(COMMON, start=5))
    rows |= {
        # An error cell.
        9: ["MERCHANT_PMS", None, "2088021966641238", "#N/A", "譚仔雲南米線", "STORE00005",
            "沙田分店", "20230620", "20230620001", "reject merchant_id"],
        # A formula openpyxl cannot calculate: no value to send.
        10: ["MERCHANT_PMS", None, "2088021966641239", "SECM0006", "一蘭拉麵", "STORE00006",
             '=CONCAT("荃灣", "店")', "20230316", "20230316001", "reject store_name"],
        # Row 11 is blank; row 12 is hidden and read like the others.
        12: ["MERCHANT_PMS", None, "2088021966641240", "SECM0007", "稻香集團", "STORE00007",
             "旺角店", "20230316", "20230316002", "row"],
        # A fraction in a label.
        13: ["MERCHANT_PMS", None, "2088021966641241", "SECM0008", "太興", "STORE00008",
             "觀塘店", 20230316.5, "20230316003", "reject mall_group_label"],
        # A 20-digit trade number typed as a number.
        14: ["IPAY_TRADE_NO", 20230000041219162776, None, None, None, None, None,
             "20230401", "20230401001", "reject ipay_trade_no"],
        # The same store as row 5, same payload: a duplicate.
        15: COMMON[0][:-1] + ["dup 5"],
        # The same store as row 6, another mall: a conflict.
        16: ["MERCHANT_PMS", None, "208802196664123", "SECM0002", "翠華餐廳", "STORE00002",
             "銅鑼灣分店", "20230316", "20230316004", "reject mall_label"],
        # A trade number as text, an explicit save way in lower case.
        17: ["ipay_trade_no", "20230000041219162813", None, None, None, None, None,
             20230401, 20230401002, "row"],
        # The rules of a CSV apply: letters in a label.
        18: ["MERCHANT_PMS", None, "2088021966641242", "SECM0009", "大快活", "STORE00009",
             "", "20230316", "2023A316001", "reject mall_label"],
    }  # fmt: skip
    for r, values in rows.items():
        for col, value in enumerate(values, start=1):
            if value is not None:
                ws.cell(row=r, column=col, value=value)
    ws.row_dimensions[12].hidden = True
    # The merchant_name column is hidden too.
    ws.column_dimensions["E"].hidden = True

    other = wb.create_sheet("Other")
    for col, name in enumerate(HEADER, start=1):
        other.cell(row=1, column=col, value=name)
    for col, value in enumerate(
        ["MERCHANT_PMS", None, "2088000000000001", "M1", "另一張表", "S1", "分店", "100", "200", "row"],
        start=1,
    ):
        if value is not None:
            other.cell(row=2, column=col, value=value)
    wb.save(HERE / "workbook_openpyxl.xlsx")


def xlwt_workbook():
    import xlwt

    wb = xlwt.Workbook(encoding="utf-8")
    ws = wb.add_sheet("Stores")
    ws.write(0, 0, "Store list (title row)")
    for col, name in enumerate(HEADER):
        ws.write(1, col, name)
    date = xlwt.easyxf(num_format_str="yyyy-mm-dd")
    rows = dict(enumerate(COMMON, start=2))
    rows |= {
        # Row 7 (index 6) is blank.
        7: ["MERCHANT_PMS", None, "2088021966641238", "SECM0005", "譚仔雲南米線", "STORE00005",
            "沙田分店", "20230620", "20230620001", "row"],
    }  # fmt: skip
    for r, values in rows.items():
        for col, value in enumerate(values):
            if isinstance(value, datetime.date):
                ws.write(r, col, value, date)
            elif value is not None:
                ws.write(r, col, value)
    # An error cell: #N/A (code 0x2A) in the merchant_id of row 9 (index 8).
    for col, value in enumerate(
        ["MERCHANT_PMS", None, "2088021966641239", None, "一蘭拉麵", "STORE00006", "旺角店",
         "20230316", "20230316001", "reject merchant_id"]
    ):  # fmt: skip
        if value is not None:
            ws.write(8, col, value)
    ws.row(8).set_cell_error(3, 0x2A)
    ws.row(7).hidden = True
    wb.save(str(HERE / "workbook_xlwt.xls"))


def odfpy_workbook():
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()

    def cell(value):
        if value is None:
            return TableCell()
        if isinstance(value, datetime.date):
            c = TableCell(valuetype="date", datevalue=value.isoformat())
            c.addElement(P(text=value.isoformat()))
            return c
        if isinstance(value, (int, float)):
            c = TableCell(valuetype="float", value=repr(value))
            c.addElement(P(text=repr(value)))
            return c
        c = TableCell(valuetype="string")
        c.addElement(P(text=value))
        return c

    def sheet(name, rows):
        t = Table(name=name)
        for values in rows:
            tr = TableRow()
            for v in values:
                tr.addElement(cell(v))
            t.addElement(tr)
        doc.spreadsheet.addElement(t)

    sheet(
        "Stores",
        [
            ["Store list (title row)"],
            [],
            HEADER,
            *COMMON,
            ["MERCHANT_PMS", None, "2088021966641238", "SECM0005", "譚仔", "STORE00005",
             "沙田分店", "20230620", 20230620.5, "reject mall_label"],
            # LibreOffice keeps a formula's error as its text (calamine reads it so).
            ["MERCHANT_PMS", None, "2088021966641239", "#N/A", "一蘭", "STORE00006",
             "旺角店", "20230316", "20230316001", "reject merchant_id"],
        ],  # fmt: skip
    )
    sheet("Other", [HEADER, ["MERCHANT_PMS", None, "2088000000000001", "M1", "另一張表", "S1",
                             "分店", "100", "200", "row"]])  # fmt: skip
    doc.save(str(HERE / "workbook_odfpy.ods"))


if __name__ == "__main__":
    openpyxl_workbook()
    xlwt_workbook()
    odfpy_workbook()
