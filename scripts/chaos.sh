#!/usr/bin/env bash
# A seeded randomized fault run on the netns bed (integration/netns/lib.sh): three boxes with
# real HAProxy and raftvip, a client probing the VIP every 10 ms, and one fault at a time
# every 3-6 s, mostly on the holder, healed after 1-3 s. The VIP's holders come from the
# boxes' `ip monitor address` timelines (exact add/delete times, no sampling gap). Prints
# availability, outages, two-holder and zero-holder episodes (overall and per fault type)
# and panics/errors in the logs; exits 1 past a limit. See docs/reliability.md.
#
#   fault        what it does                                  healed by
#   kill         SIGKILL the box's raftvip                     starting it again
#   stop         SIGSTOP the box's raftvip (frozen process)    SIGCONT
#   term         SIGTERM the box's raftvip (planned stop)      starting it again
#   haproxy      SIGKILL every HAProxy process of the box      starting HAProxy again
#   link         the box's link on the bridge down             link up
#   cut          nft drops the box's traffic with its peers    removing the rules
#   restart_all  SIGTERM every raftvip at once, start them all (no heal wait)
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../integration/netns/lib.sh
source "$HERE/../integration/netns/lib.sh"

ALL_FAULTS=kill,stop,term,haproxy,link,cut,restart_all

usage() {
    cat <<USAGE
Usage: $0 [options]

  --seed N                  random seed (default: from the clock, printed)
  --duration S              seconds of faults (default 60)
  --faults LIST             comma-separated subset of $ALL_FAULTS (default: all)
  --holder-share PCT        % of faults aimed at the holder (default 75)
  --min-availability PCT    fail below (default 99.9; -1: off)
  --max-outage-ms MS        fail if the longest client outage is longer (default 300)
  --max-two-holder-ms MS    fail if a two-holder episode lasts longer (default 1500:
                            the 1 s address lifetime + 0.5 s)
  --max-two-holder-other N  fail past N two-holder episodes after faults other than
                            kill, stop and term (default 0); a restart_all counts as term
                            until it starts the raftvips again
  --max-planned-overlap-ms MS
                            fail if the two-holder episode of a SIGTERM's make-before-break
                            handover lasts longer (default 250: the 200 ms bound + 50 ms)
  --max-panics N            fail past N panics in the raftvip logs (default 0)
                            (always: fail unless one box holds the VIP 5 s after the last heal)
  --keep DIR                copy the bed's files (logs, timelines, probe) to DIR
  -h, --help                this help

Needs root, haproxy, iproute2, nftables, python3 and target/release/raftvip (or RAFTVIP).
The same seed gives the same fault sequence (fault types, targets, delays); timings still
vary with the machine.
USAGE
}

die() { echo "chaos.sh: $*" >&2; exit 2; }

seed="" duration=60 faults=$ALL_FAULTS holder_share=75 keep=""
limits=(--min-availability=99.9 --max-outage-ms=300 --max-two-holder-ms=1500
    --max-two-holder-other=0 --max-planned-overlap-ms=250 --max-panics=0)
set_limit() { # set_limit NAME VALUE: replaces the default of --NAME
    local i
    for i in "${!limits[@]}"; do
        if [[ ${limits[$i]} == "--$1="* ]]; then limits[i]="--$1=$2"; fi
    done
}
while (($#)); do
    case $1 in
        --seed) seed=${2:?--seed needs a number}; shift 2 ;;
        --duration) duration=${2:?--duration needs seconds}; shift 2 ;;
        --faults) faults=${2:?--faults needs a list}; shift 2 ;;
        --holder-share) holder_share=${2:?--holder-share needs a percentage}; shift 2 ;;
        --min-availability | --max-outage-ms | --max-two-holder-ms | --max-two-holder-other | \
            --max-planned-overlap-ms | --max-panics)
            set_limit "${1#--}" "${2:?$1 needs a value}"; shift 2 ;;
        --keep) keep=${2:?--keep needs a directory}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $duration =~ ^[0-9]+$ ]] || die "--duration must be whole seconds, not '$duration'"
declare -a fault_kinds
IFS=, read -r -a fault_kinds <<<"$faults"
for f in "${fault_kinds[@]}"; do
    [[ ,$ALL_FAULTS, == *",$f,"* ]] || die "unknown fault '$f' (known: $ALL_FAULTS)"
