"""Reads a group-loader dataset with DuckDB, as a warehouse user would, and checks it.

    python tests/consumer/duckdb_check.py OUT

Run by tests/duckdb_consumer.rs after loading fixtures/ into OUT. Exits non-zero with a message on the first
failed check. Expected values are the fixtures' own (fixtures/edge-cases.md, the Segment docs example).
"""
import json
import pathlib
import sys

import duckdb


def main(out):
    out = pathlib.Path(out)
    (report_path,) = list((out / "_runs").glob("*.json"))
    report = json.loads(report_path.read_text())
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = str(out / "groups" / "**" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW groups AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")

    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE groups)").fetchall())
    expected_types = {c: "VARCHAR" for c in types}
    for c in ("received_at", "sent_at", "original_timestamp", "timestamp", "created_at"):
        expected_types[c] = "TIMESTAMP WITH TIME ZONE"
    for c in ("extra_traits", "extra_context", "extra"):
        expected_types[c] = "JSON"  # Parquet's JSON logical type
    expected_types["dt"] = "DATE"
    assert types == expected_types, f"column types: {types}"
    assert len(types) == 33, f"32 columns + the dt partition key, got {len(types)}"

    (rows,) = con.execute("SELECT count(*) FROM groups").fetchone()
    assert rows == report["rows_written"], (rows, report["rows_written"])

    per_day = {str(d): n for d, n in con.execute("SELECT dt, count(*) FROM groups GROUP BY dt").fetchall()}
    expected = {k.removeprefix("dt="): v for k, v in report["partitions"].items()}
    assert per_day == expected, (per_day, expected)

    (nulls,) = con.execute("SELECT count(*) FROM groups WHERE group_id IS NULL OR timestamp IS NULL").fetchone()
    assert nulls == 0, "group_id and timestamp are never null"

    docs = con.execute(
        """SELECT group_id, name, employees, received_at, extra_traits->>'total billed',
                  extra->'integrations'->>'Mixpanel', strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%f')
           FROM groups WHERE id = '022bb90c-bbac-11e4-8dfc-aa07a5b093db'"""
    ).fetchall()
    assert len(docs) == 1, f"the docs example once (deduplicated), got {docs}"
    gid, name, employees, received_at, billed, mixpanel, ts = docs[0]
    assert (gid, name, employees, billed, mixpanel) == (
        "0e8c78ea9d97a7b8185e8632", "Initech", "329", "830", "false"), docs[0]
    assert received_at.isoformat() == "2015-02-23T22:28:55.387000+00:00", received_at
    assert ts == "2015-02-23T22:28:55.111000", ts

    (skew,) = con.execute("SELECT strftime(timestamp, '%H:%M:%S.%f') FROM groups WHERE id = 'm-skew'").fetchone()
    assert skew == "17:39:06.171000", f"the skew-corrected timestamp known answer, got {skew}"

    (big,) = con.execute("SELECT group_id FROM groups WHERE id = 'm-num'").fetchone()
    assert big == "12345678901234567890", big

    (city,) = con.execute("SELECT extra_traits->'address'->>'line2' FROM groups WHERE id = 'm-addr'").fetchone()
    assert city == "Suite 5", city

    # The accounts table: one row per group, the latest state.
    aglob = str(out / "accounts" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW accounts AS SELECT * FROM read_parquet('{aglob}')")
    atypes = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE accounts)").fetchall())
    for c in ("created_at", "first_seen_at", "last_seen_at"):
        assert atypes.pop(c) == "TIMESTAMP WITH TIME ZONE", c
    for c in ("extra_traits", "trait_versions"):
        assert atypes.pop(c) == "JSON", c
    assert set(atypes.values()) == {"VARCHAR"}, atypes
    (n_accounts, n_distinct) = con.execute(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(DISTINCT group_id) FROM accounts)").fetchone()
    (n_groups,) = con.execute("SELECT count(DISTINCT group_id) FROM groups").fetchone()
    assert n_accounts == n_distinct == n_groups, (n_accounts, n_distinct, n_groups)
    # first/last seen are the min/max timestamp of each group's rows, computed here independently.
    (mismatch,) = con.execute(
        """SELECT count(*) FROM accounts a JOIN (
               SELECT group_id, min(timestamp) AS lo, max(timestamp) AS hi FROM groups GROUP BY group_id) g
           USING (group_id) WHERE a.first_seen_at <> g.lo OR a.last_seen_at <> g.hi""").fetchone()
    assert mismatch == 0, f"{mismatch} groups with wrong first/last seen"
    # Every trait value shown was sent by one of the group's events.
    (foreign,) = con.execute(
        """SELECT count(*) FROM accounts a WHERE a.plan IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM groups g WHERE g.group_id = a.group_id AND g.plan = a.plan)""").fetchone()
    assert foreign == 0, f"{foreign} plans that no event sent"
    # The README's example query: the current plan per group.
    current = dict(con.execute("SELECT group_id, plan FROM accounts ORDER BY group_id").fetchall())
    assert current["0e8c78ea9d97a7b8185e8632"] == "enterprise", current["0e8c78ea9d97a7b8185e8632"]
    (name, employees, versions) = con.execute(
        "SELECT name, employees, trait_versions FROM accounts WHERE group_id = '0e8c78ea9d97a7b8185e8632'"
    ).fetchone()
    assert (name, employees) == ("Initech", "329"), (name, employees)
    v = json.loads(versions)
    assert v["versions"][v["columns"]["plan"]][2] == "022bb90c-bbac-11e4-8dfc-aa07a5b093db", v

    print(json.dumps({"rows": rows, "partitions": per_day, "accounts": n_accounts}))


if __name__ == "__main__":
    main(sys.argv[1])
