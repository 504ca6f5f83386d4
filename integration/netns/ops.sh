# shellcheck shell=bash
# Scenarios for the operator scripts (scripts/cluster-status.sh, drain.sh, failover-drill.sh,
# rolling-upgrade.sh), run the way an operator runs them: on a box (inside its namespace),
# with that box's config, talking HTTP to the peers. Sourced by run.sh (fail, note, setup,
# holder come from there).

# ops_run BOX SCRIPT ARGS...: a script on a box with the box's config; output in $OPS_OUT,
# exit code in $OPS_RC (never fails the caller).
ops_run() {
    local box=$1 script=$2; shift 2
    OPS_RC=0
    OPS_OUT=$(bed_exec "$box" env RAFTVIP_BIN="$(bed_raftvip_bin)" "$BED_REPO/scripts/$script" \
        --config "$(bed_boxdir "$box")/raftvip-a.toml" "$@" 2>&1) || OPS_RC=$?
    printf '=== %s %s -> %s\n%s\n' "$script" "$*" "$OPS_RC" "$OPS_OUT" >&2
}
ops_expect() { # ops_expect RC TEXT: the last ops_run exited RC and printed TEXT
    ((OPS_RC == $1)) || fail "expected exit $1, got $OPS_RC: $(tail -n 3 <<<"$OPS_OUT")"
    [[ -z ${2:-} || $OPS_OUT == *"$2"* ]] || fail "output lacks '$2': $(tail -n 5 <<<"$OPS_OUT")"
}

scn_ops_cluster_status() {
    local h f dir other
    setup 3
    h=$(holder)
    ops_run 1 cluster-status.sh
    ops_expect 0 "cluster: HEALTHY  (VIPs on node $h)"
    grep -Eq "^$h +leader +$h +[0-9]+ +off +\(leader\) +healthy +$(bed_vip4 a)/32,$(bed_vip6 a)/128\$" <<<"$OPS_OUT" ||
        fail "the table does not show node $h as leader holding both VIPs: $OPS_OUT"
    ops_run 1 cluster-status.sh --json
    ops_expect 0
    [[ $(jq -r '"\(.verdict) \(.holders | join(","))"' <<<"$OPS_OUT") == "healthy $h" ]] ||
        fail "--json: $(jq -c '{verdict, holders}' <<<"$OPS_OUT")"
    # A follower restarted with another secret: the others refuse its requests and it refuses
    # theirs. Its stored vote still names the leader, yet it follows nobody: degraded.
    f=$((h % 3 + 1))
    bed_kill_raftvip "$f"
    dir=$(bed_boxdir "$f")
    other=$BED_DIR/secret-other
    bed_new_secret "$other"
    sed "s|^secret_file = .*|secret_file = \"$other\"|" "$dir/raftvip-a.toml" >"$dir/raftvip-other.toml"
    bed_run_raftvip "$f" "$dir/raftvip-other.toml"
    bed_wait_raftvip "$f"
    ops_run "$h" cluster-status.sh
    ops_expect 1 "node $f does not follow leader $h (it follows: none)"
    [[ $(bed_status "$f" leader_id) == null ]] || fail "box$f, started with another secret, names leader $(bed_status "$f" leader_id)"
    # A follower gone: degraded.
    bed_kill_raftvip "$f"
    ops_run "$h" cluster-status.sh
    ops_expect 1 "node $f (192.0.2.1$f:7480) unreachable"
    # Only the holder left: no quorum, it fences the VIP away, nobody leads: broken.
    bed_kill_raftvip $((f % 3 + 1))
    bed_wait_no_holder 3000 || fail "the lone holder kept the VIP"
    ops_run "$h" cluster-status.sh
    ops_expect 2 "no node holds the VIPs"
    note "holder=box$h"
}

ops_sessions_on() { # BOX: its HAProxy frontend has a current session
    bed_haproxy_cmd "$1" "show stat" | awk -F, '$2 == "FRONTEND" && $5 > 0 { n = 1 } END { exit !n }'
}

