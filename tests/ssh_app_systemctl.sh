#!/bin/sh
# A stand-in for systemctl on the test SSH hosts (installed as $HOME/bin/systemctl by
# tests/ssh_app.py). Units are files $HOME/units/<unit> holding the command to run; each
# runs as a real process in its own session, its pid in $HOME/run/<unit>.pid. It supports
# start, stop, restart, is-active and show (-p/--property Id,LoadState,ActiveState) with
# systemctl's output and exit codes; every start and stop that happened is appended to
# $HOME/events.log as "<unix time with ns> <start|stop> <unit>" once the process is up
# (it runs the unit's command, as Type=exec) or gone. Every call goes to $HOME/calls.log.
# Units are handled one after the other, in the given order.
set -uf

# The app's root is where this script lives (bin/..): HOME may be another under sudo.
HOME=$(cd "$(dirname "$0")/.." && pwd)
export HOME
UNITS="$HOME/units"
RUN="$HOME/run"
LOGS="$HOME/logs"
EVENTS="$HOME/events.log"
SELF_EXE=$(readlink /proc/$$/exe)

{ printf '%s %s\n' "$(date +%s.%N)" "$*" >>"$HOME/calls.log"; } 2>/dev/null

event() {
    printf '%s %s %s\n' "$(date +%s.%N)" "$1" "$2" >>"$EVENTS"
}

# A process that runs (a zombie does not).
alive() {
    [ -n "$1" ] && read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    rest=${stat##*) }
    [ "${rest%% *}" != Z ]
}

main_pid() {
    pid=""
    read -r pid 2>/dev/null <"$RUN/$1.pid"
    echo "$pid"
}

# active | inactive | failed (its process died without a stop)
state_of() {
    if [ ! -f "$RUN/$1.pid" ]; then
        echo inactive
    elif alive "$(main_pid "$1")"; then
        echo active
    else
        echo failed
    fi
}

start_unit() {
    if [ ! -f "$UNITS/$1" ]; then
        echo "Failed to start $1.service: Unit $1.service not found." >&2
        return 5
    fi
    [ "$(state_of "$1")" = active ] && return 0
    mkdir -p "$RUN" "$LOGS"
    rm -f "$RUN/$1.pid"
    # shellcheck disable=SC2016  # expanded by the unit's own shell
    setsid sh -c 'echo $$ >"$1.new" && mv "$1.new" "$1"; cmd=$(cat "$2"); eval "exec $cmd"' \
        sh "$RUN/$1.pid" "$UNITS/$1" </dev/null >>"$LOGS/$1.log" 2>&1 &
    deadline=$(($(date +%s) + 10))
    while :; do
        pid=$(main_pid "$1")
        if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe")" != "$SELF_EXE" ]; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "Job for $1.service failed because a timeout was exceeded." >&2
            return 1
        fi
        sleep 0.02
    done
    event start "$1"
}

stop_unit() {
    if [ ! -f "$UNITS/$1" ]; then
        echo "Failed to stop $1.service: Unit $1.service not loaded." >&2
        return 5
    fi
    # A failed unit stays failed until it starts again (as systemd keeps it).
    [ "$(state_of "$1")" = active ] || return 0
    pid=$(main_pid "$1")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    deadline=$(($(date +%s) + 10)) # systemd's default is 90 s
    while alive "$pid"; do
        if [ -n "$deadline" ] && [ "$(date +%s)" -ge "$deadline" ]; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
            deadline=""
        fi
        sleep 0.02
    done
    rm -f "$RUN/$1.pid"
    event stop "$1"
}

show_unit() {
    id=$1.service
    load=loaded
    [ -f "$UNITS/$1" ] || load=not-found
    for prop in Id LoadState ActiveState; do
        case ",$PROPS," in
        ,, | *",$prop,"*) ;;
        *) continue ;;
        esac
        case $prop in
        Id) echo "Id=$id" ;;
        LoadState) echo "LoadState=$load" ;;
        ActiveState) echo "ActiveState=$(state_of "$1")" ;;
        esac
    done
}

VERB=""
PROPS=""
QUIET=""
UNIT_LIST=""
want_prop=""
options=yes
for arg in "$@"; do
    if [ -n "$want_prop" ]; then
        PROPS="${PROPS:+$PROPS,}$arg"
        want_prop=""
        continue
    fi
    case $options$arg in
    yes--) options=no ;;
    yes-p | yes--property) want_prop=yes ;;
    yes--property=*) PROPS="${PROPS:+$PROPS,}${arg#--property=}" ;;
    yes-p*) PROPS="${PROPS:+$PROPS,}${arg#-p}" ;;
    yes-q | yes--quiet) QUIET=yes ;;
    yes--no-pager) ;;
    yes-*)
        echo "systemctl: unrecognized option '$arg'" >&2
        exit 1
        ;;
    *)
        if [ -z "$VERB" ]; then
            VERB=$arg
        else
            UNIT_LIST="$UNIT_LIST ${arg%.service}"
        fi
        ;;
    esac
done
if [ -n "$want_prop" ]; then
    echo "systemctl: option requires an argument -- 'p'" >&2
    exit 1
fi

case $VERB in
start | stop | restart | is-active | show) ;;
"")
    echo "stand-in systemctl: a verb is needed (start, stop, restart, is-active, show)" >&2
    exit 1
    ;;
*)
    echo "Unknown command verb $VERB." >&2
    exit 1
    ;;
esac
if [ -z "$UNIT_LIST" ]; then
    echo "Too few arguments." >&2
    exit 1
fi

case $VERB in
start | stop | restart)
    if [ "$(id -u)" != 0 ]; then
        for unit in $UNIT_LIST; do
            echo "Failed to $VERB $unit.service: Interactive authentication required." >&2
            echo "See system logs and 'systemctl status $unit.service' for details." >&2
        done
        exit 1
    fi
    ;;
esac

status=0
first=yes
for unit in $UNIT_LIST; do
    case $VERB in
    start) start_unit "$unit" || status=$? ;;
    stop) stop_unit "$unit" || status=$? ;;
    restart)
        if [ -f "$UNITS/$unit" ]; then
            stop_unit "$unit" && start_unit "$unit" || status=$?
        else
            echo "Failed to restart $unit.service: Unit $unit.service not found." >&2
            status=5
        fi
        ;;
    is-active)
        state=$(state_of "$unit")
        [ -n "$QUIET" ] || echo "$state"
        [ "$state" = active ] || status=3
        ;;
    show)
        [ -n "$first" ] || echo
        first=""
        show_unit "$unit"
        ;;
    esac
done
exit "$status"
