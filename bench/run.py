#!/usr/bin/env python3
"""group-loader vs DuckDB, same inputs, same run, same machine.

    scripts/bench.sh                 # builds, installs duckdb, runs everything below
    python bench/run.py [--events 1000000] [--big 5000000] [--skip-big] [--data DIR] [--only CASE]

Cases: N events plain NDJSON, the same gzipped, and 5N events plain (does peak RSS grow with input size?),
plus group-loader with --threads 1 (scaling), with --memory-limit 512MiB, and with --no-dedupe (the 5N case)
for comparison. DuckDB's job writes the groups table only, so group-loader runs with --no-accounts against it;
the plain case also shows group-loader with its accounts table (the full default job). Then the accounts case:
N events on N distinct groups (a million groups by default) at --memory-limit 1GiB and 512MiB, and a second run
merging N/10 more events into that snapshot, against the limit (--skip-accounts to leave it out). And the nights
case (--skip-nights to leave it out): a night of N events received on one day loaded into an empty dataset, then
the same into a dataset already holding the 7 previous nights (N events each), so the dedupe window reads 7N ids:
wall time and peak RSS of the second against the first. And the shards case (--skip-shards): the N events cut
into 8 files of uneven size, loaded by --shard K/N for N = 1, 2, 4 (all N processes started at once) into a local
Delta dataset: wall time until the last shard ends, commit retries, peak RSS per shard, against one unsharded
Delta run and DuckDB on the same files. And the compaction case (--skip-compact): one day of N events loaded as
40 small runs, queried by DuckDB before and after `compact` at three --target-file-size values. Each command runs in its own process; wall time from a monotonic clock, peak RSS from wait4's
ru_maxrss; each is run --repeat times (default 3, 1 for the 5N case) and the fastest run is kept, for both
tools alike (this machine is shared and noisy). Inputs are read once before timing so both tools start from
the page cache. Prints a Markdown table with ratios against DuckDB measured in this run.
"""
import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(ROOT, "target", "release", "group-loader")


