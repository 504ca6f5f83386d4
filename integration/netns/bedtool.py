#!/usr/bin/env python3
"""Helpers for the netns test bed (lib.sh) that are awkward in bash.

  probe    HOST PORT OUT   client loop: an HTTP GET to HOST:PORT every 10 ms, 50 ms timeout,
                           one line per attempt: "epoch_ms ok BOX" or "epoch_ms fail REASON"
  outage   FILE FAULT_MS   client-observed outage: from the fault to the first success after
                           the last failure (0 if nothing failed); fails if never recovered
  failures FILE FROM TO    number of failed probe attempts in [FROM, TO]
  events   VIP BOX=LOG...  address add/delete events of VIP from `ip -ts monitor address`
                           logs: "epoch_ms BOX +|-", in time order
  holders  VIP T BOX=LOG.. which boxes held VIP at time T (ms), from the monitor logs
  overlap  VIP FROM TO BOX=LOG...  "MAX_HOLDERS MS_WITH_2_OR_MORE" over [FROM, TO]
  get      URL [FIELD]     GET a JSON document (raftvip status); print FIELD or all of it
  chaos-report PROBE FAULTS VIP FROM TO [--LIMIT=VALUE...] BOX=LOG...
                           scripts/chaos.sh's verdict: availability, outages, two-holder and
                           zero-holder episodes (overall and per fault type) over [FROM, TO];
                           FAULTS has "start_ms heal_ms type box" lines; exits 1 past a limit
  flood    SECONDS CONNS BODY_MIB HOST:PORT...
                           abuse of raftvip's peer port, bounded in time: per target, hold
                           CONNS idle connections (reopening any the server closes) and post
                           unsigned BODY_MIB junk bodies back to back on 4 connections; prints a
                           JSON summary per target
  metrics  URL PREFIX...   GET Prometheus text; print the samples whose name starts with a
                           PREFIX, one "name{labels} value" per line

Times are Unix epoch milliseconds; every namespace shares the machine's clock, so the probe's
times, the monitors' times and the fault times in bash ($EPOCHREALTIME) compare directly.
"""

import asyncio
import datetime
import errno
import json
import os
import resource
import socket
import sys
import time
import urllib.request

# The probe's cadence and patience, from the test plan: an attempt every 10 ms, each given 50 ms.
PROBE_INTERVAL_S = 0.010
PROBE_TIMEOUT_S = 0.050


def now_ms():
    return int(time.time() * 1000)


def probe_once(host, port):
    """One HTTP/1.0 GET; returns (ok, box-name-or-reason)."""
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, "timeout"
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except socket.timeout:
        return False, "timeout"
    except OSError as e:
        return False, (e.strerror or str(e)).replace(" ", "_")
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        return False, "http_" + (status[0].decode() if status else "garbage")
    return True, body.decode(errors="replace").strip().split()[0] if body.strip() else "?"


def cmd_probe(host, port, out):
    port = int(port)
    with open(out, "a", buffering=1) as f:
        next_at = time.monotonic()
        while True:
            t = now_ms()
            ok, what = probe_once(host, port)
            f.write(f"{t} {'ok' if ok else 'fail'} {what}\n")
            next_at += PROBE_INTERVAL_S
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()


