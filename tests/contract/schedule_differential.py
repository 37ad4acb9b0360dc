"""Differential test of Docket's fire times against independent implementations.

RRULE: python-dateutil expands the rule in local (wall-clock) time, and zoneinfo places each local
time on the time line as RFC 5545 §3.3.5 says: a time in a DST gap read with the offset from
before the gap (so shifted by the gap), a repeated time at its first occurrence (fold=0).

Cron: a reference written here from the documented convention (Vixie cron's, docs/scheduling.md),
walking the time line minute by minute the way cron's own loop does, with nothing shared with
Docket's implementation: a minute fires when its local time matches; in a repeated hour, a job with
a fixed minute and hour (neither field starting with `*`) fires at the first pass only; after a
gap, a fixed job whose time the gap skipped fires once, at the gap's end; day-of-month and
day-of-week are OR-ed when both are restricted, AND-ed when either starts with `*`.

Cases are generated from a fixed seed across zones with DST changes (the four whose clocks move at
local midnight among them) and windows around their changes in the coming year, and sent to a running Docket's
POST /tasks/preview. Run by tests/api/contract.rs with DOCKET_URL and DOCKET_TOKEN set.
"""

import datetime as dt
import json
import os
import random
import sys
import urllib.error
import urllib.request
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

UTC = dt.timezone.utc
ZONES = [
    "America/Santiago", "America/Havana", "Asia/Beirut", "Africa/Cairo",  # change at local midnight
    "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Pacific/Chatham",
    "America/Sao_Paulo", "Asia/Tehran", "Europe/Chisinau", "UTC",
]
# The known, documented differences between Docket and the references (docs/scheduling.md):
# 1. Docket computes no fire time at or after 2100-01-01 (its zone data ends there), so the
#    references' times are cut at that horizon.
HORIZON = dt.datetime(2100, 1, 1, tzinfo=UTC)

# Windows lie in the coming year, so that no rule has ended before the server's now.
YEAR = dt.datetime.now(UTC).year + 1
URL = os.environ["DOCKET_URL"].rstrip("/")
TOKEN = os.environ["DOCKET_TOKEN"]
COUNT = 50


