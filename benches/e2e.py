#!/usr/bin/env python3
"""End-to-end benchmarks of the release binary against the sandbox in its own process.

    python3 benches/e2e.py cpu      [--rows N] [--repeat K] [--concurrency default,8]
                                                               client CPU per row vs openssl rsa2048 sign
    python3 benches/e2e.py validate [--rows N] [--repeat K]   `validate` vs Python's csv.reader
    python3 benches/e2e.py workbook [--rows N] [--formats csv,xlsx,xls,ods]
                                                               `validate` of the same rows in each format
    python3 benches/e2e.py resume   [--rows N] [--repeat K]   a second identical run after N rows are done
    python3 benches/e2e.py rate     [--rates 1,10,...] [--seconds S]  --rate R against the sandbox's clock
                                    [--latency-ms L] [--concurrency C]  a gateway L ms away, C workers
                                    [--rate-limit N]                   a gateway that throttles above N/s
                                    [--fault-http429 P]                each run also with P random 429s: the cost
    python3 benches/e2e.py chaos    [--rows N] [--rates R] [--repeat K]
                                    every fault, random 429s and two kill -9, then run to the end
    python3 benches/e2e.py nightly  [--rows N] [--repeat K] [--keep DIR]
                                    the nightly commands on a ledger of N rows, all done
    python3 benches/e2e.py pgread   [--rows N] [--repeat K] [--keep DIR]
                                    the reading commands on a PostgreSQL ledger of N done rows
                                    (`ledger copy` of a SQLite one) against the SQLite file
    python3 benches/e2e.py all      every mode but nightly and pgread

Every figure is the median of --repeat runs (default 3); each run's figures are printed too.
Build first: `cargo build --release` (the binary is target/release/pms-onboard, or $PMS_ONBOARD).
Resource figures come from the child's own rusage (os.wait4), so the sandbox and Python are
never counted in the client's CPU.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("PMS_ONBOARD", str(ROOT / "target/release/pms-onboard"))
CLIENT_ID = "2102000000000000044"
DEFAULT_RATES = "1,10,40,100,200,500"


def gen(path, n, first=0):
    """A sheet of n valid MERCHANT_PMS rows (about 110 bytes a row), store ids from `first`."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(
            "save_way_type,partner_id,merchant_id,merchant_name,store_id,store_name,"
            "mall_group_label,mall_label\n"
        )
        for i in range(first, first + n):
            f.write(
                f"MERCHANT_PMS,2088{i % 97:012},M{i % 13:04},測試商戶 {i},S{i:08},"
                f"分店 旺角 {i},20230316,20230316{i % 5 + 1:03}\n"
            )
    return path


# GNU time, to read the peak memory of the command alone (see `measure`).
GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def measure(argv, **kw):
    """Runs argv; returns (wall s, user+sys CPU s, maxrss MiB, exit code, sys CPU s).

    The peak memory comes from GNU time when there is one: a child of this Python process
    starts with Python's own peak as its maxrss (Linux carries the high-water mark over the
    vfork and exec), which put a floor of 13-25 MiB under every figure; GNU time forks the
    command from its own small process and reports the command's maxrss alone.
    """
    with tempfile.NamedTemporaryFile("r") as rss_file:
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv] if GNU_TIME else argv
        t0 = time.perf_counter()
        p = subprocess.Popen(wrapped, **kw)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        maxrss_kib = ru.ru_maxrss
        if GNU_TIME:
            # The last line: GNU time puts "Command exited with non-zero status N" before it.
            maxrss_kib = int(rss_file.read().split()[-1])
    return wall, ru.ru_utime + ru.ru_stime, maxrss_kib / 1024, p.returncode, ru.ru_stime


