"""Independent checks of a dataset kept healthy: what readers see after `compact`, the Delta row order, and the
metrics file as Prometheus parses it.

    python tests/consumer/maintenance_check.py readers hive OUT          # DuckDB, polars and Spark: ids
    python tests/consumer/maintenance_check.py readers delta OUT         # deltalake and polars: ids
    python tests/consumer/maintenance_check.py duckdb-delta OUT          # DuckDB's delta_scan: ids (its own venv)
    python tests/consumer/maintenance_check.py delta-order OUT           # groups ids by partition, in row order
    python tests/consumer/maintenance_check.py delta-files OUT           # groups files by partition
    python tests/consumer/maintenance_check.py add-deletion-vectors OUT  # the protocol another writer moves to
    python tests/consumer/maintenance_check.py prom PATH                 # the samples of a metrics file

Prints JSON; exits non-zero on the first failed check.
"""
import json
import os
import sys


def readers(fmt, out):
    seen = {}
    groups = os.path.join(out, "groups")
    if fmt == "hive":
        import duckdb
        import polars as pl
        glob = os.path.join(groups, "**", "*.parquet")
        con = duckdb.connect()
        seen["duckdb"] = sorted(r[0] for r in con.execute(
            f"SELECT id FROM read_parquet('{glob}', hive_partitioning = true)").fetchall())
        seen["polars"] = sorted(pl.read_parquet(glob, hive_partitioning=True)["id"].to_list())
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[2]").appName("group-loader-compact")
                 .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        df = spark.read.parquet(groups)
        assert "dt" in df.columns, df.columns
        seen["spark"] = sorted(r[0] for r in df.select("id").collect())
    else:
        import polars as pl
        from deltalake import DeltaTable, QueryBuilder
        dt = DeltaTable(groups)
        batches = list(QueryBuilder().register("groups", dt).execute("SELECT id FROM groups"))
        seen["deltalake"] = sorted(i for b in batches for i in pl.DataFrame(b)["id"].to_list())
        seen["polars"] = sorted(pl.read_delta(groups)["id"].to_list())
    print(json.dumps(seen))


def duckdb_delta(out):
    import duckdb
    import duckdb_extension_delta
    ext = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions",
                       "v" + duckdb.__version__, "delta.duckdb_extension")
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    ids = sorted(r[0] for r in con.execute(
        f"SELECT id FROM delta_scan('{os.path.join(out, 'groups')}')").fetchall())
    print(json.dumps({"duckdb": ids}))


def delta_order(out):
    """Each partition's ids in row order: files by their Add's modificationTime, then path; rows in file order."""
    import polars as pl
    from deltalake import DeltaTable
    groups = os.path.join(out, "groups")
    dt = DeltaTable(groups)
    adds = pl.DataFrame(dt.get_add_actions(flatten=True)).to_dicts()
    adds.sort(key=lambda a: (a["modification_time"], a["path"]))
    order = {}
    for a in adds:
        part = os.path.dirname(a["path"])
        ids = pl.read_parquet(os.path.join(groups, a["path"]), columns=["id"])["id"].to_list()
        order.setdefault(part, []).extend(ids)
    print(json.dumps(order))


def delta_files(out):
    """The files of each partition of groups, as deltalake lists them."""
    import polars as pl
    from deltalake import DeltaTable
    counts = {}
    for a in pl.DataFrame(DeltaTable(os.path.join(out, "groups")).get_add_actions(flatten=True)).to_dicts():
        part = os.path.dirname(a["path"])
        counts[part] = counts.get(part, 0) + 1
    print(json.dumps(counts))


def add_deletion_vectors(out):
    """What another writer (Spark, Databricks) does before it deletes rows: the table's protocol goes to reader 3."""
    from deltalake import DeltaTable
    from deltalake.table import TableFeatures
    DeltaTable(os.path.join(out, "groups")).alter.add_feature(
        TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    print(json.dumps({"ok": True}))


def prom(path):
    from prometheus_client.parser import text_string_to_metric_families
    with open(path) as f:
        text = f.read()
    samples = []
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", (family.name, family.type)
        for s in family.samples:
            samples.append({"name": s.name, "labels": s.labels, "value": s.value})
    print(json.dumps(samples))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"readers": readers, "duckdb-delta": duckdb_delta, "delta-order": delta_order,
     "delta-files": delta_files, "add-deletion-vectors": add_deletion_vectors, "prom": prom}[cmd](*args)
