#!/usr/bin/env python3
"""raftvip's test helpers that are awkward in bash, one subcommand each: the netns test bed
(lib.sh) and the scripts on it, scripts/bench-raft.sh, and the odd health-check backends of
integration/haproxy_health.rs. The only Python program of the tests: scripts and tests call
it rather than embed their own (.ci/run checks it with py_compile and pyflakes).

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
  page     URL [TIMEOUT_S] GET a page; print its body, stripped (default timeout 1 s)
  haproxy  SOCKET COMMAND  one HAProxy runtime API command on a stats socket; print the answer
  reach-times FROM_MS PORT HOST...
                           TCP connects to every HOST:PORT every 3 ms (refused counts as
                           reached) for up to 5 s; per HOST: "HOST MS" after FROM_MS, -1 if never
  check-backend SPEC...    health-check answers with odd texts for integration/haproxy_health.rs:
                           http:NAME:CODE:REASON (an HTTP server answering `CODE REASON`) or
                           agent:NAME:TEXT (an agent-check server answering `TEXT\\n`); each on a
                           free 127.0.0.1 port, "NAME PORT" per SPEC on stdout, runs until killed

scripts/bench-raft.sh's status probes of a cluster on loopback (PORT: a node's status port):
  free-ports N             N distinct free loopback ports (held until all are picked), one line
  raft-agreed DEADLINE_S PORT...
                           waits until every node names one leader and term: "LEADER TERM"
  raft-failover PID LEADER TERM PORT...
                           SIGKILLs PID (the leader), polls the survivors every ~2 ms over
                           kept-alive connections until one leads a later term:
                           "ELAPSED_MS PROBE_ROUND_US NEW_LEADER" (the poll round's own cost,
                           measured before the kill)
  raft-counters PORT...    per node: "NODE TERM LEADER_CHANGES ROLE FENCE_RELEASES"
  summarize LABEL          numbers on stdin -> "LABEL: n=N min / median / p90 / max ms"
  raft-summary RESULTS     scripts/bench-raft.sh's figures (raftvip, keepalived defaults and tuned)
                           side by side, a markdown table, from its results.tsv

scripts/bench-failover.sh's report, from its results.tsv ("CASE METRIC RUN VALUE" lines):
  failover-summary RESULTS one markdown table per scenario, the systems side by side, then the
                           goals (issues 10 and 12), met or missed
  failover-plot RESULTS PNG [SUBTITLE]
                           the outage per scenario per system as a PNG, with gnuplot

Times are Unix epoch milliseconds; every namespace shares the machine's clock, so the probe's
times, the monitors' times and the fault times in bash ($EPOCHREALTIME) compare directly.
"""

import asyncio
import datetime
import errno
import http.client
import json
import math
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The probe's cadence and patience, from the test plan: an attempt every 10 ms, each given 50 ms.
PROBE_INTERVAL_S = 0.010
PROBE_TIMEOUT_S = 0.050


# Every URL here is a bed address or loopback: never through the environment's proxy.
URL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
        with URL_OPENER.open(url, timeout=1) as r:
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


def latest_fault(faults, t):
    """The latest fault started at or before t (None before the first)."""
    latest = None
    for fault in faults:
        if fault[0] <= t:
            latest = fault
    return latest


def fault_at(faults, t):
    """The type of the latest fault started at or before t ("none" before the first)."""
    latest = latest_fault(faults, t)
    return "none" if latest is None else latest[2]


def sigterm_phase(faults, t):
    """Whether t falls where SIGTERM's make-before-break handover may overlap: after a term,
    or in a restart_all before its raftvips were started again (every box was stopping)."""
    latest = latest_fault(faults, t)
    if latest is None:
        return False
    _, _, kind, _, restarted = latest
    return kind == "term" or kind == "restart_all" and restarted is not None and t < restarted


