#!/usr/bin/env bash
# term-guard.sh: runs an external action from a raftvip hook unless a newer Raft term already
# acted, e.g. moving a cloud provider's IP to the box that became MASTER.
#
# Usage, in [notify] (a command line: no shell, arguments separated by spaces):
#   master = "/etc/raftvip/term-guard.sh RECORD COMMAND [ARG...]"
# e.g. on AWS, with RECORD on storage every box mounts:
#   master = "/etc/raftvip/term-guard.sh /mnt/lb-shared/cloud-ip.term /usr/bin/aws ec2
#             assign-private-ip-addresses --network-interface-id eni-0abc
#             --private-ip-addresses 10.0.0.10 --allow-reassignment"   (one line)
#
# Why: hooks run in order on one box, but every box runs its own. A MASTER hook of an old term
# can run after the new holder's: the old holder's cloud call was slow or retried, or it ran
# late after a partition, and takes the IP back from the box that now holds the VIP (the race
# keepalived's notify_master_rx_lower_pri papers over). Raft terms only grow and each term has
# at most one leader, so acting only for a term no older than the highest one acted for, and
# recording it first, refuses the stale action. The same term again is the same leader
# confirming (after a partition heals, or a restart of raftvip): the action runs again, so it
# must be idempotent (assigning an IP is).
#
# RECORD holds the highest term acted for, and RECORD.lock is held (flock) from the check to
# the end of the action, so two boxes never act at once. Both must be seen by every box: a
# file on shared storage as here, or replace read_record/write_record and the lock with your
# store's compare-and-swap (a Consul/etcd key) or a tag on the cloud resource itself.
#
# Exit status: 0 acted; 3 refused a stale term; 2 usage or a broken record; else COMMAND's.
set -euo pipefail
export LC_ALL=C

usage() {
    cat >&2 <<USAGE
Usage: $0 RECORD COMMAND [ARG...]
Runs COMMAND unless RECORD holds a term newer than \$RAFTVIP_TERM; records \$RAFTVIP_TERM first.
Meant to run from a raftvip [notify] hook, which sets RAFTVIP_TERM.
USAGE
    exit 2
}
die() { printf 'term-guard: %s\n' "$*" >&2; exit 2; }

read_record() { # prints the recorded term, 0 when there is none yet
    local term=0
    [[ ! -s $1 ]] || term=$(<"$1")
    [[ $term =~ ^[0-9]+$ ]] || die "$1 holds '$term', not a term: fix or remove it"
    echo "$term"
}
write_record() { # write_record RECORD TERM: atomically (a crash leaves the old or the new)
    printf '%s\n' "$2" >"$1.tmp"
    mv -f "$1.tmp" "$1"
}

main() {
    (($# >= 2)) || usage
    local record=$1 term=${RAFTVIP_TERM:-} highest
    shift
    [[ $term =~ ^[0-9]+$ ]] || die "RAFTVIP_TERM is '$term': run me from a raftvip [notify] hook"
    exec 9>>"$record.lock"
    flock 9
    highest=$(read_record "$record")
    if ((term < highest)); then
        echo "refused for term $term: term $highest already acted; not running: $*" >&2
        exit 3
    fi
    write_record "$record" "$term"
    echo "term $term (node ${RAFTVIP_NODE_ID:-?}, ${RAFTVIP_STATE:-?}): running: $*"
    "$@" 9>&-
}

main "$@"
