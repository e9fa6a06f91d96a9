"""Reads group-loader's Delta tables with independent readers (deltalake and polars), as a warehouse would.

    python tests/consumer/delta_check.py compare HIVE_OUT DELTA_URL   # rows equal a hive run's, both tables
    python tests/consumer/delta_check.py versions DELTA_URL            # every version of both tables readable
    python tests/consumer/delta_check.py state DELTA_URL               # ids, every version's rows, accounts
    python tests/consumer/delta_check.py rows DELTA_URL                # both tables' rows, as a multiset

Object-store URLs use AWS_ENDPOINT_URL (a local S3-compatible server) and the AWS_* credentials of the
environment, or for az:// the Azurite server at AZURITE_BLOB_STORAGE_URL. Exits non-zero with a message on the first failed check.
"""
import json
import os
import sys

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError


def storage_options(url):
    if url.startswith("az://"):
        # Azurite (AZURITE_BLOB_STORAGE_URL), its development account.
        return {"azure_storage_use_emulator": "true", "azure_storage_account_name": "devstoreaccount1"}
    if not url.startswith("s3://"):
        return None
    return {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_ALLOW_HTTP": "true",
    }


def read_delta(url, version=None):
    """A table through deltalake (the log) and polars (the files)."""
    opts = storage_options(url)
    dt = DeltaTable(url, storage_options=opts, version=version)
    df = pl.read_delta(url, storage_options=opts, version=version)
    return dt, df


def canonical(df, keys):
    """Rows as comparable text: every column cast to string, sorted."""
    df = df.select(sorted(df.columns))
    return df.with_columns(pl.all().cast(pl.String)).sort(keys, nulls_last=True)


def compare(hive_out, delta_url):
    groups_hive = pl.read_parquet(
        os.path.join(hive_out, "groups", "**", "*.parquet"), hive_partitioning=True)
    dt, groups_delta = read_delta(delta_url.rstrip("/") + "/groups")
    assert dt.metadata().partition_columns == ["dt"], dt.metadata().partition_columns
    schema = {f.name: str(f.type) for f in dt.schema().fields}
    assert 'PrimitiveType("timestamp")' in schema["received_at"], schema
    assert 'PrimitiveType("date")' in schema["dt"], schema
    assert groups_delta.schema["timestamp"] == pl.Datetime("us", "UTC"), groups_delta.schema
    assert groups_delta.schema["dt"] == pl.Date, groups_delta.schema
    assert groups_delta.height == groups_hive.height, (groups_delta.height, groups_hive.height)
    # Every row, every column (the file names differ, the rows may not).
    a = canonical(groups_hive, ["id", "group_id", "timestamp"])
    b = canonical(groups_delta.select(groups_hive.columns), ["id", "group_id", "timestamp"])
    assert a.equals(b), "groups differ"
    # Row counts and column statistics in the Add actions (so readers skip files).
    adds = pl.DataFrame(dt.get_add_actions(flatten=True))
    assert adds["num_records"].sum() == groups_delta.height, adds
    assert adds["min.received_at"].null_count() == 0, "received_at min/max in every Add"
    accounts_hive = pl.read_parquet(os.path.join(hive_out, "accounts", "*.parquet"))
    _, accounts_delta = read_delta(delta_url.rstrip("/") + "/accounts")
    a = canonical(accounts_hive, ["group_id"])
    b = canonical(accounts_delta.select(accounts_hive.columns), ["group_id"])
    assert a.equals(b), "accounts differ"
    print(json.dumps({"groups": groups_delta.height, "accounts": accounts_delta.height,
                      "groups_version": dt.version()}))


def accounts_reflects(url):
    """The groups version the accounts table says it reflects (its txn), or None."""
    dt = DeltaTable(url, storage_options=storage_options(url))
    return dt.transaction_version("group-loader/groups-version")


def state(delta_url):
    """What a reader sees now: the groups ids, the rows of every version of both tables (each version read
    whole, so a version naming a missing or broken file fails here), and accounts as comparable rows."""
    base = delta_url.rstrip("/")
    out = {"ids": [], "groups_versions": [], "accounts_versions": [], "accounts": [], "reflects": None}
    for name in ("groups", "accounts"):
        url = base + "/" + name
        try:
            dt = DeltaTable(url, storage_options=storage_options(url))
        except TableNotFoundError:
            continue  # no commit yet (a run killed before its first one): nothing to read
        heights = [read_delta(url, version=v)[1].height for v in range(dt.version() + 1)]
        out[name + "_versions"] = heights
        _, df = read_delta(url)
        if name == "groups":
            out["ids"] = sorted(df["id"].to_list())
        else:
            out["accounts"] = sorted(canonical(df, ["group_id"]).write_ndjson().splitlines())
            out["reflects"] = accounts_reflects(url)
    print(json.dumps(out))


def rows(delta_url):
    """Every row of both tables as sorted JSON lines (a multiset of full rows, partition columns included), the
    groups version and the version accounts reflects."""
    base = delta_url.rstrip("/")
    dt, groups = read_delta(base + "/groups")
    _, accounts = read_delta(base + "/accounts")
    as_lines = lambda df: sorted(df.select(sorted(df.columns)).write_ndjson().splitlines())
    print(json.dumps({"groups": as_lines(groups), "accounts": as_lines(accounts),
                      "groups_version": dt.version(), "reflects": accounts_reflects(base + "/accounts")}))


if __name__ == "__main__":
    {"compare": compare, "state": state, "rows": rows}[sys.argv[1]](*sys.argv[2:])