scn_ops_drain() {
    local h n f b
    setup 3
    h=$(holder)
    # Idle client sessions on the holder's own address, a new one every 0.2 s (HAProxy closes
    # each after its 5 s client timeout): drain waits while they last.
    local opener
    # shellcheck disable=SC2016 # for the client's bash
    ip netns exec "$(bed_ns client)" bash -c 'for _ in $(seq 150); do exec {fd}<>"/dev/tcp/$1/$2"; sleep 0.2; done' \
        opener "$(bed_addr4 "$h")" "$BED_HTTP_PORT" &
    opener=$!
    bed_wait 2000 ops_sessions_on "$h" || fail "the client sessions did not reach box$h's HAProxy"
    ops_run "$h" drain.sh on --drain-timeout 1
    ops_expect 1 "after 1s (it stays in maintenance)"
    kill "$opener"
    ops_run "$h" drain.sh on
    ops_expect 0 "node $h: drained"
    n=$(holder "" "$h")
    [[ $OPS_OUT == *"now held by node $n"* ]] || fail "drain names the wrong new holder: $OPS_OUT"
    [[ $OPS_OUT == *"HAProxy frontends have no sessions left"* ]] || fail "no HAProxy drain check: $OPS_OUT"
    ops_run "$n" cluster-status.sh
    ops_expect 1 "node $h in maintenance"
    # Draining the last box that could take over is refused, nothing changes.
    f=$((6 - h - n))
    ops_run "$f" drain.sh on
    ops_expect 0 "node $f: drained"
    ops_run "$n" drain.sh on
    ops_expect 2 "no other reachable node stands in elections"
    [[ $(bed_holders) == "$n" ]] || fail "a refused drain moved the VIP (holders: $(bed_holders))"
    ops_run "$n" drain.sh off --node "$h"
    ops_expect 0 "node $h: back in service; VIPs held by node $n"
    ops_run "$n" drain.sh off --node "$f"
    ops_expect 0
    ops_run "$h" cluster-status.sh
    ops_expect 0 "(VIPs on node $n)"
    # Every box in maintenance (the raw CLI with --force, which refuses the leader without it
    # when no other box can take over): nobody holds; drain.sh off on one box waits until the
    # VIPs are back on it.
    for b in 1 2 3; do bed_raftvip_cli "$b" maintenance on --force >/dev/null; done
    bed_wait_no_holder 5000 || fail "the VIPs stayed on box$(bed_holders) with every box in maintenance"
    ops_run "$h" drain.sh off
    ops_expect 0 "node $h: back in service; VIPs held by node $h"
    note "box$h->box$n"
}

scn_ops_failover_drill() {
    local h n
    setup 3
    h=$(holder)
    # Refused, nothing changed, while the cluster is degraded.
    bed_raftvip_cli 1 maintenance on --node $((h % 3 + 1)) >/dev/null
    ops_run 1 failover-drill.sh
    ops_expect 2 "node $((h % 3 + 1)) in maintenance"
    [[ $(bed_holders) == "$h" ]] || fail "a refused drill moved the VIP (holders: $(bed_holders))"
    bed_raftvip_cli 1 maintenance off --node $((h % 3 + 1)) >/dev/null
    ops_run 1 failover-drill.sh --probe "http://$(bed_vip4 a)/" --probe-cmd "ip netns exec $(bed_ns client)"
    ops_expect 0 "old holder: node $h"
    n=$(holder "" "$h")
    [[ $OPS_OUT == *"new holder: node $n "* ]] || fail "drill names the wrong new holder (kernel: box$n): $OPS_OUT"
    [[ $OPS_OUT =~ (outage [0-9]+ ms) ]] && note "${BASH_REMATCH[1]}"
    [[ $(bed_status "$h" maintenance) == false ]] || fail "the drill left node $h in maintenance"
    note "box$h->box$n"
}

# The bed's stand-in for `systemctl restart raftvip` on box ID: SIGTERM (graceful), start again.
ops_write_restart() {
    local b dir
    # shellcheck disable=SC2016 # the generated script expands these
    {
        echo 'set -eu'
        echo 'case $1 in'
        for b in $(bed_boxes a); do
            dir=$(bed_boxdir "$b")
            echo "$b) d=$dir ;;"
        done
        echo 'esac'
        echo 'p=$(cat "$d/raftvip.pid"); kill -TERM "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.05; done'
        echo "setsid $RAFTVIP run --config \"\$d/raftvip-a.toml\" >>\"\$d/raftvip.log\" 2>&1 </dev/null &"
        echo 'echo $! >"$d/raftvip.pid"'
    } >"$BED_DIR/restart-raftvip"
}