def run(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed ({code}):\n{err}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def ensure_input(path, n, gz_of=None, extra=()):
    if os.path.exists(path):
        return
    tmp = path + ".tmp"
    if gz_of:
        with open(gz_of, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen.py"), str(n), tmp, *extra], check=True)
    os.rename(tmp, path)


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def count_rows(out, glob_tail):
    import duckdb
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/{glob_tail}')").fetchall()[0][0]


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import duckdb
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"DuckDB {duckdb.__version__}, Python {platform.python_version()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=5_000_000)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--data", default=os.path.join(ROOT, "bench", "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-accounts", action="store_true")
    ap.add_argument("--skip-nights", action="store_true")
    ap.add_argument("--skip-shards", action="store_true")
    ap.add_argument("--skip-compact", action="store_true")
    ap.add_argument("--only", choices=["groups", "accounts", "nights", "shards", "compact"],
                    help="run one case (groups: the plain, gzip and 5N rows)")
    args = ap.parse_args()
    if args.only:
        args.skip_accounts = args.only != "accounts"
        args.skip_nights = args.only != "nights"
        args.skip_shards = args.only != "shards"
        args.skip_compact = args.only != "compact"
        if args.only != "groups":
            args.skip_big = True
    os.makedirs(args.data, exist_ok=True)
    n, big = args.events, args.big
    plain = os.path.join(args.data, f"events-{n}.ndjson")
    gz = plain + ".gz"
    large = os.path.join(args.data, f"events-{big}.ndjson")
    ensure_input(plain, n)
    cases = []
    if args.only in (None, "groups"):
        ensure_input(gz, n, gz_of=plain)
        cases = [("plain", plain, n), ("gzip", gz, n)]
    if not args.skip_big:
        ensure_input(large, big)
        cases.append(("plain-big", large, big))

    results = []
    out = os.path.join(args.data, "out")
    for name, path, events in cases:
        warm(path)
        size = os.path.getsize(path)
        gl = [LOADER, "load", path, "-o", out, "-q", "--no-accounts"]
        runs = [("group-loader", gl, "groups/*/*.parquet")]
        if name == "plain":
            runs.append(("group-loader --threads 1", gl + ["--threads", "1"], "groups/*/*.parquet"))
            runs.append(("group-loader --memory-limit 512MiB", gl + ["--memory-limit", "512MiB"],
                         "groups/*/*.parquet"))
            runs.append(("group-loader + accounts", gl[:-1], "groups/*/*.parquet"))
        if name == "plain-big":
            runs.append(("group-loader --no-dedupe", gl + ["--no-dedupe"], "groups/*/*.parquet"))
        runs.append(("duckdb", [sys.executable, os.path.join(ROOT, "bench", "duckdb_load.py"), path, out],
                     "*/*.parquet"))
        runs.append(("duckdb tuned", [sys.executable, os.path.join(ROOT, "bench", "duckdb_load.py"), path, out,
                                      "--tuned"], "*/*.parquet"))
        runs.append(("chdb", [sys.executable, os.path.join(ROOT, "bench", "chdb_load.py"), path, out],
                     "*/*.parquet"))
        repeat = 1 if name == "plain-big" else args.repeat
        for tool, cmd, glob_tail in runs:
            best = None
            for _ in range(repeat):
                shutil.rmtree(out, ignore_errors=True)
                wall, rss, cpu = run(cmd)
                if best is None or wall < best[0]:
                    best = (wall, rss, cpu)
            wall, rss, cpu = best
            rows = count_rows(out, glob_tail)
            assert rows == events, f"{tool} wrote {rows} rows, expected {events}"
            results.append({"case": name, "tool": tool, "events": events, "input_bytes": size, "wall_s": wall, "cpu_s": cpu,
                            "mb_s": size / wall / 1e6, "rows_s": events / wall, "peak_rss_mb": rss / 1e6})
            print(f"  {name:10} {tool:26} {wall:7.2f}s {cpu:7.2f}s CPU {rss / 1e6:8.0f} MB", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)

    def get(case, tool):
        return next((r for r in results if r["case"] == case and r["tool"] == tool), None)

    print(f"\nMachine: {machine()}\n")
    if cases:
        groups_table(results, get, n, big)
    if not args.skip_accounts:
        accounts_case(args, n, out, get)
    if not args.skip_nights:
        nights_case(args, n, out)
    if not args.skip_shards:
        shards_case(args, n, plain, out)
    if not args.skip_compact:
        compact_case(args, n, out)
    print(json.dumps(results), file=open(os.path.join(args.data, "results.json"), "w"))


def groups_table(results, get, n, big):
    """The groups-only rows: each tool against the three peers (DuckDB idiomatic and tuned, chDB) on the same
    input; a ratio above 1 means the tool is faster than that peer."""
    print("| case | tool | input | wall (s) | CPU (s) | MB/s | peak RSS (MB) | vs DuckDB | vs DuckDB tuned "
          "| vs chDB | RSS vs DuckDB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        peers = [get(r["case"], p) for p in ("duckdb", "duckdb tuned", "chdb")]
        if peers[0] is None:
            continue
        ratios = " | ".join(f"{p['wall_s'] / r['wall_s']:.2f}x" if p else "-" for p in peers)
        print(f"| {r['case']} | {r['tool']} | {r['events']:,} events, {r['input_bytes'] / 1e6:,.0f} MB "
              f"| {r['wall_s']:.2f} | {r.get('cpu_s', 0):.2f} | {r['mb_s']:.0f} | {r['peak_rss_mb']:.0f} "
              f"| {ratios} | {r['peak_rss_mb'] / peers[0]['peak_rss_mb']:.2f}x |")
    one, two = get("plain", "group-loader --threads 1"), get("plain", "group-loader")
    print(f"\n--threads 2 vs --threads 1: {one['wall_s'] / two['wall_s']:.2f}x")
    b, s = get("plain-big", "group-loader"), get("plain", "group-loader")
    if b:
        print(f"peak RSS, {big:,} vs {n:,} events: {b['peak_rss_mb'] / s['peak_rss_mb']:.2f}x")
        nd = get("plain-big", "group-loader --no-dedupe")
        print(f"peak RSS, {big:,} events with --no-dedupe vs {n:,} events: {nd['peak_rss_mb'] / s['peak_rss_mb']:.2f}x")


def accounts_case(args, n, out, get):
    """N events on N groups: the accounts merge against the memory limit, then N/10 more merged into it."""
    distinct = os.path.join(args.data, f"events-{n}-distinct.ndjson")
    late = os.path.join(args.data, f"events-{n // 10}-late.ndjson")
    ensure_input(distinct, n, extra=["--distinct-groups"])
    ensure_input(late, n // 10, extra=["--seed", "7"])
    warm(distinct)
    import duckdb
    rows = []
    base = None
    for limit in ["1GiB", "512MiB"]:
        best = None
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            cmd = [LOADER, "load", distinct, "-o", out, "-q", "--memory-limit", limit]
            first = run(cmd)
            second = run([LOADER, "load", late, "-o", out, "-q", "--memory-limit", limit])
            if best is None or first[0] < best[0][0]:
                best = (first, second)
        groups = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/accounts/*.parquet')").fetchall()[0][0]
        assert groups == n, f"accounts holds {groups} groups, expected {n}"
        if base is None:
            base_best = None
            for _ in range(args.repeat):
                shutil.rmtree(out, ignore_errors=True)
                r = run([LOADER, "load", distinct, "-o", out, "-q", "--no-accounts", "--memory-limit", limit])
                if base_best is None or r[0] < base_best[0]:
                    base_best = r
            base = base_best
        rows.append((limit, best, groups))
    shutil.rmtree(out, ignore_errors=True)
    print(f"\nAccounts: {n:,} events on {n:,} distinct groups, then {n // 10:,} more events merged into that "
          f"snapshot. Without accounts the first run takes {base[0]:.2f} s ({base[2]:.2f} s CPU), "
          f"{base[1] / 1e6:.0f} MB.\n")
    print("| --memory-limit | first run (s) | CPU (s) | peak RSS (MB) | RSS / limit | vs --no-accounts | "
          "second run (s) | CPU (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for limit, ((w1, r1, c1), (w2, r2, c2)), groups in rows:
        lim = 2**30 if limit == "1GiB" else 2**29
        print(f"| {limit} | {w1:.2f} | {c1:.2f} | {r1 / 1e6:.0f} | {r1 / lim:.2f} | {w1 / base[0]:.2f}x time | "
              f"{w2:.2f} | {c2:.2f} | {r2 / 1e6:.0f} |")


def nights_case(args, n, out):
    """Night 8 of a nightly job: N events into a dataset holding 7 nights of N events, against night 1."""
    import datetime
    import multiprocessing
    start = datetime.date(2026, 10, 1)
    nights = []
    for k in range(8):
        day = (start + datetime.timedelta(days=k)).isoformat()
        nights.append((os.path.join(args.data, f"night-{n}-{day}.ndjson"), n,
                       None, ["--start", day, "--days", "1", "--seed", str(100 + k)]))
    missing = [a for a in nights if not os.path.exists(a[0])]
    if missing:
        with multiprocessing.Pool(os.cpu_count()) as pool:
            pool.starmap(ensure_input, missing)
    for path, *_ in nights:
        warm(path)
    history = os.path.join(args.data, "seven-nights")
    if not os.path.isdir(history):
        shutil.rmtree(history + ".tmp", ignore_errors=True)
        for path, *_ in nights[:7]:
            run([LOADER, "load", path, "-o", history + ".tmp", "-q"])
        os.rename(history + ".tmp", history)
    import duckdb
    held = duckdb.sql(f"SELECT count(*) FROM read_parquet('{history}/groups/*/*.parquet')").fetchall()[0][0]
    assert held == 7 * n, f"the 7 nights hold {held} rows, expected {7 * n}"
    last = nights[7][0]
    first = second = None
    for _ in range(args.repeat):
        shutil.rmtree(out, ignore_errors=True)
        r = run([LOADER, "load", last, "-o", out, "-q"])
        first = r if first is None or r[0] < first[0] else first
        shutil.rmtree(out, ignore_errors=True)
        # A copy of the 7 nights made of hard links (files are never modified in place, only replaced).
        subprocess.run(["cp", "-al", history, out], check=True)
        r = run([LOADER, "load", last, "-o", out, "-q"])
        second = r if second is None or r[0] < second[0] else second
    # The eighth night's report: the one report the 7 nights did not have.
    (name,) = set(os.listdir(os.path.join(out, "_runs"))) - set(os.listdir(os.path.join(history, "_runs")))
    report = json.load(open(os.path.join(out, "_runs", name)))
    shutil.rmtree(out, ignore_errors=True)
    limit = 2**30
    print(f"\nNights: {n:,} events received on one day, into an empty dataset and into one holding the 7 previous "
          f"nights ({7 * n:,} rows; the second run read {report['dedupe']['ids_read']:,} ids of "
          f"{report['dedupe']['partitions_read']} partitions), default --memory-limit 1GiB, best of {args.repeat}.\n")
    print("| run | wall (s) | CPU (s) | peak RSS (MB) | RSS / limit | vs first night |")
    print("|---|---|---|---|---|---|")
    print(f"| first night (empty dataset) | {first[0]:.2f} | {first[2]:.2f} | {first[1] / 1e6:.0f} "
          f"| {first[1] / limit:.2f} | 1.00x |")
    print(f"| eighth night (7 nights held) | {second[0]:.2f} | {second[2]:.2f} | {second[1] / 1e6:.0f} "
          f"| {second[1] / limit:.2f} | {second[0] / first[0]:.2f}x |")


def split_input(plain, folder, parts=8):
    """The input cut at line ends into `parts` files of uneven size (2 to 9 shares of 44), as an export's are."""
    if os.path.isdir(folder):
        return
    weights = [2 + (k * 5) % 8 for k in range(parts)]
    total = os.path.getsize(plain)
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(plain, "rb") as src:
        for k, w in enumerate(weights):
            target = total * w // sum(weights)
            with open(os.path.join(tmp, f"part-{k:02}.ndjson"), "wb") as dst:
                written = 0
                for line in src:
                    dst.write(line)
                    written += len(line)
                    if written >= target and k < parts - 1:
                        break
    os.rename(tmp, folder)


def run_all(cmds):
    """Starts every command at once; returns the wall time until the last ends and each one's peak RSS."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    rss = []
    for p, c in zip(procs, cmds):
        _, status, usage = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{' '.join(c)} failed:\n{p.stderr.read().decode(errors='replace')}")
        rss.append(usage.ru_maxrss * 1024)
    return time.perf_counter() - start, rss


def shards_case(args, n, plain, out):
    """--shard K/N for N = 1, 2, 4 at once into one local Delta dataset, against one run and DuckDB."""
    folder = os.path.join(args.data, f"split-{n}")
    split_input(plain, folder)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    for f in os.listdir(folder):
        warm(os.path.join(folder, f))
    reports = os.path.join(args.data, "shard-reports")
    rows = []
    for label, count in [("one run (no --shard)", None), ("N = 1", 1), ("N = 2", 2), ("N = 4", 4)]:
        best = None
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(reports, ignore_errors=True)
            os.makedirs(reports)
            base = [LOADER, "load", folder, "-o", out, "--format", "delta", "-q", "--no-accounts"]
            cmds = [base + ["--report", os.path.join(reports, "0.json")]] if count is None else [
                base + ["--shard", f"{k}/{count}", "--report", os.path.join(reports, f"{k}.json")]
                for k in range(count)]
            wall, rss = run_all(cmds)
            if best is None or wall < best[0]:
                runs = [json.load(open(os.path.join(reports, f))) for f in sorted(os.listdir(reports))]
                best = (wall, rss, runs)
        # Counted in a child process: polars loaded into this one would inflate the next shards' peak RSS
        # (a forked child's ru_maxrss includes the parent's pages it inherited before exec).
        held = int(subprocess.run([sys.executable, "-c", "import polars, sys; "
                                   "print(polars.read_delta(sys.argv[1]).height)", os.path.join(out, "groups")],
                                  check=True, capture_output=True, text=True).stdout)
        assert held == n == sum(r["rows_written"] for r in best[2]), f"{label}: {held} rows, expected {n}"
        rows.append((label, count, best))
    duck = None
    for _ in range(args.repeat):
        shutil.rmtree(out, ignore_errors=True)
        r = run([sys.executable, os.path.join(ROOT, "bench", "duckdb_load.py"), os.path.join(folder, "*.ndjson"), out])
        duck = r if duck is None or r[0] < duck[0] else duck
    assert count_rows(out, "*/*.parquet") == n
    shutil.rmtree(out, ignore_errors=True)
    print(f"\nShards: {n:,} events in 8 files of uneven size ({size / 1e6:,.0f} MB), --format delta to a local "
          f"folder, --no-accounts, all shards started at once, best of {args.repeat}; DuckDB on the same files "
          f"took {duck[0]:.2f} s, {duck[1] / 1e6:.0f} MB.\n")
    print("| run | wall until the last shard ends (s) | MB/s | vs DuckDB | commit retries | "
          "files per shard | peak RSS per shard (MB) |")
    print("|---|---|---|---|---|---|---|")
    for label, count, (wall, rss, runs) in rows:
        retries = sum(r["commit"]["retries"] for r in runs)
        files = ", ".join(str(len(r["inputs"])) for r in runs)
        print(f"| {label} | {wall:.2f} | {size / wall / 1e6:.0f} | {duck[0] / wall:.2f}x | {retries} | {files} "
              f"| {', '.join(f'{x / 1e6:.0f}' for x in rss)} |")


def duckdb_queries(partition, repeat):
    """DuckDB over one partition, in a child process (fresh caches of its own): an aggregate over every row
    and a lookup of one id; the best of `repeat` for each."""
    script = (
        "import duckdb, sys, time, json\n"
        "glob = sys.argv[1] + '/*.parquet'\n"
        "con = duckdb.connect()\n"
        "best = {}\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    for name, sql in [('aggregate', f\"SELECT plan, count(*), count(DISTINCT group_id) FROM read_parquet('{glob}') GROUP BY plan\"),\n"
        "                      ('lookup', f\"SELECT * FROM read_parquet('{glob}') WHERE id = 'missing-id'\")]:\n"
        "        t = time.perf_counter(); con.sql(sql).fetchall(); t = time.perf_counter() - t\n"
        "        best[name] = min(best.get(name, t), t)\n"
        "print(json.dumps(best))\n")
    out = subprocess.run([sys.executable, "-c", script, partition, str(repeat)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def compact_case(args, n, out):
    """A day partition of N events delivered as 40 small runs (shards and late files), queried by DuckDB before
    and after `compact`, at three target sizes."""
    night = os.path.join(args.data, f"night-{n}-2026-10-01.ndjson")
    ensure_input(night, n, extra=["--start", "2026-10-01", "--days", "1", "--seed", "100"])
    pieces = os.path.join(args.data, f"night-{n}-in-40")
    split_input(night, pieces, parts=40)
    small = os.path.join(args.data, "forty-runs")
    if not os.path.isdir(small):
        shutil.rmtree(small + ".tmp", ignore_errors=True)
        for f in sorted(os.listdir(pieces)):
            run([LOADER, "load", os.path.join(pieces, f), "-o", small + ".tmp", "-q", "--no-accounts"])
        os.rename(small + ".tmp", small)
    part = os.path.join("groups", "dt=2026-10-01")
    files = [f for f in os.listdir(os.path.join(small, part)) if f.endswith(".parquet")]
    size = sum(os.path.getsize(os.path.join(small, part, f)) for f in files)
    before = duckdb_queries(os.path.join(small, part), 5)
    rows = [("before: 40 runs", len(files), None, before)]
    for target in ["16MiB", "64MiB", "256MiB"]:
        best = None
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(["cp", "-a", small, out], check=True)
            r = run([LOADER, "compact", "-o", out, "-q", "--target-file-size", target])
            best = r if best is None or r[0] < best[0] else best
        after = [f for f in os.listdir(os.path.join(out, part)) if f.endswith(".parquet")]
        held = count_rows(out, part + "/*.parquet")
        assert held == n, f"compacted partition holds {held} rows, expected {n}"
        rows.append((f"compact --target-file-size {target}", len(after), best, duckdb_queries(os.path.join(out, part), 5)))
    shutil.rmtree(out, ignore_errors=True)
    print(f"\nCompaction: one day of {n:,} events ({size / 1e6:.0f} MB of Parquet) loaded as 40 runs, hive; DuckDB "
          f"{duckdb_version()} queries the partition (best of 5 each): an aggregate over every row, and a lookup of "
          f"an id that is not there (every file's footer and id column). Compaction best of {args.repeat}.\n")
    print("| layout | files | compaction wall (s) | CPU (s) | peak RSS (MB) | aggregate (ms) | lookup (ms) | "
          "aggregate vs before | lookup vs before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, count, c, q in rows:
        cw = f"{c[0]:.2f} | {c[2]:.2f} | {c[1] / 1e6:.0f}" if c else "- | - | -"
        print(f"| {label} | {count} | {cw} | {q['aggregate'] * 1e3:.1f} | {q['lookup'] * 1e3:.1f} | "
              f"{before['aggregate'] / q['aggregate']:.2f}x | {before['lookup'] / q['lookup']:.2f}x |")


def duckdb_version():
    import duckdb
    return duckdb.__version__


if __name__ == "__main__":
    main()
