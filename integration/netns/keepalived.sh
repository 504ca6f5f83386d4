# shellcheck shell=bash
# keepalived on the netns test bed (lib.sh), for the benchmarks that measure raftvip against it
# (scripts/bench-failover.sh, scripts/bench-raft.sh). Source it after lib.sh; boxes are numbers
# as there. One keepalived per box, VRRP on eth0 for cluster "a"'s IPv4 VIP, configured from
# keepalived.cfg.in (which says what each mode means and why the check is a TCP connect): the
# box's HAProxy must run for its check to pass.
#
#   ka_start_box BOX MODE   MODE: defaults (VRRPv2, advert_int 1, check fall 2 rise 2) or
#                           tuned (VRRPv3, advert_int 0.1, check fall 1 rise 1); waits until it
#                           has entered a state
#   ka_stop_box BOX         SIGTERM, waits until it is gone
#   ka_state BOX            the last "Entering X STATE" of the box's current keepalived
#   ka_agree                exactly one MASTER, the others BACKUP, and the MASTER alone holds
#                           the VIP
#
# Files in the box's directory: keepalived-MODE.conf, ka-check.sh, keepalived.log (appended,
# one "=== start" line per start), keepalived.pid (the process started), keepalived.pidfile
# and keepalived.vrrp.pid (keepalived's own: the parent and its VRRP child).

KA_TEMPLATE=$BED_LIB_DIR/keepalived.cfg.in
# The IPv4 VIP keepalived manages: cluster "a"'s unless set (another address lets keepalived run
# beside raftvip at the same time, as scripts/bench-footprint.sh does).
KA_VIP4=${KA_VIP4:-}

# ka_priority BOX -> the box's VRRP priority: 250, 210, 170 ... (keepalived.cfg.in says why the
# steps are this wide).
ka_priority() {
    (($1 >= 1 && $1 <= 7)) || bed_die "keepalived priorities are laid out for boxes 1-7, not box$1"
    echo $((250 - 40 * ($1 - 1)))
}

# ka_config BOX MODE -> the path of the box's config for MODE.
ka_config() {
    local box=$1 mode=$2 dir ver adv fall rise peers="" b priority
    # (Not inside sed's arguments: there a failed substitution would go unnoticed.)
    priority=$(ka_priority "$box") || return 1
    dir=$(bed_boxdir "$box")
    case $mode in
        defaults) ver=2 adv=1 fall=2 rise=2 ;;
        tuned) ver=3 adv=0.1 fall=1 rise=1 ;;
        *) bed_die "keepalived mode '$mode' (defaults or tuned)" ;;
    esac
    for b in $(bed_boxes a); do [[ $b == "$box" ]] || peers+="        $(bed_addr4 "$b")\n"; done
    # The check: a TCP connect to this box's own HAProxy frontend (refused at once when dead).
    printf '#!/bin/bash\nexec 3<>/dev/tcp/%s/%s\n' "$(bed_addr4 "$box")" "$BED_HTTP_PORT" >"$dir/ka-check.sh"
    chmod 755 "$dir/ka-check.sh"
    # Comment lines are dropped first: they name the placeholders too.
    sed -e '/^[[:space:]]*#/d' -e "s|@ROUTER_ID@|$BED_ID-box$box|" -e "s|@VRRP_VERSION@|$ver|" -e "s|@ADVERT_INT@|$adv|" \
        -e "s|@PRIORITY@|$priority|" -e "s|@VIP@|${KA_VIP4:-$(bed_vip4)}/32|" -e "s|@CHECK@|$dir/ka-check.sh|" \
        -e "s|@SRC@|$(bed_addr4 "$box")|" -e "s|@PEERS@|${peers%\\n}|" -e "s|@FALL@|$fall|" -e "s|@RISE@|$rise|" \
        "$KA_TEMPLATE" >"$dir/keepalived-$mode.conf"
    echo "$dir/keepalived-$mode.conf"
}

ka_start_box() {
    local box=$1 mode=$2 dir conf
    dir=$(bed_boxdir "$box")
    conf=$(ka_config "$box" "$mode")
    echo "=== start $mode $(date +%T.%N)" >>"$dir/keepalived.log"
    rm -f "$dir/keepalived.pidfile" "$dir/keepalived.vrrp.pid"
    ip netns exec "$(bed_ns "$box")" keepalived -n -l -D -P -f "$conf" \
        -p "$dir/keepalived.pidfile" -r "$dir/keepalived.vrrp.pid" >>"$dir/keepalived.log" 2>&1 &
    echo $! >"$dir/keepalived.pid"
    bed_wait 5000 ka_has_state "$box" ||
        bed_die "keepalived on box$box did not start: $(tail -n 5 "$dir/keepalived.log")"
}
ka_stop_box() { bed_kill_pidfile "$(bed_boxdir "$1")/keepalived.pid" TERM; }

ka_state() {
    awk '/^=== start/ { s = "" } /Entering [A-Z]+ STATE/ { for (i = 1; i < NF; i++) if ($i == "Entering") s = $(i + 1) }
         END { print s }' "$(bed_boxdir "$1")/keepalived.log"
}
ka_has_state() { [[ -n $(ka_state "$1") ]]; }

ka_agree() {
    local b s masters=0 m=""
    for b in $(bed_boxes a); do
        s=$(ka_state "$b")
        case $s in
            MASTER) masters=$((masters + 1)); m=$b ;;
            BACKUP) ;;
            *) return 1 ;;
        esac
    done
    ((masters == 1)) && [[ $(bed_holders "${KA_VIP4:-$(bed_vip4)}") == "$m" ]]
}