done
((${#fault_kinds[@]})) || die "--faults is empty"
[[ -n $seed ]] || seed=$((${EPOCHREALTIME/./} % 1000000))
[[ $seed =~ ^[0-9]+$ ]] || die "--seed must be a number, not '$seed'"
RANDOM=$seed

# rand LO HI: a random integer in [LO, HI] into $r (no subshell: RANDOM must advance here).
rand() { r=$(($1 + RANDOM % ($2 - $1 + 1))); }

BOXES=3
start_raftvip_all() {
    local b
    for b in $(seq 1 "$BOXES"); do bed_start_raftvip "$b"; done
}
restart_raftvip() { # restart_raftvip BOX: start it again unless it runs
    local pidfile; pidfile="$(bed_boxdir "$1")/raftvip.pid"
    [[ -f $pidfile ]] && bed_pid_alive "$(cat "$pidfile")" && return 0
    bed_start_raftvip "$1"
}

# apply KIND BOX / heal KIND BOX
apply() {
    case $1 in
        kill) bed_kill_raftvip "$2" KILL ;;
        stop) kill -STOP "$(cat "$(bed_boxdir "$2")/raftvip.pid")" ;;
        term) bed_kill_raftvip "$2" TERM ;;
        haproxy) bed_kill_haproxy "$2" KILL ;;
        link) bed_link_down "$2" ;;
        cut) bed_cut "$2" >/dev/null 2>&1 ;;
        restart_all)
            local b pids=()
            for b in $(seq 1 "$BOXES"); do pids+=("$(cat "$(bed_boxdir "$b")/raftvip.pid")"); done
            kill -TERM "${pids[@]}" 2>/dev/null || true
            if ! bed_wait 3000 bed_all_gone "${pids[@]}"; then
                echo "warning: a raftvip did not stop within 3 s of SIGTERM: SIGKILL"
                kill -KILL "${pids[@]}" 2>/dev/null || true
                bed_wait 1000 bed_all_gone "${pids[@]}" || die "a raftvip survived SIGKILL"
            fi
            for b in $(seq 1 "$BOXES"); do rm -f "$(bed_boxdir "$b")/raftvip.pid"; done
            restarted=$(bed_now_ms)
            start_raftvip_all ;;
    esac
}
heal() {
    case $1 in
        kill | term) restart_raftvip "$2" ;;
        stop) kill -CONT "$(cat "$(bed_boxdir "$2")/raftvip.pid")" ;;
        haproxy) bed_start_haproxy "$2" ;;
        link) bed_link_up "$2" ;;
        cut) bed_heal "$2" ;;
        restart_all) ;;
    esac
}

main() {
    [[ -z $keep ]] || export BED_KEEP=$keep
    bed_create "$BOXES"
    local b
    for b in $(seq 1 "$BOXES"); do bed_start_haproxy "$b"; done
    start_raftvip_all
    bed_wait_holder 10000 >/dev/null || die "no single holder 10 s after start"
    local probe faults_log="$BED_DIR/faults.log" start end now kind target holders gap hold t0 restarted
    probe=$(bed_probe_start "$(bed_vip4)" probe)
    bed_probe_wait_ok "$probe" 3000 || die "the client cannot reach the VIP"
    : >"$faults_log"
    echo "chaos: seed=$seed duration=${duration}s faults=$faults bed=$BED_ID"
    start=$(bed_now_ms)
    end=$((start + duration * 1000))
    while :; do
        rand 3000 6000; gap=$r
        rand 1000 3000; hold=$r
        rand 0 $((${#fault_kinds[@]} - 1)); kind=${fault_kinds[$r]}
        rand 1 100
        holders=$(bed_holders)
        if ((r <= holder_share)) && [[ -n $holders && $holders != *" "* ]]; then
            target=$holders
        else
            rand 1 "$BOXES"; target=$r
        fi
        [[ $kind == restart_all ]] && target=all
        (($(bed_now_ms) + hold < end)) || break
        t0=$(bed_now_ms) restarted=""
        apply "$kind" "$target"
        [[ $kind == restart_all ]] || sleep "$(printf '%d.%03d' $((hold / 1000)) $((hold % 1000)))"
        heal "$kind" "$target"
        echo "$t0 $(bed_now_ms) $kind $target${restarted:+ $restarted}" >>"$faults_log"
        printf '  +%5d ms %-11s box %-3s healed after %d ms (holders before: %s)\n' \
            "$((t0 - start))" "$kind" "$target" "$(($(bed_now_ms) - t0))" "${holders:-none}"
        now=$(bed_now_ms)
        ((t0 + gap > now)) && sleep "$(printf '%d.%03d' $(((t0 + gap - now) / 1000)) $(((t0 + gap - now) % 1000)))"
        (($(bed_now_ms) < end)) || break
    done
    # Liveness: the cluster recovers. One holder within 5 s of the last heal.
    local panics errors rc=0 recovered=1
    bed_wait_holder 5000 >/dev/null || recovered=0
    end=$(bed_now_ms)
    bed_probe_stop probe
    panics=$(cat "$BED_DIR"/box*/raftvip.log | grep -c 'panicked' || true)
    errors=$(cat "$BED_DIR"/box*/raftvip.log | grep -c ' ERROR ' || true)
    # shellcheck disable=SC2046 # one monitor spec per word
    python3 "$BED_TOOL" chaos-report "$probe" "$faults_log" "$(bed_vip4)" "$start" "$end" \
        "${limits[@]}" --panics="$panics" --errors="$errors" $(bed_monitor_specs) || rc=$?
    if ((!recovered)); then
        echo "LIMIT EXCEEDED: no single holder 5 s after the last heal (holders: '$(bed_holders)')"
        rc=1
    fi
    if ((errors)); then
        echo "ERROR lines (first 10):"
        # awk, not grep | head: with pipefail, head closing the pipe early fails the run.
        awk '/ ERROR / && shown++ < 10 { print substr($0, 1, 200) }' "$BED_DIR"/box*/raftvip.log
    fi
    echo "final holders: '$(bed_holders)'; rerun: $0 --seed $seed --duration $duration --faults $faults"
    return "$rc"
}

main
