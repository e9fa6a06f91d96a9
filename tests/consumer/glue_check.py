"""Reads (and, to set up a test, changes) the AWS Glue Data Catalog with boto3, as Athena's catalog would be read.

    python tests/consumer/glue_check.py get DATABASE TABLE                 # the table as JSON (null if none)
    python tests/consumer/glue_check.py retype DATABASE TABLE COLUMN TYPE  # change one column's type, by hand

The endpoint is AWS_ENDPOINT_URL (moto_server), with the AWS_* credentials and region of the environment.
"""
import json
import os
import sys

import boto3


def client():
    return boto3.client(
        "glue",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )


def get(database, table):
    try:
        t = client().get_table(DatabaseName=database, Name=table)["Table"]
    except client().exceptions.EntityNotFoundException:
        return None
    return t


def retype(database, table, column, type_):
    t = get(database, table)
    cols = t["StorageDescriptor"]["Columns"]
    assert any(c["Name"] == column for c in cols), f"no column {column}"
    for c in cols:
        if c["Name"] == column:
            c["Type"] = type_
    keep = ["Name", "Description", "TableType", "Parameters", "StorageDescriptor", "PartitionKeys"]
    client().update_table(DatabaseName=database, TableInput={k: t[k] for k in keep if k in t})


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "get":
        print(json.dumps(get(*args), default=str))
    elif cmd == "retype":
        retype(*args)
        print("null")
    else:
        sys.exit(f"unknown command {cmd}")
