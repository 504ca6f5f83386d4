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

Times are Unix epoch milliseconds; every namespace shares the machine's clock, so the probe's
times, the monitors' times and the fault times in bash ($EPOCHREALTIME) compare directly.
"""

import asyncio
import datetime
import errno
import http.client
import json
import os
import resource
import select
import signal
import socket
import statistics
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


def cmd_summarize(label):
    xs = sorted(float(x) for x in sys.stdin.read().split())
    if not xs:
        sys.exit(f"summarize {label}: no numbers")

    def q(f):
        return xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]

    print(f"{label}: n={len(xs)} min {xs[0]:.0f} / median {statistics.median(xs):.0f} / "
          f"p90 {q(0.9):.0f} / max {xs[-1]:.0f} ms")


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