scn_ops_rolling_upgrade() {
    local h pids_before b new
    bed_create 3
    # The "installed" binary every box runs; the upgrade replaces it with the one under test.
    new=$(bed_raftvip_bin)
    cp "$new" "$BED_DIR/raftvip-installed"
    export RAFTVIP=$BED_DIR/raftvip-installed
    start_cluster_boxes a
    h=$(holder)
    ops_write_restart
    pids_before=$(cat "$BED_DIR"/box*/raftvip.pid)
    local args=(--binary "$new" --install-path "$RAFTVIP"
        --exec-cmd "ip netns exec $BED_ID-box{id}" --restart-cmd "bash $BED_DIR/restart-raftvip {id}")
    # A failing restart stops the roll at the first node and says where.
    ops_run 1 rolling-upgrade.sh "${args[@]:0:6}" --restart-cmd false
    ops_expect 1 "STOPPED at node"
    [[ $OPS_OUT == *"step 'restart'"* ]] || fail "the stop does not name the step: $OPS_OUT"
    b=$(grep -o 'STOPPED at node [0-9]' <<<"$OPS_OUT" | awk '{ print $4 }')
    ((b != h)) || fail "the roll started with the holder (node $h)"
    ops_run 1 drain.sh off --node "$b"
    ops_expect 0
    # The real roll.
    pids_before=$(cat "$BED_DIR"/box*/raftvip.pid)
    ops_run 1 rolling-upgrade.sh "${args[@]}"
    ops_expect 0 "all nodes upgraded"
    [[ $OPS_OUT == *"order: "*" $h"$'\n'* ]] || fail "the holder (node $h) was not last: $OPS_OUT"
    [[ $(cat "$BED_DIR"/box*/raftvip.pid) != "$pids_before" ]] || fail "no raftvip was restarted"
    for b in 1 2 3; do
        grep -qx "$(sed -n "${b}p" <<<"$pids_before")" "$BED_DIR/box$b/raftvip.pid" &&
            fail "raftvip on box$b was not restarted"
    done
    holder >/dev/null
    ops_run 1 cluster-status.sh
    ops_expect 0
    note "holder box$h last"
}

# The migration path on the bed: each box's keepalived.conf (the template bench-failover.sh
# runs keepalived with) -> raftvip import-keepalived -> placeholders filled -> check-config ->
# three raftvip daemons -> one holder, and cluster-status.sh says healthy.
scn_ops_import_keepalived() {
    local b o dir peers conf template
    bed_create 3
    for b in $(bed_boxes a); do bed_start_haproxy "$b"; done
    for b in $(bed_boxes a); do
        dir=$(bed_boxdir "$b")
        peers=""
        for o in $(bed_boxes a); do [[ $o == "$b" ]] || peers+="        $(bed_addr4 "$o")"$'\n'; done
        template=$(<"$BED_LIB_DIR/keepalived.cfg.in")
        sed -e "s|@ROUTER_ID@|box$b|; s|@VRRP_VERSION@|2|; s|@ADVERT_INT@|1|; s|@PRIORITY@|$((101 - b))|" \
            -e "s|@SRC@|$(bed_addr4 "$b")|; s|@VIP@|$(bed_vip4 a)/32|; s|@CHECK@|/bin/true|; s|@FALL@|2|; s|@RISE@|2|" \
            <<<"${template//@PEERS@/${peers%$'\n'}}" >"$dir/keepalived.conf"
        conf=$dir/raftvip-a.toml
        "$(bed_raftvip_bin)" import-keepalived "$dir/keepalived.conf" >"$conf" 2>"$dir/import.err" ||
            fail "import-keepalived on box$b: $(cat "$dir/import.err")"
        grep -q "^node_id = $b " "$conf" || fail "box$b's conversion names another node_id: $(grep '^node_id' "$conf")"
        grep -q "virtual_router_id 51 — no VRID" "$conf" || fail "the VRID is not explained in the output"
        # What the operator fills in.
        sed -i -e "s|^secret_file = .*|secret_file = \"$BED_DIR/secret-a\"|" -e "s|^data_dir = .*|data_dir = \"$dir/data-imported\"|" \
            -e "s|^stats_socket = .*|stats_socket = \"$dir/haproxy.sock\"|" "$conf"
        "$(bed_raftvip_bin)" check-config --config "$conf" >/dev/null 2>"$dir/check.err" ||
            fail "check-config rejects box$b's converted config: $(cat "$dir/check.err")"
    done
    for b in $(bed_boxes a); do
        bed_run_raftvip "$b" "$(bed_boxdir "$b")/raftvip-a.toml"
    done
    b=$(holder "" "" 10000)
    ops_run 1 cluster-status.sh
    ops_expect 0 "(VIPs on node $b)"
    note "holder=box$b"
}
