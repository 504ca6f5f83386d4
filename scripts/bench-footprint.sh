#!/usr/bin/env bash
# Idle footprint of raftvip next to keepalived, both running at the same time on the same boxes
# of the netns bed (integration/netns/lib.sh), so machine load hits both alike (issue 12:
# leader <= 1.0 % of a core, followers <= 0.6 %, RSS <= 10 MB per node).
#
#                         namespace $BED_ID-br
#              +---------------------------------------------+
#              |                    br0                      |
#              |   box1        box2        box3              |
#              +----|-----------|-----------|----------------+
#              192.0.2.11    .12          .13
#   every box: HAProxy, raftvip (default timing and health poll, VIP 192.0.2.100) and
#              keepalived 2.2.7 at its defaults (VRRPv2 advert_int 1, check every 1 s) or, with
#              -k tuned, as bench-failover.sh tunes it (VRRPv3 advert_int 0.1), VIP 192.0.2.200
#
# CPU is CPU time consumed in each window (utime + stime + cutime + cstime from /proc/PID/stat,
# so keepalived's forked checks count), over the window's wall time: a CPU-time measure, not a
# sample of "busy now", so it depends little on other load. Memory: VmRSS from
# /proc/PID/status and Pss from /proc/PID/smaps_rollup (RSS with shared pages split among
# their users) at the end of each window. keepalived is the parent plus its VRRP child.
# Wake-ups: context switches of all of a process's threads per second over the window (each is
# a return from epoll_wait or a futex sleep; at idle, what a process costs is mostly how often
# it wakes).
#
# --hb-cost also measures the CPU cost of one heartbeat round trip on each side: the cluster is
# restarted with heartbeat_ms halved (twice the heartbeats, all else equal), and the extra CPU
# per second is divided by the extra peer requests per second. Requests per second come from
# the followers' nonce tables (each signed request stays 10 s: entries / 10 = requests/s).
#
# Everything it creates belongs to the bed and is removed by lib.sh's cleanup trap.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUNS=3
WARMUP_S=20
WINDOW_S=60
HB_COST=0
KA_MODE=defaults
OTHER=

usage() {
    cat <<EOF
Usage: $0 [options]

Measures the idle CPU and memory of a 3-box raftvip cluster and of keepalived running beside it
on the same boxes, over RUNS windows, and prints one line per process and window plus a
summary (min / median / p90 / max). Needs root, ip, haproxy, keepalived, python3. The binary is
\$RAFTVIP, else target/release/raftvip.

  -n RUNS       measuring windows (default $RUNS)
  -w SECONDS    warm-up before the first window (default $WARMUP_S)
  -m SECONDS    window length (default $WINDOW_S)
  -k MODE       keepalived's config: defaults (default) or tuned (VRRPv3, advert_int 0.1, the
                failover benchmarks' "keepalived tuned"), integration/netns/keepalived.sh
  --hb-cost     then restart raftvip with heartbeat_ms halved and report the CPU cost of one
                heartbeat round trip on the leader and on a follower
  -B BINARY     compare two builds instead (no keepalived): box1 runs \$RAFTVIP and BINARY in
                turn (restarted between them), RUNS times each, with one window as leader and
                one as follower per turn; box2 runs \$RAFTVIP throughout as the control, measured
                in the same windows. Each build is reported as its CPU and as its CPU over the
                control's. Why: the same build reads 20-30 % apart on two boxes of one bed, and
                a bed 10 % apart from one moment to the next; one box against a control sees
                neither.
  -h            this help

RAFTVIP_HEARTBEAT_MS, RAFTVIP_ELECTION_TIMEOUT_MS (MIN,MAX) and RAFTVIP_FENCE_MS run raftvip
with another [timing] than its defaults (the goals are stated for the defaults), e.g.
  RAFTVIP_HEARTBEAT_MS=40 RAFTVIP_ELECTION_TIMEOUT_MS=120,180 $0
EOF
}

while (($#)); do
    case $1 in
        -n) RUNS=$2; shift 2 ;;
        -w) WARMUP_S=$2; shift 2 ;;
        -m) WINDOW_S=$2; shift 2 ;;
        -k) KA_MODE=$2; shift 2 ;;
        --hb-cost) HB_COST=1; shift ;;
        -B) OTHER=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $WARMUP_S =~ ^[0-9]+$ && $WINDOW_S =~ ^[1-9][0-9]*$ ]] || die "bad -n, -w or -m"
