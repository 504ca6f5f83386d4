#!/bin/sh
# A keepalived notify script as operators have them (keepalived.conf: `notify /etc/keepalived/
# notify.sh`), kept as it was: raftvip's `[notify] script` passes the same arguments.
#   $1 = "INSTANCE" (keepalived also sends "GROUP"; raftvip has no groups)
#   $2 = the instance name (raftvip: the cluster name)
#   $3 = the state: MASTER, BACKUP, FAULT or STOP
#   $4 = the priority (raftvip: 100 on a voter, 0 on a witness)

TYPE=$1
NAME=$2
STATE=$3
PRIORITY=$4
LOG=/var/log/keepalived-notify.log

log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') $TYPE $NAME $STATE $PRIORITY: $*" >>"$LOG"
}

case $STATE in
    MASTER)
        log "now MASTER"
        echo "took over $NAME"
        ;;
    BACKUP)
        log "now BACKUP"
        ;;
    FAULT)
        log "FAULT: health check failed"
        ;;
    STOP)
        log "stopped"
        ;;
    *)
        echo "unknown state $STATE" >&2
        exit 1
        ;;
esac
exit 0
