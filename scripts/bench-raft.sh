#!/usr/bin/env bash
# Benchmarks raftvip's Raft timing with 3 release-build processes on loopback, and measures
# keepalived's idle footprint in the same run for comparison.
#
#   loopback (127.0.0.1)                      keepalived test bed (namespaces of this run)
#   node1 :P1   node2 :P2   node3 :P3         $PREFIX-k1  $PREFIX-k2  $PREFIX-k3
#     \___________|___________/                 eth0 .11    eth0 .12    eth0 .13
#        signed HTTP Raft RPCs                     \__________|__________/
#                                                  br0 in $PREFIX-br (192.0.2.0/24, VIP .100)
#
# Phases (all by default, or name some): failover, saturation, idle (idle also measures
# keepalived unless --no-keepalived). Every process, namespace and file this run creates is
# removed by the EXIT trap, by exact pid / name.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<EOF
usage: $0 [options] [failover] [saturation] [idle]

  -n RUNS       SIGKILL-the-leader runs (default 20)
  -d SECONDS    saturation duration (default 120)
  -w SECONDS    idle warm-up before measuring (default 60)
  -m SECONDS    idle measuring window (default 30)
  --no-keepalived   skip the keepalived comparison
  --no-build    use RAFTVIP_BIN (default target/release/raftvip) as is

environment:
  RAFTVIP_HEARTBEAT_MS=20 RAFTVIP_ELECTION_TIMEOUT_MS=60,90   [timing] of the run
  RAFTVIP_FENCE_MS                                            optional fence_ms
  RAFTVIP_BIN=PATH                                            binary to benchmark
EOF
}

die() {
    echo "bench-raft: $*" >&2
    exit 1
}

cmd() {
    echo "[#] $*" >&2
    "$@"
}

