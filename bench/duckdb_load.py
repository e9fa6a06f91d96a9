#!/usr/bin/env python3
"""The peer: DuckDB doing the same job with its most idiomatic statement.

    python bench/duckdb_load.py INPUT OUT_DIR [--threads N] [--tuned]

One `COPY (SELECT ... FROM read_json(...)) TO ... (FORMAT PARQUET, PARTITION_BY (dt))` that keeps Group calls,
produces the same reserved columns as group-loader (both trait spellings coalesced, address subfields, context
columns, the clock-skew timestamp) and a JSON column of the other traits (json_merge_patch with nulls removes
the reserved keys). zstd compression, like group-loader's default.

`--tuned` is the form a DuckDB expert writes for speed: every reserved path of `traits` (both spellings and
the address subfields) extracted by one `json_extract_string(traits, [...])` call, which parses `traits` once
per row instead of once per path.
"""
import sys

import duckdb

RESERVED_TEXT = {
    "name": ["name", "Name"],
    "industry": ["industry"],
    "employees": ["employees"],
    "plan": ["plan"],
    "email": ["email", "e-mail"],
    "phone": ["phone"],
    "website": ["website"],
    "avatar": ["avatar"],
    "description": ["description"],
    "trait_id": ["id"],
}
ADDRESS = {"street": ["street"], "city": ["city"], "state": ["state"], "postal_code": ["postalCode", "postal_code"],
           "country": ["country"]}
REMOVED = ["name", "Name", "industry", "employees", "plan", "email", "e-mail", "phone", "website", "avatar",
           "description", "id", "createdAt", "created_at", "address"]


def coalesce(obj, keys):
    return "coalesce(" + ", ".join(f"{obj}->>'{k}'" for k in keys) + ")" if len(keys) > 1 else f"{obj}->>'{keys[0]}'"


def sql(src, out):
    reserved = ",\n    ".join(f"{coalesce('traits', keys)} AS {col}" for col, keys in RESERVED_TEXT.items())
    address = ",\n    ".join(f"{coalesce(chr(40) + 'traits->' + chr(39) + 'address' + chr(39) + chr(41), keys)} AS address_{col}"
                             for col, keys in ADDRESS.items())
    patch = "{" + ",".join(f'"{k}":null' for k in REMOVED) + "}"
    return f"""
COPY (
  SELECT
    messageId AS id, groupId AS group_id, userId AS user_id, anonymousId AS anonymous_id,
    receivedAt AS received_at, sentAt AS sent_at, originalTimestamp AS original_timestamp,
    coalesce("timestamp", receivedAt - (sentAt - originalTimestamp), originalTimestamp, receivedAt) AS "timestamp",
    channel,
    context->>'ip' AS context_ip, context->>'userAgent' AS context_user_agent,
    context->'library'->>'name' AS context_library_name, context->'library'->>'version' AS context_library_version,
    {reserved},
    try_cast(coalesce(traits->>'createdAt', traits->>'created_at') AS TIMESTAMPTZ) AS created_at,
    {address},
    json_merge_patch(traits, '{patch}') AS extra_traits,
    json_merge_patch(context, '{{"ip":null,"userAgent":null,"library":null}}') AS extra_context,
    json_object('integrations', integrations, 'version', version, '_metadata', _metadata) AS extra,
    strftime(coalesce(receivedAt, "timestamp"), '%Y-%m-%d') AS dt
  FROM read_json('{src}', format = 'newline_delimited', columns = {{
    type: 'VARCHAR', messageId: 'VARCHAR', groupId: 'VARCHAR', userId: 'VARCHAR', anonymousId: 'VARCHAR',
    channel: 'VARCHAR', context: 'JSON', integrations: 'JSON', originalTimestamp: 'TIMESTAMPTZ',
    sentAt: 'TIMESTAMPTZ', receivedAt: 'TIMESTAMPTZ', "timestamp": 'TIMESTAMPTZ', traits: 'JSON',
    version: 'JSON', _metadata: 'JSON'}})
  WHERE type = 'group'
) TO '{out}' (FORMAT PARQUET, PARTITION_BY (dt), COMPRESSION zstd)
"""


def tuned_sql(src, out):
    """`sql` with the reserved traits extracted by one json_extract_string call over a list of paths."""
    paths, index = [], {}
    for keys in list(RESERVED_TEXT.values()) + [["createdAt", "created_at"]]:
        for k in keys:
            index[("t", k)] = len(paths) + 1
            paths.append(f"$.\"{k}\"")
    for keys in ADDRESS.values():
        for k in keys:
            index[("a", k)] = len(paths) + 1
            paths.append(f"$.address.\"{k}\"")

    def pick(kind, keys):
        items = [f"tv[{index[(kind, k)]}]" for k in keys]
        return items[0] if len(items) == 1 else "coalesce(" + ", ".join(items) + ")"

    plain = sql(src, out)
    reserved = ",\n    ".join(f"{pick('t', keys)} AS {col}" for col, keys in RESERVED_TEXT.items())
    address = ",\n    ".join(f"{pick('a', keys)} AS address_{col}" for col, keys in ADDRESS.items())
    head, rest = plain.split("    coalesce(traits->>'name'", 1)
    rest = rest[rest.index("json_merge_patch(traits"):]
    body = (head + "    " + reserved + ",\n    try_cast(" + pick("t", ["createdAt", "created_at"])
            + " AS TIMESTAMPTZ) AS created_at,\n    " + address + ",\n    " + rest)
    path_list = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    # Extract once per row in a subquery over the same read_json.
    frm = body.index("  FROM read_json(")
    where = body.index("  WHERE type = 'group'")
    source = body[frm:where]
    body = (body[:frm] + "  FROM (SELECT *, json_extract_string(traits, " + path_list + ") AS tv\n  "
            + source.strip() + "\n  WHERE type = 'group')\n" + body[where + len("  WHERE type = 'group'\n"):])
    return body


def main():
    src, out = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if "--threads" in sys.argv:
        con.execute(f"SET threads = {int(sys.argv[sys.argv.index('--threads') + 1])}")
    con.execute((tuned_sql if "--tuned" in sys.argv else sql)(src, out))


if __name__ == "__main__":
    if "--print" in sys.argv:
        print((tuned_sql if "--tuned" in sys.argv else sql)(sys.argv[1], sys.argv[2]))
    else:
        main()
