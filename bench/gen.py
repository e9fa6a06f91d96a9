#!/usr/bin/env python3
"""Deterministic generator of realistic Segment Group events for the benchmark.

    python3 bench/gen.py N OUT.ndjson [--seed S] [--distinct-groups] [--start YYYY-MM-DD --days D]

About 850 bytes a line: reserved traits in both spellings (name/Name, createdAt/created_at, email/e-mail ...),
addresses (postalCode/postal_code, leftover line2), custom traits, context with library, integrations and
_metadata extras, and 30 days of receivedAt from 2026-10-01 (or D days from --start, for nights of a nightly
job; their messageIds then carry the start day, so nights never share one). Same arguments, same bytes. Events
fall on 100,000 groups, or with --distinct-groups each event has its own group (for the accounts benchmark: N
events, N groups).
"""
import json
import random
import sys

INDUSTRIES = ["Technology", "Retail", "Finance", "Healthcare", "Media", "Manufacturing", "Education", "Logistics"]
PLANS = ["free", "startup", "business", "enterprise", "trial"]
CITIES = [("Paris", "FR"), ("Oslo", "NO"), ("Austin", "US"), ("Lagos", "NG"), ("Osaka", "JP"), ("Lima", "PE")]
STREETS = ["Main St", "Rue de Rivoli", "Karl Johans gate", "Congress Ave", "Broad St", "Midosuji"]
UAS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/119.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Firefox/121.0",
]
LIBS = [("analytics.js", "4.1.0"), ("analytics-node", "6.2.0"), ("analytics-ruby", "2.4.1")]
BASE = 1_790_812_800  # 2026-10-01T00:00:00Z


def iso(t_ms):
    s, ms = divmod(t_ms, 1000)
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % ms


def event(rng, i, distinct_groups=False, base=BASE, days=30, id_prefix=""):
    g = rng.randrange(100_000)
    if distinct_groups:
        g = i
    city, country = rng.choice(CITIES)
    recv = base * 1000 + rng.randrange(days * 86_400_000)
    sent = recv - rng.randrange(50, 2000)
    orig = sent - rng.randrange(0, 50)
    alt = rng.random() < 0.5  # the other spelling of reserved traits
    traits = {
        ("Name" if alt else "name"): f"Co {g:05d}",
        "industry": rng.choice(INDUSTRIES),
        "employees": rng.randrange(1, 50_000),
        "plan": rng.choice(PLANS),
        ("e-mail" if alt else "email"): f"ops@co{g:05d}.example",
        "website": f"https://co{g:05d}.example",
        ("created_at" if alt else "createdAt"): iso((BASE - rng.randrange(3 * 365 * 86_400)) * 1000),
        "address": {
            "street": f"{rng.randrange(1, 999)} {rng.choice(STREETS)}",
            "city": city,
            ("postal_code" if alt else "postalCode"): str(rng.randrange(10_000, 99_999)),
            "country": country,
            "line2": f"Ste {rng.randrange(1, 500)}",
        },
        "total billed": rng.randrange(1_000_000),
    }
    lib = rng.choice(LIBS)
    ev = {
        "type": "group",
        "messageId": f"{id_prefix}{i:09d}-{rng.randrange(16**8):08x}",
        "groupId": f"grp-{g:06d}",
        "userId": f"user-{rng.randrange(10**7):07d}",
        "anonymousId": f"{rng.randrange(16**12):012x}",
        "channel": rng.choice(["browser", "server", "mobile"]),
        "context": {
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "userAgent": rng.choice(UAS),
            "library": {"name": lib[0], "version": lib[1]},
            "locale": "en",
        },
        "integrations": {"All": True},
        "originalTimestamp": iso(orig),
        "sentAt": iso(sent),
        "receivedAt": iso(recv),
        "timestamp": iso(orig),
        "traits": traits,
        "version": 2,
        "_metadata": {"bundled": ["Segment.io"]},
    }
    return json.dumps(ev, separators=(",", ":"))


def main():
    n = int(sys.argv[1])
    out = sys.argv[2]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
    distinct = "--distinct-groups" in sys.argv
    base, days, prefix = BASE, 30, ""
    if "--start" in sys.argv:
        import calendar
        import time
        start = sys.argv[sys.argv.index("--start") + 1]
        base = calendar.timegm(time.strptime(start, "%Y-%m-%d"))
        days = int(sys.argv[sys.argv.index("--days") + 1]) if "--days" in sys.argv else 1
        prefix = start + "-"
    rng = random.Random(seed)
    with open(out, "w", buffering=1 << 20) as f:
        for i in range(n):
            f.write(event(rng, i, distinct, base, days, prefix))
            f.write("\n")


if __name__ == "__main__":
    main()