[[ $KA_MODE == defaults || $KA_MODE == tuned ]] || die "-k takes defaults or tuned, not '$KA_MODE'"
[[ -z $OTHER || -x $OTHER ]] || die "-B: no executable at $OTHER"
[[ -n $OTHER ]] || command -v keepalived >/dev/null || die "keepalived is not installed (apt-get install keepalived)"
use_raftvip 0
# shellcheck source-path=SCRIPTDIR source=../integration/netns/keepalived.sh
source "$REPO/integration/netns/keepalived.sh"
KA_VIP4=192.0.2.200
HZ=$(getconf CLK_TCK)

# ---------------------------------------------------------------- /proc readers
cpu_ticks() { # PID -> utime + stime + cutime + cstime (keepalived forks its checks: count them)
    awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"
}
pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }
wakeups() { # PID -> voluntary + involuntary context switches of all its threads
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'
}
# nonces BOX: the box's nonce table size (signed peer requests of the last 10 s).
nonces() {
    bed_exec "$1" python3 "$BED_TOOL" metrics "$(bed_status_url "$1")/metrics" raftvip_table_entries 2>/dev/null |
        awk '/table="nonces"/ { print $2 }'
}

# row LABEL SYSTEM BOX ROLE TICKS RSS_KB PSS_KB WAKEUPS: one node's line of a window, "LABEL
# system box role cpu_pct rss_kb pss_kb wakeups_per_s", from the CPU ticks and wake-ups it
# counted over the window.
row() {
    awk -v l="$1" -v s="$2" -v b="$3" -v r="$4" -v d="$5" -v rss="$6" -v pss="$7" -v wk="$8" -v hz="$HZ" -v w="$WINDOW_S" \
        'BEGIN { printf "%s\t%s\t%s\t%s\t%.3f\t%d\t%d\t%.1f\n", l, s, b, r, d / hz / w * 100, rss, pss, wk / w }'
}
# show LOAD: a window's lines, readable, with the load average read before it.
show() {
    awk -F'\t' -v load="$1" \
        '{ printf "  %s %-10s box%s %-9s CPU %6.3f %%  RSS %5.1f MB  Pss %5.1f MB  wake-ups %5.1f/s   (load before: %s)\n", $1, $2, $3, $4, $5, $6 / 1024, $7 / 1024, $8, load }'
}

# ---------------------------------------------------------------- keepalived
ka_vrrp_pid() { cat "$(bed_boxdir "$1")/keepalived.vrrp.pid" 2>/dev/null; }
ka_holds_vip() { bed_exec "$1" ip -4 addr show dev eth0 | grep -q "$KA_VIP4/"; }

# ---------------------------------------------------------------- one measuring window
# window LABEL: one row per node to stdout.
window() {
    local label=$1 b role system k t0=() t1 w0=() w1 leader
    leader=$(bed_leader a)
    declare -A roles
    for b in 1 2 3; do
        if [[ $b == "$leader" ]]; then roles[rv$b]=leader; else roles[rv$b]=follower; fi
        if ka_holds_vip "$b"; then roles[ka$b]=master; else roles[ka$b]=backup; fi
    done
    # keys: rvB (raftvip of box B), kaB (keepalived parent + VRRP child of box B)
    declare -A pid
    for b in 1 2 3; do
        pid[rv$b]=$(bed_raftvip_pid "$b")
        pid[ka$b]="$(cat "$(bed_boxdir "$b")/keepalived.pid") $(ka_vrrp_pid "$b")"
    done
    local keys=(rv1 rv2 rv3 ka1 ka2 ka3)
    for k in "${keys[@]}"; do
        t0+=("$(for p in ${pid[$k]}; do cpu_ticks "$p"; done | awk '{ s += $1 } END { print s }')")
        w0+=("$(for p in ${pid[$k]}; do wakeups "$p"; done | awk '{ s += $1 } END { print s }')")
    done
    sleep "$WINDOW_S"
    # A window in which the leader changed measures an election, not idle: marked, not summed.
    local moved=""
    [[ $(bed_leader a) == "$leader" ]] || moved="*"
    local i=0
    for k in "${keys[@]}"; do
        t1=$(for p in ${pid[$k]}; do cpu_ticks "$p"; done | awk '{ s += $1 } END { print s }')
        w1=$(for p in ${pid[$k]}; do wakeups "$p"; done | awk '{ s += $1 } END { print s }')
        local rss=0 pss=0 p
        for p in ${pid[$k]}; do
            rss=$((rss + $(bed_pid_rss_kb "$p")))
            pss=$((pss + $(pss_kb "$p")))
        done
        role=${roles[$k]}
        [[ $k == ka* ]] || role+=$moved
        system=keepalived
        [[ $k == ka* ]] || system=raftvip
        row "$label" "$system" "${k:2}" "$role" $((t1 - t0[i])) "$rss" "$pss" $((w1 - w0[i]))
        i=$((i + 1))
    done
}