def read_probe(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                rows.append((int(parts[0]), parts[1] == "ok", parts[2] if len(parts) > 2 else ""))
    return rows


def cmd_outage(path, fault_ms):
    fault = int(fault_ms)
    rows = [r for r in read_probe(path) if r[0] >= fault]
    if not rows:
        sys.exit(f"outage: no probe attempts after the fault in {path}")
    fails = [r for r in rows if not r[1]]
    if not fails:
        print(0)
        return
    last_fail = fails[-1][0]
    after = [r for r in rows if r[1] and r[0] > last_fail]
    if not after:
        sys.exit(f"outage: the client never recovered (last failure at +{last_fail - fault} ms)")
    print(after[0][0] - fault)


def cmd_failures(path, start, end):
    print(sum(1 for t, ok, _ in read_probe(path) if int(start) <= t <= int(end) and not ok))


def parse_monitor(path, vip, precise=False):
    """Yields (epoch_ms, added) for VIP from an `ip -ts monitor address` log; with precise,
    epoch_ms is a float with the log's microseconds."""
    with open(path) as f:
        for line in f:
            if not line.startswith("["):
                continue
            stamp, _, rest = line[1:].partition("] ")
            fields = rest.split()
            try:
                i = fields.index("inet") if "inet" in fields else fields.index("inet6")
            except ValueError:
                continue
            if fields[i + 1].split("/")[0] != vip:
                continue
            t = datetime.datetime.fromisoformat(stamp).timestamp()
            yield (t * 1000 if precise else int(t * 1000)), fields[0] != "Deleted"


def events(vip, specs, precise=False):
    """Changes of who holds VIP, in time order. A lease renewal (the kernel reports a
    replaced address as added again) is not a change, nor is a delete of an absent one."""
    evs = []
    for spec in specs:
        box, _, path = spec.partition("=")
        held = False
        for t, added in parse_monitor(path, vip, precise):
            if added != held:
                evs.append((t, box, added))
                held = added
    evs.sort(key=lambda e: e[0])
    return evs


def cmd_events(vip, *specs):
    for t, box, added in events(vip, specs):
        print(t, box, "+" if added else "-")


def cmd_holders(vip, at, *specs):
    held = set()
    for t, box, added in events(vip, specs):
        if t > int(at):
            break
        (held.add if added else held.discard)(box)
    print(" ".join(sorted(held)))


def cmd_overlap(vip, start, end, *specs):
    start, end = int(start), int(end)
    held, evs = set(), events(vip, specs)
    for t, box, added in evs:
        if t <= start:
            (held.add if added else held.discard)(box)
    max_n, multi_ms, prev = len(held), 0, start
    for t, box, added in evs:
        if start < t <= end:
            if len(held) >= 2:
                multi_ms += t - prev
            (held.add if added else held.discard)(box)
            prev = t
            max_n = max(max_n, len(held))
    if len(held) >= 2:
        multi_ms += end - prev
    print(max_n, multi_ms)


def cmd_get(url, field=None):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            doc = json.load(r)
    except (OSError, ValueError) as e:
        sys.exit(f"get {url}: {e}")
    if not field:
        print(json.dumps(doc))
        return
    value = doc
    for key in field.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    print("null" if value is None else json.dumps(value) if not isinstance(value, str) else value)


def episodes(evs, start, end, want):
    """[(from, to)] within [start, end] while want(number of holders) holds."""
    held, out, since = set(), [], None
    for t, box, added in evs:
        if t > start:
            break
        (held.add if added else held.discard)(box)
    if want(len(held)):
        since = start
    for t, box, added in evs:
        if not start < t <= end:
            continue
        (held.add if added else held.discard)(box)
        if want(len(held)) and since is None:
            since = t
        elif not want(len(held)) and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, end))
    return out


def outages(rows):
    """[(first failure, first success after it)] of a probe log (open-ended: last attempt)."""
    out, since = [], None
    for t, ok, _ in rows:
        if not ok and since is None:
            since = t
        elif ok and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, rows[-1][0]))
    return out


def fault_at(faults, t):
    """The type of the latest fault started at or before t ("none" before the first)."""
    kind = "none"
    for start, _, k, _ in faults:
        if start <= t:
            kind = k
    return kind


# Limits of chaos-report and what they bound; a negative value turns a limit off.
CHAOS_LIMITS = {
    "min-availability": "availability %, at least",
    "max-outage-ms": "longest client outage",
    "max-two-holder-ms": "longest two-holder episode (any fault)",
    "max-two-holder-other": "two-holder episodes after faults other than kill/stop",
    "max-panics": "panics in the raftvip logs",
    "panics": "(input) panics counted by chaos.sh",
    "errors": "(input) ERROR lines counted by chaos.sh",
}