class Sandbox:
    """`pms-onboard sandbox` as its own process."""

    def __init__(self, keys, extra=()):
        self.p = subprocess.Popen(
            [BIN, "sandbox", "--listen", "127.0.0.1:0", "--keys", keys, "--client-id", CLIENT_ID, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.p.stdout.readline()
        m = re.search(r"http://\S+", line)
        if not m:
            raise SystemExit(f"sandbox said {line!r}")
        self.endpoint = m.group(0)

    def stats(self):
        with urllib.request.urlopen(self.endpoint + "/sandbox/stats") as r:
            return json.load(r)

    def stop(self):
        self.p.kill()
        self.p.wait()


def keygen(d):
    subprocess.run([BIN, "keygen", d], check=True, stdout=subprocess.DEVNULL)
    return d


def run_argv(sandbox, keys, ledger, files, rate, concurrency=8):
    """`concurrency=None` leaves the setting to the tool's default."""
    return [
        BIN, "run", *files,
        "--endpoint", sandbox.endpoint,
        "--client-id", CLIENT_ID,
        "--private-key", f"{keys}/client_private.pem",
        "--alipay-public-key", f"{keys}/alipay_public.pem",
        "--ledger", ledger,
        "--rate", str(rate),
        *(["--concurrency", str(concurrency)] if concurrency else []),
    ]  # fmt: skip


def run_client(argv, log=None):
    """Runs the client; with `log`, its stderr (at RUST_LOG=`log`) is returned as the 6th item."""
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    if log:
        env["RUST_LOG"] = log
    with tempfile.TemporaryFile() as err:
        r = measure(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if r[3] != 0:
        raise SystemExit(f"client exited {r[3]}: {' '.join(argv)}\n{text}")
    return (*r, text)


def signing_ms(stderr):
    """The CPU time the run's own signatures took, from its debug line (see SigningClock)."""
    m = re.search(r"time spent signing requests signatures=(\d+) signing_ms=(\d+)", stderr)
    if not m:
        raise SystemExit("the client did not report its signing time")
    return int(m.group(1)), int(m.group(2))


def openssl_sign_seconds(multi=1):
    """Seconds of one CPU per RSA-2048 signature, as `openssl speed -seconds 3 rsa2048` measures it.

    With multi=2, two openssl processes sign at once, one on each core: the cost of a signature
    while the other core is busy too, as it is during a run (the sandbox signs every answer).
    """
    argv = ["openssl", "speed", "-seconds", "3", "rsa2048"]
    if multi > 1:
        argv[2:2] = ["-multi", str(multi)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    # OpenSSL 3: "rsa 2048 bits 0.000712s 0.000021s ... 1404.2 47619.0 ..." (sign/s first; with
    # -multi, the signatures per second of all processes together).
    for line in out.splitlines():
        if line.startswith("rsa 2048 bits") or line.startswith("rsa  2048 bits"):
            sign_per_s = float([t for t in line.split()[3:] if not t.endswith("s")][0])
            return multi / sign_per_s
    raise SystemExit(f"cannot parse openssl speed output:\n{out}")


def med(xs):
    return statistics.median(xs)


def report(title, rows):
    print(f"\n== {title} (median of {len(rows)})")
    for k in rows[0]:
        vals = [r[k] for r in rows]
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals)
        m = med(vals)
        print(f"  {k:34} {m:>12.4g}   [{shown}]" if isinstance(m, float) else f"  {k:34} {m!s:>12}   [{shown}]")


def mode_cpu(args):
    # "default" runs without --concurrency, as a user would: 64 at --rate 0.
    concurrencies = (args.concurrency or "default,8").split(",")
    results = {c: [] for c in concurrencies}
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        keys = keygen(f"{tmp}/keys")
        sheet = gen(f"{tmp}/sheet.csv", args.rows)
        for i in range(args.repeat):
            # The concurrencies take turns, so that a noisy minute on a shared machine spreads
            # over all of them instead of spoiling one.
            for c in concurrencies:
                # openssl is timed just before and just after the run and the two averaged: the
                # machine's speed drifts over minutes, and one 3-second sample either side of an
                # 11-second run moved the ratio by up to 15 %.
                sign_before = openssl_sign_seconds()
                sandbox = Sandbox(keys)
                try:
                    ledger = f"{tmp}/ledger-cpu-{c}-{i}.db"
                    argv = run_argv(sandbox, keys, ledger, [sheet], 0, concurrency=None if c == "default" else int(c))
                    wall, cpu, rss, _, sys_cpu, err = run_client(argv, log="pms_onboard::pipeline=debug")
                    requests = sandbox.stats()["requests"]
                finally:
                    sandbox.stop()
                assert requests == args.rows, (requests, args.rows)
                signatures, sign_ms = signing_ms(err)
                in_run = sign_ms / 1e3 / signatures
                sign = (sign_before + openssl_sign_seconds()) / 2
                sign_busy = openssl_sign_seconds(multi=2)
                per_row = cpu / args.rows
                results[c].append(
                    {
                        "rows/s": args.rows / wall,
                        "client CPU ms/row": per_row * 1e3,
                        "  of which kernel (sys) ms/row": sys_cpu / args.rows * 1e3,
                        "openssl rsa2048 sign ms": sign * 1e3,
                        "ratio CPU/row : sign": per_row / sign,
                        "openssl sign ms, both cores busy": sign_busy * 1e3,
                        "ratio CPU/row : sign (both busy)": per_row / sign_busy,
                        "client's own signature, CPU ms": in_run * 1e3,
                        "ratio CPU/row : own signature": per_row / in_run,
                        "client maxrss MiB": rss,
                    }
                )
                print(c, results[c][-1], file=sys.stderr)
    for c in concurrencies:
        setting = "the default concurrency (64 at --rate 0)" if c == "default" else f"--concurrency {c}"
        report(f"cpu: {args.rows} rows, --rate 0, {setting}", results[c])


def mode_validate(args):
    out = []
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        sheet = gen(f"{tmp}/sheet.csv", args.rows)
        size = os.path.getsize(sheet) / 1e6
        py = [
            sys.executable, "-c",
            "import csv,sys\nfor _ in csv.reader(open(sys.argv[1], newline='', encoding='utf-8')): pass",
            sheet,
        ]  # fmt: skip
        for _ in range(args.repeat):
            v = measure([BIN, "validate", sheet], stdout=subprocess.DEVNULL)
            p = measure(py)
            assert v[3] == 0 and p[3] == 0, (v, p)
            out.append(
                {
                    "validate s": v[0],
                    "validate maxrss MiB": v[2],
                    "python csv.reader s": p[0],
                    "python maxrss MiB": p[2],
                    "ratio validate : python": v[0] / p[0],
                }
            )
            print(out[-1], file=sys.stderr)
    report(f"validate: {args.rows} rows, {size:.0f} MB", out)


def write_workbook(csv_path, fmt, path):
    """The rows of `csv_path` as a workbook, as an operator keeps them: ids as text, the mall
    labels typed as numbers. Needs XlsxWriter (xlsx), xlwt (xls) or odfpy (ods)."""
    import csv

    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    labels = {i for i, name in enumerate(rows[0]) if name.endswith("label")}
    typed = [rows[0]] + [[int(v) if i in labels else v for i, v in enumerate(r)] for r in rows[1:]]
    if fmt == "xlsx":
        # XlsxWriter keeps the text in a shared strings table, as Excel does (openpyxl's
        # write-only mode writes each string in its cell, which is cheaper to read).
        import xlsxwriter

        wb = xlsxwriter.Workbook(path)
        ws = wb.add_worksheet("Stores")
        for i, r in enumerate(typed):
            for j, v in enumerate(r):
                if isinstance(v, int):
                    ws.write_number(i, j, v)
                else:
                    ws.write_string(i, j, v)
        wb.close()
    elif fmt == "xls":
        import xlwt

        if len(typed) > 65536:
            raise SystemExit("an .xls sheet holds at most 65,536 rows: pass --rows 65000 or fewer")
        wb = xlwt.Workbook(encoding="utf-8")
        ws = wb.add_sheet("Stores")
        for i, r in enumerate(typed):
            for j, v in enumerate(r):
                ws.write(i, j, v)
        wb.save(path)
    elif fmt == "ods":
        from odf.opendocument import OpenDocumentSpreadsheet
        from odf.table import Table, TableCell, TableRow
        from odf.text import P

        doc = OpenDocumentSpreadsheet()
        t = Table(name="Stores")
        for r in typed:
            tr = TableRow()
            for v in r:
                kind = {"valuetype": "float", "value": v} if isinstance(v, int) else {"valuetype": "string"}
                c = TableCell(**kind)
                c.addElement(P(text=str(v)))
                tr.addElement(c)
            t.addElement(tr)
        doc.spreadsheet.addElement(t)
        doc.save(path)
    return path


def mode_workbook(args):
    formats = args.formats.split(",")
    out = []
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        sheet = gen(f"{tmp}/sheet.csv", args.rows)
        files = {fmt: sheet if fmt == "csv" else f"{tmp}/sheet.{fmt}" for fmt in formats}
        for fmt, path in files.items():
            if fmt != "csv":
                # In a process of its own: a child's peak RSS counts the memory of the process
                # it was forked from, so this one must stay small.
                code = "import sys; sys.path.insert(0, sys.argv[1]); import e2e; e2e.write_workbook(*sys.argv[2:])"
                subprocess.run([sys.executable, "-c", code, str(ROOT / "benches"), sheet, fmt, path], check=True)
        sizes = ", ".join(f"{fmt} {os.path.getsize(p) / 1e6:.1f} MB" for fmt, p in files.items())
        for _ in range(args.repeat):
            # The formats take turns, so that a noisy minute spreads over all of them.
            row = {}
            for fmt, path in files.items():
                # GNU time forks the client from its own small process: a child forked from
                # this Python would report Python's peak RSS (it survives exec) when larger.
                figures = f"{tmp}/time.txt"
                argv = ["/usr/bin/time", "-o", figures, "-f", "%e %M", BIN, "validate", path]
                t0 = time.perf_counter()
                said = subprocess.run(argv, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                assert said.returncode == 0 and said.stdout.startswith(f"{args.rows} valid rows"), (fmt, said)
                kib = open(figures).read().split()[1]
                row[f"{fmt}: validate s"] = wall
                row[f"{fmt}: validate maxrss MiB"] = int(kib) / 1024
            out.append(row)
            print(out[-1], file=sys.stderr)
    report(f"workbook: validate of {args.rows} rows ({sizes})", out)


def mode_resume(args):
    out = []
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        keys = keygen(f"{tmp}/keys")
        sheet = gen(f"{tmp}/sheet.csv", args.rows)
        for i in range(args.repeat):
            sandbox = Sandbox(keys)
            try:
                argv = run_argv(sandbox, keys, f"{tmp}/ledger-resume-{i}.db", [sheet], 0)
                first = run_client(argv)
                after_first = sandbox.stats()["requests"]
                second = run_client(argv)
                after_second = sandbox.stats()["requests"]
            finally:
                sandbox.stop()
            out.append(
                {
                    "first run s": first[0],
                    "second run s": second[0],
                    "ratio second : first": second[0] / first[0],
                    "requests first": after_first,
                    "requests second": after_second - after_first,
                }
            )
            print(out[-1], file=sys.stderr)
    report(f"resume: {args.rows} rows", out)


def mode_rate(args):
    # --latency-ms makes the sandbox a gateway that far away; --concurrency (one value) caps the
    # workers (the tool's default when not given, as for a user who has not set it);
    # --rate-limit makes it throttle above N a second; --fault-http429 P runs each repeat twice,
    # without and with P of the answers a random HTTP 429, and reports what the noise cost.
    extra = ["--latency-ms", str(args.latency_ms)] if args.latency_ms else []
    if args.rate_limit:
        extra += ["--rate-limit", str(args.rate_limit), "--rate-limit-answer", "http429"]
    variants = [("", [])]
    if args.fault_http429:
        variants.append((f" with {args.fault_http429:g} random 429s", ["--fault-http429", str(args.fault_http429), "--seed"]))
    concurrency = int(args.concurrency) if args.concurrency else None
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        keys = keygen(f"{tmp}/keys")
        for rate in [int(r) for r in args.rates.split(",")]:
            # R=1: a few requests are enough (each second is one request).
            rows = 6 if rate == 1 else rate * args.seconds
            sheet = gen(f"{tmp}/sheet-{rate}.csv", rows)
            out = {name: [] for name, _ in variants}
            for i in range(args.repeat):
                for name, faults in variants:
                    faults = faults + [str(i + 1)] if faults else []
                    sandbox = Sandbox(keys, extra + faults)
                    try:
                        ledger = f"{tmp}/ledger-rate-{rate}-{i}-{len(faults)}.db"
                        argv = run_argv(sandbox, keys, ledger, [sheet], rate, concurrency=concurrency)
                        argv += ["--log-format", "json"]
                        wall, cpu, _, _, _, err = run_client(argv)
                        s = sandbox.stats()
                    finally:
                        sandbox.stop()
                    span = (s["last_request_ms"] - s["first_request_ms"]) / 1e3
                    achieved = (s["requests"] - 1) / span
                    limited = s["by_result_code"].get("RATE_LIMITED", 0)
                    out[name].append(
                        {
                            "requests": s["requests"],
                            "max in one second": s["max_requests_in_one_second"],
                            "busiest whole second": max(s.get("per_second", {"": 0}).values()),
                            "achieved /s": achieved,
                            "achieved : R": achieved / rate,
                            "rows done /s": rows / wall,
                            "throttled %": 100 * (limited + s["by_result_code"].get("HTTP_429", 0)) / s["requests"],
                            "warned: held back by concurrency": "held back" in err,
                            "client CPU ms/row": cpu / rows * 1e3,
                        }
                    )
                    print(rate, name, out[name][-1], file=sys.stderr)
            setup = f"--concurrency {concurrency}" if concurrency else "default concurrency"
            if extra:
                setup += f", sandbox {' '.join(extra)}"
            for name, _ in variants:
                report(f"rate: --rate {rate}, {rows} rows, {setup}{name}", out[name])
            if len(variants) > 1:
                clean = med([r["rows done /s"] for r in out[""]])
                noisy = med([r["rows done /s"] for r in out[variants[1][0]]])
                print(f"  kept with the noise: {noisy / clean:.3f} of the rows a second without it\n")


def mode_chaos(args):
    """Every fault at once, random 429s among them, the client killed twice with SIGKILL, then run
    to the end: the wall time of the whole, every row done, no store answered twice."""
    import sqlite3

    rate = int(args.rates.split(",")[0]) if args.rates != DEFAULT_RATES else 50
    faults = [
        "--fault-unknown", "0.04", "--fault-unknown-after-commit", "0.04", "--fault-http500", "0.04",
        "--fault-http429", "0.03", "--fault-reset", "0.03", "--fault-hang", "0.02", "--hang-ms", "1500",
        "--fault-bad-signature", "0.04", "--latency-ms", "5",
    ]  # fmt: skip
    out = []
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        keys = keygen(f"{tmp}/keys")
        sheet = gen(f"{tmp}/sheet.csv", args.rows)
        for i in range(args.repeat):
            sandbox = Sandbox(keys, [*faults, "--seed", str(42 + i)])
            ledger = f"{tmp}/ledger-chaos-{i}.db"
            argv = run_argv(sandbox, keys, ledger, [sheet], rate, concurrency=None)
            argv += ["--timeout", "500ms", "--backoff", "20ms", "--max-attempts", "10"]

            def done():
                try:
                    c = sqlite3.connect(ledger, timeout=5)
                    n = c.execute("SELECT count(*) FROM rows WHERE state IN ('succeeded','already_circled')").fetchone()[0]
                    c.close()
                    return n
                except sqlite3.Error:
                    return 0

            start = time.monotonic()
            try:
                for target in (args.rows // 5, args.rows * 3 // 5):
                    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    while done() < target and p.poll() is None:
                        time.sleep(0.05)
                    p.kill()
                    p.wait()
                runs = 2
                for _ in range(3):
                    runs += 1
                    code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
                    if code == 0:
                        break
                wall = time.monotonic() - start
                s = sandbox.stats()
            finally:
                sandbox.stop()
            out.append(
                {
                    "wall s": wall,
                    "runs": runs,
                    "last exit code": code,
                    "rows done": done(),
                    "requests": s["requests"],
                    "HTTP 429": s["by_result_code"].get("HTTP_429", 0),
                    "stores circled": s["stores_circled"],
                    "double success": s["double_success"],
                }
            )
            print(out[-1], file=sys.stderr)
    report(f"chaos: {args.rows} rows, --rate {rate}, every fault, 3 % random 429s, two kill -9", out)


def kept_folder(args, tmp):
    """The folder of a ledger of --rows done rows (--keep DIR, or `tmp`), its keys (made when
    missing), and the paths of its sheet and ledger (made by the caller when missing)."""
    d = Path(args.keep) if args.keep else Path(tmp)
    d.mkdir(parents=True, exist_ok=True)
    keys = keygen(str(d / "keys")) if not (d / "keys/client_private.pem").exists() else str(d / "keys")
    return d, keys, d / f"sheet-{args.rows}.csv", d / f"ledger-{args.rows}.db"


def mode_nightly(args):
    """The nightly commands on a ledger of N rows, all done: time and peak memory of each.

    The ledger is made once, by running the sheet against the sandbox at --rate 0 (about 5
    minutes a million rows on 2 cores). With --keep DIR the sheet and the ledger stay in DIR
    and a later call with the same --rows measures again without making them anew.
    """
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        d, keys, sheet, ledger = kept_folder(args, tmp)
        sandbox = Sandbox(keys)
        try:
            argv = run_argv(sandbox, keys, str(ledger), [str(sheet)], 0, concurrency=None)
            first = None
            if not ledger.exists():
                gen(str(sheet), args.rows)
                first = run_client(argv)
                assert sandbox.stats()["requests"] == args.rows
            commands = {
                "`run` again (all done)": argv,
                "`reconcile --json`": [BIN, "reconcile", str(sheet), "--json", "--ledger", str(ledger)],
                "`export --annotate`": [BIN, "export", "--annotate", str(sheet), "-o", str(d / "annotated.csv"),
                                        "--ledger", str(ledger)],
                "`export` (CSV)": [BIN, "export", "-o", str(d / "export.csv"), "--ledger", str(ledger)],
                "`report`": [BIN, "report", "-o", str(d / "report.html"), "--ledger", str(ledger)],
                "`status`": [BIN, "status", "--ledger", str(ledger)],
            }  # fmt: skip
            out = {name: [] for name in commands}
            for i in range(args.repeat):
                # The commands take turns, so that a noisy minute spreads over all of them.
                for name, cmd in commands.items():
                    wall, _, rss, _, _, _ = run_client(cmd)
                    out[name].append((wall, rss))
                    print(i, name, f"{wall:.2f} s", f"{rss:.1f} MiB", f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
            requests = sandbox.stats()["requests"]
        finally:
            sandbox.stop()
        assert requests == (args.rows if first else 0), requests
        size = sheet.stat().st_size / 1e6
        ledger_mb = ledger.stat().st_size / 1e6
    print(f"\n== nightly: {args.rows:,} rows ({size:.0f} MB sheet, {ledger_mb:.0f} MB ledger), "
          f"median of {args.repeat}, peak memory from the client's own rusage")  # fmt: skip
    if first:
        print(f"first run, --rate 0: {first[0]:.0f} s, {first[2]:.0f} MiB")
    print("\n| command | time | peak memory |\n| --- | --- | --- |")
    for name, runs in out.items():
        print(f"| {name} | {med([w for w, _ in runs]):.1f} s | {med([m for _, m in runs]):.0f} MiB |")
    print("\nevery run (s, MiB): " + "; ".join(
        f"{name.replace('`', '')}: " + ", ".join(f"{w:.1f}/{m:.0f}" for w, m in runs) for name, runs in out.items()))  # fmt: skip


def pg_bindir():
    """The newest /usr/lib/postgresql/N/bin holding initdb (Debian's layout), as tests/pg_server.rs."""
    found = sorted(
        (int(p.name), p / "bin")
        for p in Path("/usr/lib/postgresql").glob("*")
        if p.name.isdigit() and (p / "bin/initdb").exists()
    )
    if not found:
        raise SystemExit("pgread needs PostgreSQL's programs: apt-get install -y postgresql")
    return found[-1][1]


class PgServer:
    """A throw-away PostgreSQL server in `folder` (as the postgres user when root), on 127.0.0.1
    and a free port, as tests/pg_server.rs starts one; `stop` stops it and removes `folder`."""

    def __init__(self, folder):
        import pwd
        import shutil
        import socket

        self.bin = pg_bindir()
        self.root = os.geteuid() == 0
        folder.mkdir(parents=True, exist_ok=True)
        if self.root:
            pw = pwd.getpwnam("postgres")
            os.chown(folder, pw.pw_uid, pw.pw_gid)
        self.data = folder / "data"
        if self.data.exists():
            shutil.rmtree(self.data)
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(folder / "log"), "-w", "-t", "60",
                 "-o", f"-k {folder} -c listen_addresses=127.0.0.1 -p {self.port}", "start")  # fmt: skip
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "ledger")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/ledger"

    def _pg(self, program, *args):
        argv = [str(self.bin / program), *args]
        if self.root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def stop(self):
        import shutil

        self._pg("pg_ctl", "-D", str(self.data), "stop", "-m", "fast")
        shutil.rmtree(self.data.parent, ignore_errors=True)


def mode_pgread(args):
    """The reading commands on a PostgreSQL ledger of N done rows (through the snapshot) and on
    the SQLite ledger it was copied from: time of each, and whether their output is the same.

    The SQLite ledger is made as `nightly` makes it (a run of the sheet against the sandbox at
    --rate 0; --keep DIR keeps it for the next call), copied into a new database of a throw-away
    PostgreSQL server (default settings but its address) with `ledger copy`.
    """
    with tempfile.TemporaryDirectory(prefix="pms-e2e-") as tmp:
        d, keys, sheet, ledger = kept_folder(args, tmp)
        if not ledger.exists():
            sandbox = Sandbox(keys)
            try:
                gen(str(sheet), args.rows)
                run_client(run_argv(sandbox, keys, str(ledger), [str(sheet)], 0, concurrency=None))
                assert sandbox.stats()["requests"] == args.rows
            finally:
                sandbox.stop()
        # A folder of its own, outside `tmp` (which only root may enter), for the postgres user.
        pg = PgServer(Path(tempfile.mkdtemp(prefix="pms-e2e-pg-")))
        try:
            copied = run_client([BIN, "ledger", "copy", str(ledger), pg.url])
            print(f"ledger copy into PostgreSQL: {copied[0]:.1f} s", file=sys.stderr)

            def commands(where, tag):
                return {
                    "`status`": ([BIN, "status", "--ledger", where], None),
                    "`reconcile --json`": ([BIN, "reconcile", str(sheet), "--json", "--ledger", where], None),
                    "`export` (CSV)": ([BIN, "export", "-o", str(d / f"export-{tag}.csv"), "--ledger", where],
                                       d / f"export-{tag}.csv"),
                    "`export --annotate`": ([BIN, "export", "--annotate", str(sheet), "-o",
                                             str(d / f"annotated-{tag}.csv"), "--ledger", where],
                                            d / f"annotated-{tag}.csv"),
                    "`report`": ([BIN, "report", "-o", str(d / f"report-{tag}.html"), "--ledger", where], None),
                }  # fmt: skip

            sides = {"SQLite": commands(str(ledger), "sqlite"), "PostgreSQL": commands(pg.url, "pg")}
            out = {(name, side): [] for name in sides["SQLite"] for side in sides}
            said = {}
            for i in range(args.repeat):
                for name in sides["SQLite"]:
                    for side, cmds in sides.items():
                        argv, written = cmds[name]
                        t0 = time.perf_counter()
                        p = subprocess.run(argv, capture_output=True)
                        wall = time.perf_counter() - t0
                        if p.returncode not in (0, 1):
                            raise SystemExit(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode()}")
                        text = p.stdout.replace(str(ledger).encode(), b"L").replace(pg.url.encode(), b"L")
                        text = re.sub(rb"postgresql://\S+", b"L", text)
                        said[(name, side)] = text + (written.read_bytes() if written else b"")
                        out[(name, side)].append(wall)
                        print(i, side, name, f"{wall:.2f} s", f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        finally:
            pg.stop()
    print(f"\n== pgread: {args.rows:,} done rows, median of {args.repeat}, wall time")
    print("\n| command | SQLite | PostgreSQL | the same output |\n| --- | --- | --- | --- |")
    for name in sides["SQLite"]:
        same = said[(name, "SQLite")] == said[(name, "PostgreSQL")]
        if name == "`report`":
            same = "(not compared: the footer names the time)"
        print(f"| {name} | {med(out[(name, 'SQLite')]):.2f} s | {med(out[(name, 'PostgreSQL')]):.2f} s | {same} |")
    print("\nevery run (s): " + "; ".join(
        f"{name.replace('`', '')} {side}: " + ", ".join(f"{w:.2f}" for w in runs) for (name, side), runs in out.items()))  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["cpu", "validate", "workbook", "resume", "rate", "chaos", "nightly", "pgread", "all"])
    ap.add_argument("--rows", type=int, help="rows (cpu 20000, validate 1000000, workbook 100000, resume 20000, nightly 1000000, pgread 100000)")
    ap.add_argument("--formats", default="csv,xlsx", help="workbook: the formats to compare (csv,xlsx,xls,ods)")
    ap.add_argument("--keep", help="nightly, pgread: keep the sheet and the ledger in this folder, and reuse them")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rates", default=DEFAULT_RATES, help="rate: the rates to run; chaos: the one rate (50)")
    ap.add_argument("--seconds", type=int, default=8, help="seconds of sending per rate")
    ap.add_argument("--concurrency", help="cpu: the --concurrency values to run (default,8; `default` passes none); rate: one (8)")
    ap.add_argument("--latency-ms", type=int, default=0, help="rate: the sandbox answers this late")
    ap.add_argument("--rate-limit", type=int, help="rate: the sandbox throttles (HTTP 429) above this many a second")
    ap.add_argument("--fault-http429", type=float, help="rate: each run also with this share of random HTTP 429s")
    args = ap.parse_args()
    if not Path(BIN).exists():
        raise SystemExit(f"{BIN} not found: cargo build --release")
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}")
    modes = ["cpu", "validate", "resume", "rate"] if args.mode == "all" else [args.mode]
    defaults = {"cpu": 20000, "validate": 1_000_000, "workbook": 100_000, "resume": 20000, "rate": 0, "chaos": 1500, "nightly": 1_000_000, "pgread": 100_000}
    rows = args.rows
    for m in modes:
        args.rows = rows or defaults[m]
        globals()[f"mode_{m}"](args)


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