# summary FILE: min / median / p90 / max per system and role (leader/master vs follower/backup),
# without the windows in which the raftvip leader changed.
summary() {
    awk -F'\t' '
        $4 ~ /[*]$/ { next }
        { rv = $2 ~ /^raftvip/
          g = $2 " " (($4 ~ /^(leader|master)/) ? (rv ? "leader" : "master") : (rv ? "followers" : "backups"))
          n[g]++; cpu[g, n[g]] = $5; rss[g, n[g]] = $6; pss[g, n[g]] = $7; wk[g, n[g]] = $8 }
        function sorted(a, g, k,   i, j, t) { for (i = 1; i <= n[g]; i++) v[i] = a[g, i]
            for (i = 2; i <= n[g]; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t } }
        function stat(a, g, scale, fmt) { sorted(a, g)
            p90 = int(0.9 * n[g]); if (p90 < 0.9 * n[g]) p90++
            return sprintf(fmt " / " fmt " / " fmt " / " fmt, v[1] / scale, (v[int((n[g] + 1) / 2)] + v[int(n[g] / 2) + 1]) / 2 / scale, v[p90] / scale, v[n[g]] / scale) }
        END { for (g in n) printf "  %-22s n=%-2d CPU %% of a core %s   RSS MB %s   Pss MB %s   wake-ups/s %s\n", g, n[g],
                  stat(cpu, g, 1, "%.2f"), stat(rss, g, 1024, "%.1f"), stat(pss, g, 1024, "%.1f"), stat(wk, g, 1, "%.0f") }' "$1" | sort
}

# ---------------------------------------------------------------- -B: two builds, one box
# node_window LABEL BOX:SYSTEM:ROLE...: one window over the raftvip of each BOX, one row each.
node_window() {
    local label=$1 spec b pid t0=() w0=() i=0; shift
    for spec in "$@"; do
        pid=$(bed_raftvip_pid "${spec%%:*}")
        t0+=("$(cpu_ticks "$pid")"); w0+=("$(wakeups "$pid")")
    done
    sleep "$WINDOW_S"
    for spec in "$@"; do
        IFS=: read -r b system role <<<"$spec"
        pid=$(bed_raftvip_pid "$b")
        row "$label" "$system" "$b" "$role" $(($(cpu_ticks "$pid") - t0[i])) \
            "$(bed_pid_rss_kb "$pid")" "$(pss_kb "$pid")" $(($(wakeups "$pid") - w0[i]))
        i=$((i + 1))
    done
}

leads() { [[ $(bed_leader a) == "$1" ]]; }
# lead BOX: hands the lead to BOX (raftvip transfer) unless it has it, and lets it settle.
lead() {
    local leader
    leader=$(bed_leader a)
    if [[ $leader != "$1" ]]; then
        bed_raftvip_cli "$leader" transfer --to "$(bed_node_id "$1")" >/dev/null || die "transfer to box$1 failed"
    fi
    bed_wait 5000 leads "$1" || die "box$1 did not take the lead"
    sleep 3
}

compare_builds() {
    local out=$BED_DIR/compare.tsv r name bin load
    local -A builds=([A]=$RAFTVIP [B]=$OTHER)
    bed_create 3
    for b in 1 2 3; do bed_start_haproxy "$b"; done
    for b in 1 2 3; do bed_start_raftvip "$b" "$(timing_toml)"; done
    bed_wait 10000 bed_one_leader || die "no raftvip leader within 10 s"
    bed_log "box1 runs A: $RAFTVIP and B: $OTHER in turn; box2 (A) is the control; $(timing_line); $(nproc) cores"
    sleep "$WARMUP_S"
    : >"$out"
    for ((r = 1; r <= RUNS; r++)); do
        for name in A B; do
            bin=${builds[$name]}
            lead 3
            bed_kill_raftvip 1 TERM
            RAFTVIP=$bin bed_start_raftvip 1 "$(timing_toml)"
            lead 1; load=$(cut -d' ' -f1-3 /proc/loadavg)
            node_window "run$r" "1:raftvip-$name:leader" "2:control-$name-leader:follower" | tee -a "$out" | show "$load"
            lead 3; load=$(cut -d' ' -f1-3 /proc/loadavg)
            node_window "run$r" "1:raftvip-$name:follower" "2:control-$name-follower:follower" | tee -a "$out" | show "$load"
        done
    done
    echo "summary over $RUNS windows of ${WINDOW_S} s per build and role (min / median / p90 / max):"
    summary "$out" | grep -v control
    echo "box1's CPU over the control's (box2, a follower) in the same window, per build and box1's role (min / median / max):"
    awk -F'\t' '
        $2 ~ /^raftvip-/ { cpu[$1, substr($2, 9), $4] = $5 }
        $2 ~ /^control-/ { split($2, c, "-"); base[$1, c[2], c[3]] = $5 }
        END { for (k in cpu) if (base[k] > 0) { split(k, p, SUBSEP); g = p[2] " " p[3]; r[g] = r[g] " " cpu[k] / base[k] }
              for (g in r) { m = split(substr(r[g], 2), v, " ")
                  for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
                  printf "  raftvip-%-12s n=%-2d %.3f / %.3f / %.3f\n", g, m, v[1], (v[int((m + 1) / 2)] + v[int(m / 2) + 1]) / 2, v[m] } }' "$out" | sort
}