def preview(kind, expr, zone, after):
    body = json.dumps({"schedule_kind": kind, "schedule_expr": expr, "timezone": zone,
                       "after": after.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": COUNT}).encode()
    request = urllib.request.Request(f"{URL}/api/v1/tasks/preview", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as refused:
        reason = refused.read().decode()
        if refused.code == 422 and "no occurrence between now and" in reason:
            return []  # refused because it never fires: the reference must find nothing either
        raise AssertionError(f"{kind} {expr!r} in {zone}: {refused.code} {reason}")
    return [dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in answer["next_fire_times"]]


def transitions(zone, year):
    """The instants in `year` at which the zone's UTC offset changes."""
    tz = ZoneInfo(zone)
    found = []
    t = dt.datetime(year, 1, 1, tzinfo=UTC)
    offset = t.astimezone(tz).utcoffset()
    while t.year == year:
        step = t + dt.timedelta(minutes=15)
        if step.astimezone(tz).utcoffset() != offset:
            found.append(step)
            offset = step.astimezone(tz).utcoffset()
        t = step
    return found


def window_start(zone, rng):
    changes = transitions(zone, YEAR)
    if changes and rng.random() < 0.85:
        return rng.choice(changes) - dt.timedelta(minutes=rng.randrange(0, 36 * 60, 15))
    return dt.datetime(YEAR, rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24), tzinfo=UTC)


def placed(local, tz):
    """RFC 5545: a local time on the time line (fold=0: before-gap offset, first of a fold)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def random_rrule(rng, after, tz):
    freq = rng.choice(["DAILY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY", "HOURLY", "MINUTELY"])
    local_after = after.astimezone(tz).replace(tzinfo=None)
    back = {"MINUTELY": dt.timedelta(hours=rng.randrange(1, 30)),
            "HOURLY": dt.timedelta(days=rng.randrange(1, 20))}.get(freq, dt.timedelta(days=rng.randrange(1, 400)))
    start = max(local_after - back, dt.datetime(YEAR, 1, 1)).replace(second=0, microsecond=0)
    start = start.replace(hour=rng.choice([0, 0, 1, 2, 3, start.hour]), minute=rng.choice([0, 15, 30, 45]))
    parts = [f"FREQ={freq}"]
    if freq == "MINUTELY":
        parts.append("INTERVAL=" + str(rng.choice([5, 15, 20, 30])))
    elif rng.random() < 0.3:
        parts.append(f"INTERVAL={rng.randrange(2, 4)}")
    if freq in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY") and rng.random() < 0.5:
        parts.append("BYHOUR=" + ",".join(str(h) for h in sorted(rng.sample([0, 1, 2, 3, 12, 23], rng.randrange(1, 3)))))
        parts.append("BYMINUTE=" + ",".join(str(m) for m in sorted(rng.sample([0, 15, 30, 45], rng.randrange(1, 3)))))
    if freq == "HOURLY" and rng.random() < 0.5:
        parts.append("BYMINUTE=" + ",".join(str(m) for m in sorted(rng.sample([0, 10, 30, 45], rng.randrange(1, 3)))))
    if freq in ("WEEKLY", "DAILY") and rng.random() < 0.4:
        parts.append("BYDAY=" + ",".join(rng.sample(["MO", "TU", "WE", "TH", "FR", "SA", "SU"], rng.randrange(1, 4))))
    if freq == "MONTHLY":
        choice = rng.random()
        if choice < 0.3:
            parts.append(f"BYDAY={rng.choice([1, 2, -1, -5, 5])}{rng.choice(['MO', 'FR', 'SU'])}")
        elif choice < 0.6:
            parts.append(f"BYMONTHDAY={rng.choice([1, 15, 28, 31, -1])}")
        elif choice < 0.75:
            parts.append("BYDAY=MO,TU,WE,TH,FR;BYSETPOS=" + str(rng.choice([1, -1])))
    if freq == "YEARLY" and rng.random() < 0.5:
        parts.append(f"BYMONTH={local_after.month}")
        if rng.random() < 0.5:
            parts.append(f"BYDAY={rng.choice([1, -1, 2])}SU")
    if rng.random() < 0.25:
        parts.append(f"COUNT={rng.randrange(5, 400)}")
    elif rng.random() < 0.2:
        until = after + dt.timedelta(days=rng.randrange(1, 10))
        parts.append("UNTIL=" + until.replace(hour=12, minute=0).strftime("%Y%m%dT%H%M%SZ"))
    return start, ";".join(parts)


def rrule_reference(start, rule, tz, after):
    text = f"DTSTART:{start.strftime('%Y%m%dT%H%M%S')}\nRRULE:{rule}"
    if "UNTIL=" in rule:
        # Docket compares UNTIL in local time, as dateutil does with a floating DTSTART.
        value = rule.split("UNTIL=")[1].split(";")[0]
        local = dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).astimezone(tz)
        text = text.replace(value, local.strftime("%Y%m%dT%H%M%S"))
    fires = set()
    local_after = after.astimezone(tz).replace(tzinfo=None) - dt.timedelta(hours=3)
    for local in rrulestr(text).xafter(local_after, count=None, inc=True):
        at = placed(local, tz)
        if at > after:
            fires.add(at)
        if len(fires) >= COUNT and local > max(sorted(fires)[:COUNT]).astimezone(tz).replace(tzinfo=None) + dt.timedelta(hours=3):
            break
    return sorted(fires)[:COUNT]


CRON_FIELDS = {
    "minute": ["*", "*/15", "0", "30", "15,45", "0-59/20", "5", "59"],
    "hour": ["*", "*/2", "0", "1", "2", "3", "0,2", "1-3", "23", "0-3/2"],
    "dom": ["*", "*", "*", "1", "*/2", "15", "1-7", "28-31"],
    "dow": ["*", "*", "*", "0", "1-5", "*/2", "6", "5"],
}


def expand(field, low, high):
    values = set()
    for item in field.split(","):
        body, _, step = item.partition("/")
        step = int(step) if step else 1
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first, last = (int(x) for x in body.split("-"))
        else:
            first = last = int(body)
        values.update(range(first, last + 1, step))
    return values


def cron_matcher(expr):
    minute, hour, dom, month, dow = expr.split()
    minutes, hours = expand(minute, 0, 59), expand(hour, 0, 23)
    doms, months, dows = expand(dom, 1, 31), expand(month, 1, 12), {d % 7 for d in expand(dow, 0, 6)}
    both = dom.startswith("*") or dow.startswith("*")

    def matches(local):
        if local.minute not in minutes or local.hour not in hours or local.month not in months:
            return False
        day, weekday = local.day in doms, (local.weekday() + 1) % 7 in dows
        return (day and weekday) if both else (day or weekday)

    fixed = not minute.startswith("*") and not hour.startswith("*")
    return matches, fixed


def cron_reference(expr, tz, after, horizon):
    matches, fixed = cron_matcher(expr)
    fires = []
    t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    previous = (t - dt.timedelta(minutes=1)).astimezone(tz)
    while t <= horizon:
        here = t.astimezone(tz)
        local = here.replace(tzinfo=None)
        skipped = local - previous.replace(tzinfo=None) - dt.timedelta(minutes=1)
        fire = matches(local) and (here.fold == 0 or not fixed)
        if skipped > dt.timedelta(0) and fixed:
            # Clocks jumped: a fixed job whose local time fell in the gap runs now, once.
            gap = previous.replace(tzinfo=None) + dt.timedelta(minutes=1)
            while gap < local and not fire:
                fire = matches(gap)
                gap += dt.timedelta(minutes=1)
        if fire:
            fires.append(t)
        previous = here
        t += dt.timedelta(minutes=1)
    return fires


def main():
    rng = random.Random(20271207)
    checked = {"rrule": 0, "cron": 0}
    failures = []
    for case in range(int(os.environ.get("CASES", "480"))):
        zone = ZONES[(case // 2) % len(ZONES)]
        tz = ZoneInfo(zone)
        after = window_start(zone, rng)
        if case % 2 == 0:
            start, rule = random_rrule(rng, after, tz)
            expr = f"DTSTART:{start.strftime('%Y%m%dT%H%M%S')}\nRRULE:{rule}"
            key = ("rrule", expr, zone, after.isoformat())
            expected = rrule_reference(start, rule, tz, after)
            got = preview("rrule", expr, zone, after)
        else:
            fields = [rng.choice(CRON_FIELDS[f]) for f in ("minute", "hour", "dom")]
            month = rng.choice(["*", str(after.astimezone(tz).month)])
            expr = " ".join(fields + [month, rng.choice(CRON_FIELDS["dow"])])
            key = ("cron", expr, zone, after.isoformat())
            got = preview("cron", expr, zone, after)
            horizon = after + dt.timedelta(days=4)
            expected = cron_reference(expr, tz, after, horizon)[:COUNT]
            if len(expected) < COUNT:
                got = [t for t in got if t <= horizon]
        checked[key[0]] += 1
        expected = [t for t in expected if t < HORIZON]
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            failures.append(f"{key}: first difference at #{first}: docket "
                            f"{[t.isoformat() for t in got[first:first + 3]]} reference "
                            f"{[t.isoformat() for t in expected[first:first + 3]]} "
                            f"({len(got)} vs {len(expected)} times)")
    for failure in failures:
        print(failure)
    print(f"schedule differential: {checked['rrule']} RRULE and {checked['cron']} cron cases, "
          f"{len(failures)} differences")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