RUNS=20
SAT_SECONDS=120
IDLE_WARMUP=60
IDLE_WINDOW=30
KEEPALIVED=1
BUILD=1
PHASES=()
while [[ $# -gt 0 ]]; do
    case $1 in
    -n) RUNS=$2; shift 2 ;;
    -d) SAT_SECONDS=$2; shift 2 ;;
    -w) IDLE_WARMUP=$2; shift 2 ;;
    -m) IDLE_WINDOW=$2; shift 2 ;;
    --no-keepalived) KEEPALIVED=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    failover | saturation | idle) PHASES+=("$1"); shift ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ ${#PHASES[@]} -gt 0 ]] || PHASES=(failover saturation idle)

HEARTBEAT_MS=${RAFTVIP_HEARTBEAT_MS:-20}
ELECTION_TIMEOUT_MS=${RAFTVIP_ELECTION_TIMEOUT_MS:-60,90}
FENCE_MS=${RAFTVIP_FENCE_MS:-}

cd "$(dirname "$0")/.."
REPO=$PWD
BIN=${RAFTVIP_BIN:-$REPO/target/release/raftvip}

# ---------------------------------------------------------------- preconditions
command -v python3 >/dev/null || die "python3 is needed for the status probe"
if [[ $BUILD -eq 1 ]]; then
    cmd cargo build --release --quiet
fi
[[ -x $BIN ]] || die "no binary at $BIN"
if [[ $KEEPALIVED -eq 1 ]] && [[ " ${PHASES[*]} " == *" idle "* ]]; then
    [[ $EUID -eq 0 ]] || die "the keepalived comparison needs root (namespaces); use --no-keepalived"
    command -v keepalived >/dev/null || die "keepalived is not installed"
fi

PREFIX="rvb$$"
RUN_DIR=$(mktemp -d "/tmp/bench-raft.$PREFIX.XXXX")
NODE_PIDS=(0 0 0 0)
KEEPALIVED_PIDS=()
BUSY_PIDS=()
NETNS=()

cleanup() {
    local pid ns
    # bash reports every killed job on stderr; nothing else is said from here on.
    exec 2>/dev/null
    for pid in "${NODE_PIDS[@]}" "${KEEPALIVED_PIDS[@]}" "${BUSY_PIDS[@]}"; do
        if [[ $pid -gt 0 ]]; then kill -9 "$pid" || true; fi
    done
    # keepalived's VRRP children, from the pidfiles this run gave them.
    for pid in "$RUN_DIR"/k*.pid; do
        if [[ -f $pid ]]; then kill -9 "$(cat "$pid")" || true; fi
    done
    wait || true
    for ns in "${NETNS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# ---------------------------------------------------------------- the probe (python3)
# One small program for everything that needs to be fast: kept-alive HTTP connections, a
# ~2 ms poll period, and its own overhead measured before each kill.
cat >"$RUN_DIR/probe.py" <<'EOF'
import http.client, json, os, signal, socket, statistics, sys, time

def conn(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c

def status(c, port):
    try:
        c.request("GET", "/v1/status")
        return json.loads(c.getresponse().read())
    except Exception:
        c.close()
        return None

def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))

def agreed(ports, deadline_s):
    """Waits until one leader is agreed by every port; prints 'LEADER TERM'."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        docs = []
        for p in ports:
            try:
                c = http.client.HTTPConnection("127.0.0.1", p, timeout=1)
                c.request("GET", "/v1/status")
                docs.append(json.loads(c.getresponse().read()))
                c.close()
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
    sys.exit("no agreed leader within %ss" % deadline_s)

def failover(pid, old_leader, old_term, ports):
    """SIGKILLs pid, then polls the survivors every ~2 ms until one reports itself leader of a
    later term. Prints 'ELAPSED_MS PROBE_ROUND_US NEW_LEADER'."""
    period = 0.002
    conns = {p: conn(p) for p in ports}
    rounds = []
    for _ in range(100):  # overhead of one poll round (all survivors), cluster stable
        t = time.perf_counter()
        for p in ports:
            status(conns[p], p)
        rounds.append(time.perf_counter() - t)
    os.kill(pid, signal.SIGKILL)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 10:
        start = time.perf_counter()
        for p in ports:
            d = status(conns[p], p)
            if d is None:
                conns[p] = conn(p)
            elif d["role"] == "leader" and d["node_id"] != old_leader and d["term"] > old_term:
                elapsed = (time.perf_counter() - t0) * 1000
                print("%.1f %.0f %d" % (elapsed, statistics.median(rounds) * 1e6, d["node_id"]))
                return
        time.sleep(max(0.0, period - (time.perf_counter() - start)))
    sys.exit("no new leader within 10 s")

def counters(ports):
    """Prints 'NODE TERM LEADER_CHANGES ROLE FENCE_RELEASES' per port."""
    for p in ports:
        c = http.client.HTTPConnection("127.0.0.1", p, timeout=2)
        c.request("GET", "/v1/status")
        d = json.loads(c.getresponse().read())
        print(d["node_id"], d["term"], d["counters"]["leader_changes"], d["role"],
              d["counters"]["fence_releases"])

def summarize(label):
    xs = sorted(float(x) for x in sys.stdin.read().split())
    q = lambda f: xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]
    print("%s: n=%d min %.0f / median %.0f / p90 %.0f / max %.0f ms" % (
        label, len(xs), xs[0], statistics.median(xs), q(0.9), xs[-1]))

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "free-ports":
    free_ports(int(args[0]))
elif cmd == "agreed":
    agreed([int(a) for a in args[1:]], float(args[0]))
elif cmd == "failover":
    failover(int(args[0]), int(args[1]), int(args[2]), [int(a) for a in args[3:]])
elif cmd == "counters":
    counters([int(a) for a in args])
elif cmd == "summarize":
    summarize(args[0])
EOF
probe() { python3 "$RUN_DIR/probe.py" "$@"; }

# ---------------------------------------------------------------- the raftvip cluster
read -r -a PORTS <<<"$(probe free-ports 3)"
(umask 077 && head -c 48 /dev/urandom | base64 >"$RUN_DIR/secret")
for i in 1 2 3; do
    {
        echo "cluster = \"bench\""
        echo "node_id = $i"
        echo "listen = \"127.0.0.1:${PORTS[i - 1]}\""
        echo "data_dir = \"$RUN_DIR/data$i\""
        echo "secret_file = \"$RUN_DIR/secret\""
        for j in 1 2 3; do
            printf '[[peer]]\nid = %d\naddress = "127.0.0.1:%d"\n' "$j" "${PORTS[j - 1]}"
        done
        echo "[timing]"
        echo "heartbeat_ms = $HEARTBEAT_MS"
        echo "election_timeout_ms = [$ELECTION_TIMEOUT_MS]"
        [[ -z $FENCE_MS ]] || echo "fence_ms = $FENCE_MS"
    } >"$RUN_DIR/node$i.toml"
done
"$BIN" check-config --config "$RUN_DIR/node1.toml" >/dev/null ||
    die "the timing is refused by check-config: $("$BIN" check-config --config "$RUN_DIR/node1.toml" 2>&1)"

start_node() {
    local i=$1
    "$BIN" run --config "$RUN_DIR/node$i.toml" 2>>"$RUN_DIR/node$i.log" &
    NODE_PIDS[i]=$!
}

# Prints "LEADER TERM" once all running nodes agree.
agreed_leader() {
    local ports=() i
    for i in 1 2 3; do
        [[ ${NODE_PIDS[i]} -gt 0 ]] && ports+=("${PORTS[i - 1]}")
    done
    probe agreed 10 "${ports[@]}"
}

pid_cpu_ticks() { # utime + stime of a pid, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
pid_rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

echo "raftvip $("$BIN" --version | awk '{print $2}'): heartbeat ${HEARTBEAT_MS} ms, election timeout [${ELECTION_TIMEOUT_MS}] ms${FENCE_MS:+, fence ${FENCE_MS} ms}; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

for i in 1 2 3; do start_node "$i"; done
agreed_leader >/dev/null

# ---------------------------------------------------------------- phase: failover
phase_failover() {
    local run leader term survivors i result elapsed overhead new l2 t2 rejoin_term=0
    : >"$RUN_DIR/failover.ms"
    : >"$RUN_DIR/probe.us"
    REJOIN_ELECTIONS=0
    for ((run = 1; run <= RUNS; run++)); do
        # Steady state: the same agreed leader and term one second apart.
        read -r leader term <<<"$(agreed_leader)"
        while sleep 1 && read -r l2 t2 <<<"$(agreed_leader)" && [[ "$l2 $t2" != "$leader $term" ]]; do
            leader=$l2 term=$t2
        done
        # Elections caused by the previous run's node rejoining (term after the failover vs now).
        if [[ $rejoin_term -gt 0 && $term -gt $rejoin_term ]]; then
            REJOIN_ELECTIONS=$((REJOIN_ELECTIONS + 1))
            echo "  (the rejoining node moved the term $rejoin_term -> $term)"
        fi
        survivors=()
        for i in 1 2 3; do
            [[ $i -ne $leader ]] && survivors+=("${PORTS[i - 1]}")
        done
        result=$(probe failover "${NODE_PIDS[leader]}" "$leader" "$term" "${survivors[@]}")
        read -r elapsed overhead new <<<"$result"
        read -r l2 rejoin_term <<<"$(probe agreed 10 "${survivors[@]}")"
        wait "${NODE_PIDS[leader]}" 2>/dev/null || true
        NODE_PIDS[leader]=0
        printf '  run %2d: leader %d (term %d) killed -> node %d leads after %6.1f ms (probe round %d us)\n' \
            "$run" "$leader" "$term" "$new" "$elapsed" "$overhead"
        echo "$elapsed" >>"$RUN_DIR/failover.ms"
        echo "$overhead" >>"$RUN_DIR/probe.us"
        start_node "$leader"
    done
    agreed_leader >/dev/null
    probe summarize "new leader after SIGKILL" <"$RUN_DIR/failover.ms"
    echo "runs where the restarted node's rejoin started another election: $REJOIN_ELECTIONS of $((RUNS - 1))"
    echo "probe: one poll round over both survivors takes median $(sort -n "$RUN_DIR/probe.us" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') us (kept-alive HTTP + JSON parse) plus a 2 ms period: a reported time is late by at most ~2.5 ms"
}

# ---------------------------------------------------------------- phase: saturation
phase_saturation() {
    local busy=$(($(nproc) * 2)) b before after
    before=$(probe counters "${PORTS[@]}")
    echo "saturation: $busy busy loops on $(nproc) cores for ${SAT_SECONDS} s"
    for ((b = 0; b < busy; b++)); do
        timeout "$SAT_SECONDS" yes >/dev/null &
        BUSY_PIDS+=($!)
    done
    sleep "$SAT_SECONDS"
    for b in "${BUSY_PIDS[@]}"; do wait "$b" 2>/dev/null || true; done
    BUSY_PIDS=()
    after=$(probe counters "${PORTS[@]}")
    paste <(echo "$before") <(echo "$after") | awk '
        { dt = $7 - $2; dc = $8 - $3; df = $10 - $5; if (dt > mt) mt = dt; if (dc > mc) mc = dc; fr += df
          printf "  node %d: term %d -> %d, leader_changes %d -> %d, role %s, fence releases %d\n", $1, $2, $7, $3, $8, $9, df }
        END { printf "leader changes under saturation: %d (max term increase %d); quorum-lease (fence) releases: %d\n", mc, mt, fr }'
    grep -h "leader changed\|role changed" "$RUN_DIR"/node?.log | tail -n 3 | sed 's/^/  last transition: /' || true
}

# ---------------------------------------------------------------- keepalived test bed
start_keepalived() {
    local i br="$PREFIX-br" ns
    cmd ip netns add "$br"
    NETNS+=("$br")
    cmd ip -n "$br" link add br0 type bridge
    cmd ip -n "$br" link set br0 up
    for i in 1 2 3; do
        ns="$PREFIX-k$i"
        cmd ip netns add "$ns"
        NETNS+=("$ns")
        cmd ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$br"
        cmd ip -n "$br" link set "p$i" master br0 up
        cmd ip -n "$ns" link set lo up
        cmd ip -n "$ns" addr add "192.0.2.1$i/24" dev eth0
        cmd ip -n "$ns" link set eth0 up
        cat >"$RUN_DIR/keepalived$i.conf" <<EOF
global_defs {
    router_id $PREFIX-k$i
    enable_script_security
    script_user root
}
vrrp_script chk {
    script "/bin/true"
    interval 1
    fall 2
    rise 2
}
vrrp_instance VI {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority $((100 - i))
    advert_int 1
    virtual_ipaddress {
        192.0.2.100/32
    }
    track_script {
        chk
    }
}
EOF
        ip netns exec "$ns" keepalived -n -l -D -P -f "$RUN_DIR/keepalived$i.conf" \
            -p "$RUN_DIR/k$i.pid" -r "$RUN_DIR/k$i.vrrp.pid" >"$RUN_DIR/keepalived$i.log" 2>&1 &
        KEEPALIVED_PIDS+=($!)
    done
}

footprint_line() { # LABEL PID TICKS_BEFORE
    local label=$1 pid=$2 t0=$3 t1
    t1=$(pid_cpu_ticks "$pid")
    awk -v l="$label" -v d=$((t1 - t0)) -v w="$IDLE_WINDOW" -v hz="$(getconf CLK_TCK)" -v rss="$(pid_rss_kb "$pid")" \
        'BEGIN { printf "  %-34s CPU %5.2f %% of a core   RSS %5.1f MB\n", l, d / hz / w * 100, rss / 1024 }'
}

# ---------------------------------------------------------------- phase: idle
phase_idle() {
    local leader term i pids=() labels=() t0=() k master
    if [[ $KEEPALIVED -eq 1 ]]; then start_keepalived; fi
    echo "idle: warming up ${IDLE_WARMUP} s, then measuring ${IDLE_WINDOW} s"
    sleep "$IDLE_WARMUP"
    read -r leader term <<<"$(agreed_leader)"
    for i in 1 2 3; do
        pids+=("${NODE_PIDS[i]}")
        if [[ $i -eq $leader ]]; then labels+=("raftvip node $i (leader)"); else labels+=("raftvip node $i (follower)"); fi
    done
    if [[ $KEEPALIVED -eq 1 ]]; then
        for i in 1 2 3; do
            [[ -s $RUN_DIR/k$i.vrrp.pid ]] || die "keepalived $i did not start: $(cat "$RUN_DIR/keepalived$i.log")"
            master=backup
            if ip -n "$PREFIX-k$i" -4 addr show dev eth0 | grep -q 192.0.2.100; then master=MASTER; fi
            pids+=("${KEEPALIVED_PIDS[i - 1]}" "$(cat "$RUN_DIR/k$i.vrrp.pid")")
            labels+=("keepalived $i parent" "keepalived $i VRRP child ($master)")
        done
    fi
    for k in "${!pids[@]}"; do t0+=("$(pid_cpu_ticks "${pids[k]}")"); done
    sleep "$IDLE_WINDOW"
    for k in "${!pids[@]}"; do footprint_line "${labels[k]}" "${pids[k]}" "${t0[k]}"; done
    read -r i term <<<"$(agreed_leader)"
    [[ $i -eq $leader ]] || echo "  note: the leader changed during the idle window ($leader -> $i)"
}

for phase in "${PHASES[@]}"; do
    echo "== $phase"
    "phase_$phase"
done