if [[ -n $OTHER ]]; then
    compare_builds
    exit 0
fi

# ---------------------------------------------------------------- the run
bed_create 3
for b in 1 2 3; do bed_start_haproxy "$b"; done
for b in 1 2 3; do bed_start_raftvip "$b" "$(timing_toml)"; done
for b in 1 2 3; do ka_start_box "$b" "$KA_MODE"; done
bed_wait 10000 bed_one_leader || die "no raftvip leader within 10 s"
bed_log "raftvip $("$RAFTVIP" --version | awk '{ print $2 }') ($RAFTVIP), keepalived $(keepalived --version 2>&1 | awk 'NR == 1 { print $2 }') ($KA_MODE), $(nproc) cores"
bed_log "raftvip timing: $(timing_line)$(timing_is_default && echo ' (the defaults)')"
bed_log "warming up ${WARMUP_S} s, then $RUNS windows of ${WINDOW_S} s"
sleep "$WARMUP_S"
for b in 1 2 3; do [[ -n $(ka_vrrp_pid "$b") ]] || die "keepalived on box$b did not start: $(tail -n 3 "$(bed_boxdir "$b")/keepalived.log")"; done

out=$BED_DIR/footprint.tsv
: >"$out"
for ((r = 1; r <= RUNS; r++)); do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    window "run$r" | tee -a "$out" | show "$load"
done
echo "summary over $RUNS windows of ${WINDOW_S} s (min / median / p90 / max; windows marked * saw a leader change and are left out):"
summary "$out"

if ((HB_COST)); then
    # Peer requests per second as the followers see them, and the CPU of that setting.
    rate_and_cpu() { # LABEL -> "leader_cpu follower_cpu requests_per_s_per_follower"
        local label=$1 leader n=0 sum=0 b
        leader=$(bed_leader a)
        for b in 1 2 3; do
            [[ $b == "$leader" ]] && continue
            sum=$((sum + $(nonces "$b"))); n=$((n + 1))
        done
        window "$label" >"$BED_DIR/$label.tsv"
        awk -F'\t' -v req="$(awk -v s="$sum" -v n="$n" 'BEGIN { print s / n / 10 }')" \
            '$2 == "raftvip" { if ($4 ~ /^leader/) l = $5; else { f += $5; nf++ } } END { print l, f / nf, req }' "$BED_DIR/$label.tsv"
    }
    read -r l1 f1 q1 <<<"$(rate_and_cpu hb-default)"
    hb=$HEARTBEAT_MS
    for b in 1 2 3; do bed_kill_raftvip "$b" TERM; done
    for b in 1 2 3; do bed_start_raftvip "$b" "$(HEARTBEAT_MS=$((hb / 2)) timing_toml)"; done
    bed_wait 10000 bed_one_leader || die "no raftvip leader within 10 s after the restart"
    sleep "$WARMUP_S"
    read -r l2 f2 q2 <<<"$(rate_and_cpu hb-half)"
    awk -v l1="$l1" -v f1="$f1" -v q1="$q1" -v l2="$l2" -v f2="$f2" -v q2="$q2" -v hb="$hb" 'BEGIN {
        printf "heartbeat round trip: heartbeat_ms %d -> %d: %.1f -> %.1f requests/s per follower\n", hb, hb / 2, q1, q2
        printf "  leader   CPU %.3f -> %.3f %%: %.0f us of CPU per round trip (per follower)\n", l1, l2, (l2 - l1) / 100 / (2 * (q2 - q1)) * 1e6
        printf "  follower CPU %.3f -> %.3f %%: %.0f us of CPU per round trip\n", f1, f2, (f2 - f1) / 100 / (q2 - q1) * 1e6 }'
fi
