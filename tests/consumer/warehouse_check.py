"""Runs the statements `group-loader schema --format sql --dialect D` prints, in the warehouse itself, and checks
what it then reads against the run's report.

    python warehouse_check.py duckdb STATEMENTS.sql EXPECTED.json [STATEMENTS.sql EXPECTED.json ...]
    python warehouse_check.py spark  STATEMENTS.sql EXPECTED.json [STATEMENTS.sql EXPECTED.json ...]

EXPECTED.json: {"table": "groups", "rows": N, "partitions": {"dt=...": n, ...} or null, "hour": bool}.
DuckDB's delta_scan needs the delta extension: it is loaded from PyPI's duckdb-extension-delta (installed with the
DuckDB it is built for in a venv of its own by scripts/test.sh). Exits non-zero on the first failed check.
"""
import json
import os
import sys


def statements(path):
    text = open(path).read()
    lines = [line for line in text.splitlines() if not line.startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]


def expect_types(types, table, hour, engine):
    """The partition columns and the kinds of the table's columns, as the warehouse types them."""
    time_type = {"duckdb": "TIMESTAMP WITH TIME ZONE", "spark": "timestamp"}[engine]
    text_type = {"duckdb": "VARCHAR", "spark": "string"}[engine]
    times = {"received_at", "sent_at", "original_timestamp", "timestamp", "created_at", "first_seen_at",
             "last_seen_at"}
    json_cols = {"extra_traits", "extra_context", "extra", "trait_versions"}
    for name, t in types.items():
        if name == "dt":
            assert t.upper() == "DATE", (name, t)
        elif name == "hr":
            assert t.upper() in ("INTEGER", "INT"), (name, t)
        elif name in times:
            assert t == time_type, (name, t)
        elif name in json_cols:
            # DuckDB knows Parquet's JSON logical type; Spark reads it as text.
            assert t == ("JSON" if engine == "duckdb" else text_type), (name, t)
        else:
            assert t == text_type, (name, t)
    if table == "groups":
        assert ("hr" in types) == hour, types


def duckdb_check(sql_path, expected):
    import duckdb
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if "delta_scan" in open(sql_path).read():
        import duckdb_extension_delta
        ext = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions",
                           "v" + duckdb.__version__, "delta.duckdb_extension")
        con.execute(f"LOAD '{ext}'")
    for s in statements(sql_path):
        con.execute(s)
    table = expected["table"]
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall())
    if "delta_scan" not in open(sql_path).read():
        expect_types(types, table, expected.get("hour", False), "duckdb")
    (rows,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert rows == expected["rows"], (rows, expected["rows"])
    if expected.get("partitions"):
        got = {f"dt={d}": n for d, n in con.execute(
            f"SELECT strftime(dt, '%Y-%m-%d'), count(*) FROM {table} GROUP BY ALL").fetchall()}
        want = {}
        for p, n in expected["partitions"].items():
            day = p.split("/")[0]
            want[day] = want.get(day, 0) + n
        assert got == want, (got, want)
    print(json.dumps({"engine": "duckdb", "rows": rows, "types": types}))


SPARK = None


def spark_session(sql_path):
    global SPARK
    if SPARK is None:
        from pyspark.sql import SparkSession
        SPARK = (SparkSession.builder.master("local[2]").appName("group-loader-check")
                 .config("spark.sql.session.timeZone", "UTC")
                 .config("spark.ui.enabled", "false")
                 .config("spark.sql.warehouse.dir",
                         os.path.join(os.path.dirname(sql_path), "spark-warehouse"))
                 .getOrCreate())
        SPARK.sparkContext.setLogLevel("ERROR")
    return SPARK


def spark_check(sql_path, expected):
    spark = spark_session(sql_path)
    spark.sql(f"DROP TABLE IF EXISTS {expected['table']}")  # external: the files stay
    for s in statements(sql_path):
        spark.sql(s)
    table = expected["table"]
    types = {f.name: f.dataType.simpleString() for f in spark.table(table).schema.fields}
    expect_types(types, table, expected.get("hour", False), "spark")
    rows = spark.sql(f"SELECT count(*) FROM {table}").collect()[0][0]
    assert rows == expected["rows"], (rows, expected["rows"])
    if expected.get("partitions"):
        got = {f"dt={r[0]}": r[1] for r in spark.sql(
            f"SELECT date_format(dt, 'yyyy-MM-dd'), count(*) FROM {table} GROUP BY 1").collect()}
        want = {}
        for p, n in expected["partitions"].items():
            day = p.split("/")[0]
            want[day] = want.get(day, 0) + n
        assert got == want, (got, want)
    # A value through the JSON column, read as text by Spark.
    if table == "groups":
        spark.sql(f"SELECT get_json_object(extra_traits, '$.x') FROM {table} LIMIT 1").collect()
    print(json.dumps({"engine": "spark", "rows": rows, "types": types}))


if __name__ == "__main__":
    engine, pairs = sys.argv[1], sys.argv[2:]
    check = {"duckdb": duckdb_check, "spark": spark_check}[engine]
    for sql, expected in zip(pairs[::2], pairs[1::2]):
        check(sql, json.load(open(expected)))
    if SPARK is not None:
        SPARK.stop()