def cmd_chaos_report(probe, faults_file, vip, start, end, *args):
    start, end = int(start), int(end)
    limits = {}
    specs = []
    for a in args:
        if a.startswith("--"):
            key, _, value = a[2:].partition("=")
            if key not in CHAOS_LIMITS:
                sys.exit(f"chaos-report: unknown limit --{key} (known: {', '.join(CHAOS_LIMITS)})")
            limits[key] = float(value)
        else:
            specs.append(a)
    faults = []
    with open(faults_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                faults.append((int(parts[0]), int(parts[1]), parts[2], parts[3]))
    rows = [r for r in read_probe(probe) if start <= r[0] <= end]
    if not rows:
        sys.exit(f"chaos-report: no probe attempts in {probe}")
    # Microseconds: a handover within the same millisecond is not an overlap.
    evs = events(vip, specs, precise=True)
    two = episodes(evs, start, end, lambda n: n >= 2)
    zero = episodes(evs, start, end, lambda n: n == 0)
    outs = outages(rows)
    ok = sum(1 for r in rows if r[1])
    availability = 100.0 * ok / len(rows)

    def longest(eps):
        return round(max((b - a for a, b in eps), default=0))

    kinds = sorted({k for _, _, k, _ in faults} | {fault_at(faults, a) for a, _ in two + zero + outs})
    print(f"faults={len(faults)} duration_s={(end - start) / 1000:.0f} probe_attempts={len(rows)}")
    print(f"availability={availability:.3f}% longest_outage_ms={longest(outs)} outages={len(outs)}")
    print(f"two_holder_episodes={len(two)} longest_two_holder_ms={longest(two)}")
    print(f"zero_holder_episodes={len(zero)} longest_zero_holder_ms={longest(zero)}")
    print(f"panics={int(limits.get('panics', 0))} error_lines={int(limits.get('errors', 0))}")
    print(f"{'fault':<12} {'count':>5} {'outages':>7} {'max_out_ms':>10} {'two_holder':>10} "
          f"{'max_two_ms':>10} {'zero_holder':>11} {'max_zero_ms':>11}")
    for kind in kinds:
        def of(eps):
            return [e for e in eps if fault_at(faults, e[0]) == kind]
        o, t, z = of(outs), of(two), of(zero)
        n = sum(1 for f in faults if f[2] == kind)
        print(f"{kind:<12} {n:>5} {len(o):>7} {longest(o):>10} {len(t):>10} "
              f"{longest(t):>10} {len(z):>11} {longest(z):>11}")
    for a, b in two:
        print(f"two-holder episode: {b - a:.1f} ms from {a:.0f} after fault '{fault_at(faults, a)}'")

    broken = []

    def check(key, value, ok_if):
        limit = limits.get(key)
        if limit is not None and limit >= 0 and not ok_if(value, limit):
            broken.append(f"{CHAOS_LIMITS[key]}: {value} (limit {limit:g})")

    check("min-availability", round(availability, 3), lambda v, l: v >= l)
    check("max-outage-ms", longest(outs), lambda v, l: v <= l)
    check("max-two-holder-ms", longest(two), lambda v, l: v <= l)
    other = [e for e in two if fault_at(faults, e[0]) not in ("kill", "stop")]
    check("max-two-holder-other", len(other), lambda v, l: v <= l)
    check("max-panics", int(limits.get("panics", 0)), lambda v, l: v <= l)
    for b in broken:
        print(f"LIMIT EXCEEDED: {b}")
    sys.exit(1 if broken else 0)


# The flood's posters per target, and the pause before an idle connection the server closed is
# reopened (so the flood is a steady 5,000 held connections, not a connect storm of its own).
FLOOD_POSTERS = 4
FLOOD_REOPEN_S = 0.5
# Patient connects: a SYN the full listen queue dropped is retried by the kernel after 1 s, 3 s.
FLOOD_CONNECT_S = 10


def flood_error(stats, e):
    key = type(e).__name__ if not getattr(e, "errno", None) else errno.errorcode.get(e.errno, str(e.errno))
    stats["errors"][key] = stats["errors"].get(key, 0) + 1


async def flood_idle(host, port, stop, stats):
    while time.monotonic() < stop:
        try:
            stats["connects"] += 1
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), FLOOD_CONNECT_S)
        except (OSError, asyncio.TimeoutError) as e:
            flood_error(stats, e)
            await asyncio.sleep(FLOOD_REOPEN_S)
            continue
        stats["open"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])
        try:
            await asyncio.wait_for(reader.read(1), max(0.0, stop - time.monotonic()))
            stats["closed_by_server"] += 1
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            stats["open"] -= 1
            writer.close()
        await asyncio.sleep(FLOOD_REOPEN_S)


