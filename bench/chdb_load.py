#!/usr/bin/env python3
"""The second peer: ClickHouse (embedded, through chDB) doing the same job.

    python bench/chdb_load.py INPUT OUT_DIR

One `INSERT INTO FUNCTION file(...) PARTITION BY dt SELECT ... FROM file(INPUT, JSONEachRow)` that keeps Group
calls and produces the same columns as group-loader: the reserved traits in both spellings (strings as text,
other values as their JSON), the address subfields, context columns, the clock-skew timestamp, and JSON columns
of the other traits and context keys (rebuilt from the raw key/value pairs without the reserved keys). zstd
Parquet, one folder per day (`OUT/dt=YYYY-MM-DD/`).
"""
import os
import sys

import chdb

RESERVED_TEXT = {
    "name": ["name", "Name"], "industry": ["industry"], "employees": ["employees"], "plan": ["plan"],
    "email": ["email", "e-mail"], "phone": ["phone"], "website": ["website"], "avatar": ["avatar"],
    "description": ["description"], "trait_id": ["id"],
}
ADDRESS = {"street": ["street"], "city": ["city"], "state": ["state"], "postal_code": ["postalCode", "postal_code"],
           "country": ["country"]}
REMOVED = ["name", "Name", "industry", "employees", "plan", "email", "e-mail", "phone", "website", "avatar",
           "description", "id", "createdAt", "created_at", "address"]


def value(obj, *path):
    """A JSON value as text: a string's own text, any other value's JSON, NULL when absent or null."""
    p = ", ".join(f"'{k}'" for k in path)
    return (f"if(JSONType({obj}, {p}) IN ('Null', 'Nothing') OR NOT JSONHas({obj}, {p}), NULL, "
            f"if(JSONType({obj}, {p}) = 'String', JSONExtractString({obj}, {p}), JSONExtractRaw({obj}, {p})))")


def first(obj, keys, *prefix):
    items = [value(obj, *prefix, k) for k in keys]
    return items[0] if len(items) == 1 else "coalesce(" + ", ".join(items) + ")"


def without(obj, keys):
    names = ", ".join(f"'{k}'" for k in keys)
    return (f"if({obj} = '', NULL, concat('{{', arrayStringConcat(arrayMap(kv -> concat(toJSONString(kv.1), ':', "
            f"kv.2), arrayFilter(kv -> kv.1 NOT IN ({names}), JSONExtractKeysAndValuesRaw({obj}))), ','), '}}'))")


def time(col):
    return f"parseDateTime64BestEffortOrNull(nullIf({col}, ''), 3, 'UTC')"


def sql(src, out):
    reserved = ",\n    ".join(f"{first('traits', keys)} AS {col}" for col, keys in RESERVED_TEXT.items())
    address = ",\n    ".join(f"{first('traits', keys, 'address')} AS address_{col}" for col, keys in ADDRESS.items())
    created = f"parseDateTime64BestEffortOrNull({first('traits', ['createdAt', 'created_at'])}, 3, 'UTC')"
    skew = (f"{time('receivedAt')} - toIntervalMillisecond(dateDiff('millisecond', {time('originalTimestamp')}, "
            f"{time('sentAt')}))")
    return f"""
INSERT INTO FUNCTION file('{out}/dt={{_partition_id}}/data.parquet', 'Parquet')
PARTITION BY dt
SELECT
    nullIf(messageId, '') AS id, nullIf(groupId, '') AS group_id, nullIf(userId, '') AS user_id,
    nullIf(anonymousId, '') AS anonymous_id,
    {time('receivedAt')} AS received_at, {time('sentAt')} AS sent_at,
    {time('originalTimestamp')} AS original_timestamp,
    coalesce({time('timestamp')}, {skew}, {time('originalTimestamp')}, {time('receivedAt')}) AS timestamp,
    nullIf(channel, '') AS channel,
    {value('context', 'ip')} AS context_ip, {value('context', 'userAgent')} AS context_user_agent,
    {value('context', 'library', 'name')} AS context_library_name,
    {value('context', 'library', 'version')} AS context_library_version,
    {reserved},
    {created} AS created_at,
    {address},
    {without('traits', REMOVED)} AS extra_traits,
    {without('context', ['ip', 'userAgent', 'library'])} AS extra_context,
    concat('{{"integrations":', if(integrations = '', 'null', integrations), ',"version":',
           if(version = '', 'null', version), ',"_metadata":', if(_metadata = '', 'null', _metadata), '}}') AS extra,
    formatDateTime(coalesce(received_at, timestamp), '%Y-%m-%d') AS dt
FROM file('{src}', 'JSONEachRow', 'type String, messageId String, groupId String, userId String,
    anonymousId String, channel String, context String, integrations String, originalTimestamp String,
    sentAt String, receivedAt String, timestamp String, traits String, version String, _metadata String')
WHERE type = 'group'
SETTINGS input_format_json_read_objects_as_strings = 1, input_format_json_read_numbers_as_strings = 1,
    input_format_skip_unknown_fields = 1, output_format_parquet_compression_method = 'zstd',
    engine_file_truncate_on_insert = 1
"""


def main():
    src, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    chdb.query(sql(src, out))


if __name__ == "__main__":
    if "--print" in sys.argv:
        print(sql(sys.argv[1], sys.argv[2]))
    else:
        main()