# Limits of chaos-report and what they bound; a negative value turns a limit off.
CHAOS_LIMITS = {
    "min-availability": "availability %, at least",
    "max-outage-ms": "longest client outage",
    "max-two-holder-ms": "longest two-holder episode (any fault)",
    "max-two-holder-other": "two-holder episodes after faults other than kill/stop/term, "
                            "but for a restart_all's SIGTERMs",
    "max-planned-overlap-ms": "longest two-holder episode after a SIGTERM (make-before-break)",
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
            # start end kind target [restarted: when a restart_all started the raftvips again]
            parts = line.split()
            if len(parts) in (4, 5):
                restarted = int(parts[4]) if len(parts) == 5 else None
                faults.append((int(parts[0]), int(parts[1]), parts[2], parts[3], restarted))
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

    kinds = sorted({k for _, _, k, _, _ in faults} | {fault_at(faults, a) for a, _ in two + zero + outs})
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
        phase = " (SIGTERM phase)" if sigterm_phase(faults, a) else ""
        print(f"two-holder episode: {b - a:.1f} ms from {a:.0f} after fault '{fault_at(faults, a)}'{phase}")

    broken = []

    def check(key, value, ok_if):
        limit = limits.get(key)
        if limit is not None and limit >= 0 and not ok_if(value, limit):
            broken.append(f"{CHAOS_LIMITS[key]}: {value} (limit {limit:g})")

    check("min-availability", round(availability, 3), lambda v, l: v >= l)
    check("max-outage-ms", longest(outs), lambda v, l: v <= l)
    check("max-two-holder-ms", longest(two), lambda v, l: v <= l)
    # A SIGTERM hands over make-before-break: the old holder keeps the VIP until its successor
    # holds it (src/supervisor/core.rs, OVERLAP_BOUND), an overlap both agree on. So does a
    # restart_all's: SIGTERM reaches the boxes a few ms apart, and a successor can take over
    # before its own stop.
    planned = [e for e in two if sigterm_phase(faults, e[0])]
    check("max-planned-overlap-ms", longest(planned), lambda v, l: v <= l)
    other = [e for e in two
             if fault_at(faults, e[0]) not in ("kill", "stop", "term") and not sigterm_phase(faults, e[0])]
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
        with URL_OPENER.open(url, timeout=1) as r:
            text = r.read().decode()
    except (OSError, ValueError) as e:
        sys.exit(f"metrics {url}: {e}")
    for line in text.splitlines():
        if not line.startswith("#") and line.startswith(prefixes):
            print(line)


def cmd_page(url, timeout_s="1"):
    try:
        with URL_OPENER.open(url, timeout=float(timeout_s)) as r:
            print(r.read().decode().strip())
    except (OSError, ValueError) as e:
        sys.exit(f"page {url}: {e}")


def cmd_haproxy(sock_path, command):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        s.connect(sock_path)
        s.sendall(command.encode() + b"\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    sys.stdout.write(out.decode())


# reach-times: a round of connects every REACH_ROUND_S, for at most REACH_PATIENCE_S.
REACH_ROUND_S = 0.003
REACH_PATIENCE_S = 5


def cmd_reach_times(from_ms, port, *hosts):
    start, port = int(from_ms), int(port)
    first = {}
    deadline = time.time() + REACH_PATIENCE_S
    while len(first) < len(hosts) and time.time() < deadline:
        socks = {}
        for h in hosts:
            if h in first:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((h, port))
            socks[s] = h
        end = time.time() + REACH_ROUND_S
        while socks and time.time() < end:
            _, writable, _ = select.select([], list(socks), [], max(0, end - time.time()))
            for s in writable:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err in (0, errno.ECONNREFUSED):
                    first.setdefault(socks[s], int(time.time() * 1000))
                s.close()
                del socks[s]
        for s in socks:
            s.close()
    for h in hosts:
        print(h, first[h] - start if h in first else -1)


def check_http_server(code, reason):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(code, reason)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET
        do_OPTIONS = do_GET

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # HAProxy closes a check once it has the status line: not worth a traceback

    server = Server(("127.0.0.1", 0), Handler)
    return server.server_address[1], server.serve_forever


def check_agent_server(text):
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            conn, _ = listener.accept()
            with conn:
                try:
                    conn.sendall(text.encode() + b"\n")
                except OSError:
                    pass

    return listener.getsockname()[1], serve


def cmd_check_backend(*specs):
    """HAProxy copies an HTTP check's reason phrase and an agent's message into `show stat`
    (`last_chk`, `last_agt`), quoting them as CSV when they hold a comma, a quote or a newline.
    These answers come from a separate process, so a test that starves its own process of
    file descriptors still has backends that answer."""
    if not specs:
        sys.exit("check-backend: give at least one SPEC")
    servers = []
    for spec in specs:
        kind, name, rest = spec.split(":", 2)
        if kind == "http":
            code, reason = rest.split(":", 1)
            port, serve = check_http_server(int(code), reason)
        elif kind == "agent":
            port, serve = check_agent_server(rest)
        else:
            sys.exit(f"unknown spec kind {kind!r} in {spec!r}: use http: or agent:")
        servers.append(serve)
        print(name, port)
    sys.stdout.flush()
    for serve in servers:
        threading.Thread(target=serve, daemon=True).start()
    threading.Event().wait()


# ---- scripts/bench-raft.sh: a raftvip cluster on loopback, probed by its status ports ----

# raft-failover polls the survivors this often: a reported time is late by at most about this
# plus one poll round.
RAFT_POLL_S = 0.002
# raft-failover gives up when no survivor leads within this.
RAFT_FAILOVER_PATIENCE_S = 10


def raft_conn(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def raft_status(c):
    """The status document over a kept-alive connection; None (and the connection closed) on
    any error."""
    try:
        c.request("GET", "/v1/status")
        return json.loads(c.getresponse().read())
    except Exception:
        c.close()
        return None


def raft_status_once(port, timeout_s=1):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        c.request("GET", "/v1/status")
        return json.loads(c.getresponse().read())
    finally:
        c.close()


def cmd_free_ports(n):
    socks = [socket.socket() for _ in range(int(n))]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


def cmd_raft_agreed(deadline_s, *ports):
    end = time.monotonic() + float(deadline_s)
    while time.monotonic() < end:
        docs = []
        for p in ports:
            try:
                docs.append(raft_status_once(int(p)))
            except Exception:
                docs.append(None)
        if all(docs):
            leaders = [d for d in docs if d["role"] == "leader"]
            if len(leaders) == 1 and all(
                d["leader_id"] == leaders[0]["node_id"] and d["term"] == leaders[0]["term"]
                for d in docs
            ):
                print(leaders[0]["node_id"], leaders[0]["term"])
                return
        time.sleep(0.02)
    sys.exit(f"no agreed leader within {deadline_s}s")


def cmd_raft_failover(pid, old_leader, old_term, *ports):
    pid, old_leader, old_term = int(pid), int(old_leader), int(old_term)
    ports = [int(p) for p in ports]
    conns = {p: raft_conn(p) for p in ports}
    rounds = []
    for _ in range(100):  # overhead of one poll round (all survivors), cluster stable
        t = time.perf_counter()
        for p in ports:
            raft_status(conns[p])
        rounds.append(time.perf_counter() - t)
    os.kill(pid, signal.SIGKILL)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < RAFT_FAILOVER_PATIENCE_S:
        start = time.perf_counter()
        for p in ports:
            d = raft_status(conns[p])
            if d is None:
                conns[p] = raft_conn(p)
            elif d["role"] == "leader" and d["node_id"] != old_leader and d["term"] > old_term:
                elapsed = (time.perf_counter() - t0) * 1000
                print(f"{elapsed:.1f} {statistics.median(rounds) * 1e6:.0f} {d['node_id']}")
                return
        time.sleep(max(0.0, RAFT_POLL_S - (time.perf_counter() - start)))
    sys.exit(f"no new leader within {RAFT_FAILOVER_PATIENCE_S} s")


def cmd_raft_counters(*ports):
    for p in ports:
        d = raft_status_once(int(p), timeout_s=2)
        print(d["node_id"], d["term"], d["counters"]["leader_changes"], d["role"],
              d["counters"]["fence_releases"])


def dist(xs):
    """(min, median, p90, max) of numbers; p90 by nearest rank (the ceil(0.9 n)-th smallest),
    as in the benchmark tables."""
    xs = sorted(xs)
    return xs[0], statistics.median(xs), xs[math.ceil(0.9 * len(xs)) - 1], xs[-1]


def fmt_dist(xs, unit=""):
    lo, med, p90, hi = dist(xs)
    return f"{lo:.0f} / **{med:.0f}** / {p90:.0f} / {hi:.0f}{unit}"


def cmd_summarize(label):
    xs = [float(x) for x in sys.stdin.read().split()]
    if not xs:
        sys.exit(f"summarize {label}: no numbers")
    lo, med, p90, hi = dist(xs)
    print(f"{label}: n={len(xs)} min {lo:.0f} / median {med:.0f} / p90 {p90:.0f} / max {hi:.0f} ms")


# scripts/bench-failover.sh's results: "CASE METRIC RUN VALUE" lines, CASE = SYSTEM-FAULT. Its
# systems, and its faults grouped into scenarios: (key, title, what is done, the faults' names
# per system). keepalived's planned handover is its graceful stop; it has no maintenance or
# transfer command.
FAILOVER_SYSTEMS = (("rv", "raftvip"), ("ka", "keepalived defaults"), ("kt", "keepalived tuned"))
FAILOVER_SCENARIOS = (
    ("box-loss", "box loss", "the holder's link goes down", ("box-loss",)),
    ("haproxy-kill", "HAProxy SIGKILL", "every HAProxy process of the holder", ("haproxy-kill",)),
    ("sigterm", "SIGTERM (planned stop)", "planned stop: SIGTERM to raftvip (keepalived: to keepalived) on the holder",
     ("sigterm", "graceful")),
    ("maintenance", "maintenance on", "`raftvip maintenance on` on the holder (keepalived has no such command)",
     ("maintenance",)),
    ("transfer", "transfer --to any", "`raftvip transfer --to any` on the holder (keepalived has no such command)",
     ("transfer",)),
    ("partition", "partition", "the holder is cut from its peers (nft), the client still reaches it; healed after -P ms",
     ("partition",)),
)
# The goals the tables are checked against (issue 10: planned handover; issue 12: box loss,
# HAProxy death, no two holders). Fewer runs than asked for are reported as such.
GOAL_RUNS = 20


def read_results(path):
    """{case: {metric: [values in run order]}} of a results.tsv."""
    res = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            case, metric, run, value = parts
            res.setdefault(case, {}).setdefault(metric, []).append((int(run), float(value)))
    return {c: {m: [v for _, v in sorted(rv)] for m, rv in ms.items()} for c, ms in res.items()}


def scenario_cases(res, suffixes):
    """[(system label, case)] of one scenario that the results have, in system order."""
    out = []
    for sys_key, label in FAILOVER_SYSTEMS:
        for suffix in suffixes:
            if f"{sys_key}-{suffix}" in res:
                out.append((label, f"{sys_key}-{suffix}"))
    return out


def case_runs(m):
    return len(m.get("outage", [])) + len(m.get("failed", []))


def move_row(label, m, overlap):
    n = case_runs(m)
    runs = f"{n}" + (f" (**{len(m['failed'])} failed**)" if m.get("failed") else "")
    outage = fmt_dist(m["outage"]) if m.get("outage") else "-"
    fp = m.get("failed_probes", [])
    if fp:
        lo, med, _, hi = dist(fp)
        probes = f"{lo:.0f} / {med:.0f} / {hi:.0f}"
        zero = f"{sum(1 for x in fp if x == 0)}/{n}"
    else:
        probes = zero = "-"
    ne = m.get("neigh_successor", [])
    neigh = f"{sum(1 for x in ne if x == 1)}/{n}" if ne else "-"
    both = (f" {fmt_dist(m['two_holders'])} |" if m.get("two_holders") else " - |") if overlap else ""
    return f"| {label} | {runs} | {outage} | {probes} | {zero} | {neigh} |{both}"


def partition_row(label, m):
    def d(metric, none):
        return fmt_dist(m[metric]) if m.get(metric) else none

    n = case_runs(m) or len(m.get("two_holders", []))
    return (f"| {label} | {n} | {d('outage', '-')} | {d('longest_gap', '-')} | "
            f"{d('old_holder_drop', 'never (kept it until the heal)')} | {d('two_holders', '-')} | "
            f"{d('after_heal', '-')} |")


def goal_lines(res):
    def runs_note(n):
        return "" if n >= GOAL_RUNS else f" (in {n} runs; the goal asks {GOAL_RUNS})"

    out = []
    m = res.get("rv-box-loss")
    if m and m.get("outage"):
        _, med, p90, _ = dist(m["outage"])
        ok = med <= 120 and p90 <= 150 and not m.get("failed")
        out.append(f"- box loss <= 120 ms median, <= 150 ms p90 (issue 12): median {med:.0f}, p90 {p90:.0f}: "
                   f"**{'met' if ok else 'missed'}**{runs_note(case_runs(m))}")
    m = res.get("rv-haproxy-kill")
    if m and m.get("outage"):
        med = dist(m["outage"])[1]
        out.append(f"- HAProxy death <= 20 ms median (issue 12): median {med:.0f}: "
                   f"**{'met' if med <= 20 and not m.get('failed') else 'missed'}**{runs_note(case_runs(m))}")
    for fault in ("sigterm", "maintenance", "transfer"):
        m = res.get(f"rv-{fault}")
        if not m:
            continue
        n = case_runs(m)
        zero = sum(1 for x in m.get("failed_probes", []) if x == 0)
        neigh = sum(1 for x in m.get("neigh_successor", []) if x == 1)
        ok = n > 0 and zero == n and neigh == n
        out.append(f"- planned handover, {fault}: 0 failed probes in every run and the client's neighbour entry "
                   f"names the successor (issue 10): runs with 0 failed probes: {zero}/{n}; neighbour MAC = "
                   f"successor: {neigh}/{n}: **{'met' if ok else 'missed'}**{runs_note(n)}")
    m = res.get("rv-partition")
    if m and m.get("two_holders"):
        both = max(m["two_holders"])
        out.append(f"- partition: never two holders (issue 12): longest two-holder time {both:.0f} ms over "
                   f"{len(m['two_holders'])} runs: **{'met' if both == 0 else 'missed'}**")
    return out


def cmd_failover_summary(path):
    res = read_results(path)
    for key, title, what, suffixes in FAILOVER_SCENARIOS:
        cases = scenario_cases(res, suffixes)
        if not cases:
            continue
        print(f"### {title}\n\n{what}\n")
        if key == "partition":
            print("| system | runs | client outage (ms) | longest gap | old holder dropped the VIP after | "
                  "two holders (ms) | outage after the heal |")
            print("|---|---|---|---|---|---|---|")
            for label, case in cases:
                print(partition_row(label, res[case]))
        else:
            # Planned handovers: how long both boxes held the VIP (make-before-break).
            overlap = any("two_holders" in res[c] for _, c in cases)
            print("| system | runs | outage min / median / p90 / max (ms) | failed probes per run "
                  "(min / median / max) | runs with 0 failed probes | neighbour entry = successor's MAC |"
                  + (" VIP on two boxes (ms) |" if overlap else ""))
            print("|---|---|---|---|---|---|" + ("---|" if overlap else ""))
            for label, case in cases:
                print(move_row(label, res[case], overlap))
        print()
    goals = goal_lines(res)
    if goals:
        print("### goals\n")
        print("\n".join(goals))


def cmd_raft_summary(path):
    """scripts/bench-raft.sh's figures side by side: raftvip, keepalived defaults, keepalived
    tuned, where the run measured them ("FIGURE WHO RUN VALUE" lines)."""
    res = read_results(path)

    def vals(figure, who):
        return res.get(figure, {}).get(who, [])

    def span(xs, unit):
        if not xs:
            return "-"
        return f"{min(xs):.2f}{unit}" if min(xs) == max(xs) else f"{min(xs):.2f}–{max(xs):.2f}{unit}"

    def leader(who):
        xs = vals("new_leader_ms", who)
        return f"{fmt_dist(xs)} ({len(xs)} runs)" if xs else "-"

    rows = [("new leader after SIGKILL of the leader, ms (min / median / p90 / max)",
             leader("rv"), leader("ka"), leader("kt"))]
    rejoin = vals("rejoin_elections", "rv")
    if rejoin:
        runs = max(0, len(vals("new_leader_ms", "rv")) - 1)
        rows.append(("a restarted node's rejoin started another election", f"{rejoin[0]:.0f} of {runs} runs", "-", "-"))
    sat = res.get("saturated_leader_changes", {}).get("rv")
    if sat:
        fence = vals("saturated_fence_releases", "rv")
        rows.append(("leader changes with both cores saturated (busy loops)", f"{sat[0]:.0f}", "-", "-"))
        rows.append(("fence (quorum-lease) releases in that time", f"{fence[0]:.0f}" if fence else "-", "-", "-"))
    if "idle_cpu_pct" in res:
        rows.append(("idle CPU, leader / MASTER (% of a core)", span(vals("idle_cpu_pct", "rv-leader"), " %"),
                     span(vals("idle_cpu_pct", "ka-master"), " %"), "-"))
        rows.append(("idle CPU, followers / BACKUPs (% of a core)", span(vals("idle_cpu_pct", "rv-follower"), " %"),
                     span(vals("idle_cpu_pct", "ka-backup"), " %"), "-"))
        rv_rss = vals("idle_rss_mb", "rv-leader") + vals("idle_rss_mb", "rv-follower")
        ka_rss = vals("idle_rss_mb", "ka-master") + vals("idle_rss_mb", "ka-backup")
        rows.append(("RSS per node (MB)", span(rv_rss, ""), span(ka_rss, ""), "-"))
    print("| figure | raftvip | keepalived defaults | keepalived tuned |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


# The plot's colours per system (colour-blind safe: green, vermilion, orange).
PLOT_COLOURS = {"rv": "#009e73", "ka": "#d55e00", "kt": "#e69f00"}
# Outages of 0 ms (no failed probe) are drawn here, on the log scale's bottom row.
PLOT_ZERO_MS = 1


def cmd_failover_plot(path, png, subtitle=""):
    """A PNG of the outage per scenario per system with gnuplot: every run a dot, a box from
    the median to p90, whiskers from min to max, the median printed above."""
    res = read_results(path)
    xtics, blocks, series, plots = [], [], [], []
    x = 0
    for _, title, _, suffixes in FAILOVER_SCENARIOS:
        cases = scenario_cases(res, suffixes)
        cases = [(label, c) for label, c in cases if res[c].get("outage")]
        if not cases:
            continue
        xtics.append(f'"{title}" {x}')
        for label, case in cases:
            sys_key = case.split("-", 1)[0]
            offset = {"rv": -0.27, "ka": 0.0, "kt": 0.27}[sys_key]
            xs = res[case]["outage"]
            lo, med, p90, hi = dist(xs)
            cx = x + offset
            name = case.replace("-", "_")
            series.append((sys_key, name))
            runs = "\n".join(f"{cx + (i % 7 - 3) * 0.018:.3f} {max(v, PLOT_ZERO_MS)}" for i, v in enumerate(xs))
            blocks.append(f"$r_{name} << EOD\n{runs}\nEOD")
            blocks.append(f"$s_{name} << EOD\n{cx:.3f} {max(lo, PLOT_ZERO_MS)} "
                          f"{max(med, PLOT_ZERO_MS)} {max(p90, PLOT_ZERO_MS)} {max(hi, PLOT_ZERO_MS)} {med:.0f}\nEOD")
        x += 1
    if not xtics:
        sys.exit(f"failover-plot: no outages in {path}")
    seen = set()
    for sys_key, name in series:
        colour = PLOT_COLOURS[sys_key]
        title = dict(FAILOVER_SYSTEMS)[sys_key] if sys_key not in seen else ""
        seen.add(sys_key)
        plots.append(f"$r_{name} using 1:2 with points pt 7 ps 0.45 lc rgb '{colour}' notitle")
        plots.append(f"$s_{name} using 1:3:2:5:4 with candlesticks whiskerbars 0.6 lw 1.2 lc rgb '{colour}' "
                     f"fs transparent solid 0.25 title '{title}'")
        plots.append(f"$s_{name} using 1:3:3:3:3 with candlesticks lw 3 lc rgb '{colour}' notitle")
        plots.append(f"$s_{name} using 1:($5*1.35):6 with labels font ',8' tc rgb '{colour}' notitle")
    script = "\n".join([
        "set terminal pngcairo size 1200,620 font 'sans,10'",
        f"set output '{png}'",
        "set title \"Client-observed outage per fault: raftvip vs keepalived 2.2.7, same bed, same run"
        + (f"\\n{{/*0.8 {subtitle}}}" if subtitle else "") + '"',
        "set ylabel 'outage (ms, log scale; 0 = no failed probe)'",
        "set logscale y",
        f"set yrange [{PLOT_ZERO_MS * 0.7}:30000]",
        f"set ytics ('0' {PLOT_ZERO_MS}, '10' 10, '30' 30, '100' 100, '300' 300, '1000' 1000, '3000' 3000, "
        "'10000' 10000)",
        "set grid ytics lc rgb '#dddddd'",
        f"set xtics ({', '.join(xtics)}) scale 0",
        f"set xrange [-0.6:{x - 0.4}]",
        "set boxwidth 0.2 absolute",
        "set key top left box opaque",
        "set label 1 'dots: each run; box: median to p90; whiskers: min to max; number: median (ms)' "
        "at graph 0.99, graph 0.97 right font ',9'",
        *blocks,
        "plot " + ", \\\n     ".join(plots),
    ])
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


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
    "page": cmd_page,
    "haproxy": cmd_haproxy,
    "reach-times": cmd_reach_times,
    "check-backend": cmd_check_backend,
    "free-ports": cmd_free_ports,
    "raft-agreed": cmd_raft_agreed,
    "raft-failover": cmd_raft_failover,
    "raft-counters": cmd_raft_counters,
    "summarize": cmd_summarize,
    "failover-summary": cmd_failover_summary,
    "failover-plot": cmd_failover_plot,
    "raft-summary": cmd_raft_summary,
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