async def flood_post(host, port, stop, body_bytes, stats):
    chunk = os.urandom(64 << 10)
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (OSError, asyncio.TimeoutError) as e:
            flood_error(stats, e)
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(f"POST /raft/snapshot HTTP/1.1\r\nHost: {host}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {body_bytes}\r\n\r\n".encode())
            sent = 0
            while sent < body_bytes and time.monotonic() < stop:
                n = min(len(chunk), body_bytes - sent)
                writer.write(chunk[:n])
                await asyncio.wait_for(writer.drain(), 5)
                sent += n
                stats["posted_bytes"] += n
        except (OSError, asyncio.TimeoutError) as e:
            # The server answers and closes without reading a refused body: expected.
            flood_error(stats, e)
        try:
            head = await asyncio.wait_for(reader.read(64), 2)
            status = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else "none"
            stats["answers"][status] = stats["answers"].get(status, 0) + 1
        except (OSError, asyncio.TimeoutError) as e:
            flood_error(stats, e)
        finally:
            writer.close()
        stats["posts"] += 1


async def flood(seconds, conns, body_bytes, targets):
    stop = time.monotonic() + seconds
    stats = {}
    tasks = []
    for host, port in targets:
        st = stats[f"{host}:{port}"] = {
            "connects": 0, "connect_errors": 0, "open": 0, "max_open": 0,
            "closed_by_server": 0, "posts": 0, "posted_bytes": 0, "answers": {}, "errors": {},
        }
        tasks.append([flood_idle(host, port, stop, st) for _ in range(conns)]
                     + [flood_post(host, port, stop, body_bytes, st) for _ in range(FLOOD_POSTERS)])
    # Interleave the targets, so every box is flooded from the first second.
    await asyncio.gather(*(t for group in zip(*tasks) for t in group))
    return stats


def cmd_flood(seconds, conns, body_mib, *targets):
    # Up to the hard limit: the flooder itself needs a descriptor per held connection.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parsed = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets]
    stats = asyncio.run(flood(float(seconds), int(conns), int(float(body_mib) * (1 << 20)), parsed))
    for target, st in stats.items():
        del st["open"]
        print(target, json.dumps(st, sort_keys=True))


def cmd_metrics(url, *prefixes):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            text = r.read().decode()
    except (OSError, ValueError) as e:
        sys.exit(f"metrics {url}: {e}")
    for line in text.splitlines():
        if not line.startswith("#") and line.startswith(prefixes):
            print(line)


COMMANDS = {
    "probe": cmd_probe,
    "outage": cmd_outage,
    "failures": cmd_failures,
    "events": cmd_events,
    "holders": cmd_holders,
    "overlap": cmd_overlap,
    "get": cmd_get,
    "chaos-report": cmd_chaos_report,
    "metrics": cmd_metrics,
    "flood": cmd_flood,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    try:
        COMMANDS[sys.argv[1]](*sys.argv[2:])
    except TypeError as e:
        sys.exit(f"{sys.argv[1]}: {e}\n{__doc__}")
    except KeyboardInterrupt:
        pass
