#!/usr/bin/env bash
# etl-sync.sh — run `etl sync` from cron or a systemd timer, safely.
#
# What it does, in order:
#   1. loads the env file ($ETL_ENV_FILE, default /etc/openphone-summary-sync/env),
#      which holds ETL_DATABASE_URL, OPENPHONE_API_KEY and any ETL_* setting below;
#   2. takes a non-blocking flock on $ETL_LOCK_FILE: if another run holds it, it
#      logs one "skipped" line and exits 0 at once (runs never pile up, cron never mails);
#   3. runs `$ETL_BIN sync --log-format json --max-runtime $ETL_MAX_RUNTIME "$@"`
#      (so extra arguments go to `etl sync`, e.g. --limit 5000) and appends every
#      line it writes to $ETL_LOG_FILE as JSON (plain-text lines such as click's
#      "Error: ..." are wrapped into JSON at level error, so `jq` never meets a
#      non-JSON line; the summary lines of `etl discover`, `etl sync` and
#      `etl prune` are wrapped at level info);
#   4. exits with etl's exit code: 0 ok, 1 item errors or interrupted, 2 config,
#      3 the API refused the key, 4 the API was never reached (see cron/README.md).
#
# `etl-sync.sh prune ARGS` runs `etl prune --log-format json ARGS` instead (no
# lock: a prune is safe next to a sync), with the same JSON-only log: the
# crontab's daily prune line uses it, so prune.log is JSON lines too.
#
# Settings (environment or env file):
#   ETL_ENV_FILE      env file to load (shell syntax, KEY=value); "" loads none
#   ETL_BIN           the etl executable (default: `etl` on PATH)
#   ETL_LOG_FILE      JSON-lines log to append to; "-" = stderr (systemd journal)
#                     (default /var/log/openphone-summary-sync/sync.jsonl)
#   ETL_PRUNE_LOG_FILE  the log of `etl-sync.sh prune` (default
#                     /var/log/openphone-summary-sync/prune.log)
#   ETL_LOCK_FILE     lock file shared by every invocation (default /tmp/openphone-summary-sync.lock)
#   ETL_MAX_RUNTIME   seconds before etl stops claiming work (default 240: cron every 5 min)
#   ETL_DISCOVER      1 = run `etl discover` (fill the queue from the workspace) before
#                     `etl sync`; default 0 (the queue is filled by another system).
#                     The first discovery needs `etl discover --since DATE` by hand.
#   ETL_STDERR_ON     exit codes that also print one line on stderr, so cron mails
#                     it (default "2 3": a human must act); "" = never
#
# Signals: SIGTERM/SIGINT are for etl (it stops claiming, saves in-flight work
# and exits 1).  systemd and a terminal's Ctrl-C signal the whole process group,
# so this script and its log filter outlive etl: every line is logged and etl's
# exit code is still the script's.
#
# The API key is never printed: it is passed to etl through the environment
# (not the command line, where `ps` would show it), etl redacts it from its
# logs, and this script masks it in every line it writes as well.

set -euo pipefail
umask 027

readonly PROG=etl-sync.sh
LOG_TO_FILE=0

# --- helpers ---------------------------------------------------------------------

json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    # Any other control character would make the line invalid JSON.
    printf '%s' "$s" | LC_ALL=C tr -d '\000-\010\012-\037'
}

now_utc() {
    date -u +%Y-%m-%dT%H:%M:%SZ
}

# log LEVEL EVENT [KEY VALUE]...: one JSON line shaped like etl's own lines, on fd 3.
log() {
    local level=$1 event=$2 line
    shift 2
    line="{\"timestamp\":\"$(now_utc)\",\"level\":\"$level\",\"logger\":\"$PROG\",\"event\":\"$(json_escape "$event")\""
    while [ "$#" -ge 2 ]; do
        if is_uint "$2"; then
            line+=",\"$1\":$2"
        else
            line+=",\"$1\":\"$(json_escape "$2")\""
        fi
        shift 2
    done
    printf '%s}\n' "$line" >&3
}

# die CODE MESSAGE: a problem a human must fix: logged, and on stderr so cron mails it.
die() {
    log error "$2" exit_code "$1"
    if [ "$LOG_TO_FILE" = 1 ]; then
        printf '%s: %s\n' "$PROG" "$2" >&2
    fi
    exit "$1"
}

# Every line etl writes becomes (or already is) one JSON line, with the key masked.
# It ignores INT/TERM/HUP so it keeps draining until etl itself has exited.
to_json_lines() {
    trap '' INT TERM HUP
    local line key=${OPENPHONE_API_KEY:-}
    while IFS= read -r line || [ -n "$line" ]; do
        if [ "${#key}" -ge 4 ]; then
            line=${line//"$key"/***}
        fi
        case $line in
            '{'*'}') printf '%s\n' "$line" ;;
            '') ;;
            # The summaries etl prints on stdout after a run: news, not a problem.
            'Discovery run '[0-9]*': '* | 'Discovery: '* | 'Sync run '[0-9]*': '* \
                | 'Removed '*' transcript line'* | 'Cleared '*' payload'* \
                | 'Would remove '*' transcript line'* | 'Would clear '*' payload'*) printf '{"timestamp":"%s","level":"info","logger":"etl","event":"%s"}\n' \
                   "$(now_utc)" "$(json_escape "$line")" ;;
            *) printf '{"timestamp":"%s","level":"error","logger":"etl","event":"%s"}\n' \
                   "$(now_utc)" "$(json_escape "$line")" ;;
        esac
    done
}

is_uint() {
    case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

# --- configuration ---------------------------------------------------------------

# Until the log file is open, the log is stderr.
exec 3>&2

ETL_ENV_FILE=${ETL_ENV_FILE-/etc/openphone-summary-sync/env}
if [ -n "$ETL_ENV_FILE" ]; then
    [ -r "$ETL_ENV_FILE" ] \
        || die 2 "cannot read env file $ETL_ENV_FILE (set ETL_ENV_FILE, or ETL_ENV_FILE= to load none)"
    set -a
    # shellcheck disable=SC1090  # the path is the operator's choice
    . "$ETL_ENV_FILE" || die 2 "env file $ETL_ENV_FILE failed to load"
    set +a
fi

ETL_BIN=${ETL_BIN:-etl}
ETL_LOG_FILE=${ETL_LOG_FILE:-/var/log/openphone-summary-sync/sync.jsonl}
if [ "${1:-}" = prune ]; then
    ETL_LOG_FILE=${ETL_PRUNE_LOG_FILE:-/var/log/openphone-summary-sync/prune.log}
fi
ETL_LOCK_FILE=${ETL_LOCK_FILE:-/tmp/openphone-summary-sync.lock}
ETL_MAX_RUNTIME=${ETL_MAX_RUNTIME:-240}
ETL_STDERR_ON=${ETL_STDERR_ON-2 3}
ETL_DISCOVER=${ETL_DISCOVER:-0}

if [ "$ETL_LOG_FILE" != "-" ]; then
    { true >>"$ETL_LOG_FILE"; } 2>/dev/null \
        || die 2 "cannot append to log file $ETL_LOG_FILE (set ETL_LOG_FILE; - means stderr)"
    exec 3>>"$ETL_LOG_FILE"
    LOG_TO_FILE=1
fi

if [ -n "$ETL_ENV_FILE" ] && [ -n "$(find "$ETL_ENV_FILE" -maxdepth 0 -perm -004)" ]; then
    log warning "env file is world-readable and holds the API key: chmod o-r it" env_file "$ETL_ENV_FILE"
fi
if ! is_uint "$ETL_MAX_RUNTIME" || [ "$ETL_MAX_RUNTIME" -lt 1 ]; then
    die 2 "ETL_MAX_RUNTIME must be a whole number of seconds >= 1, not '$ETL_MAX_RUNTIME'"
fi
[ -n "${ETL_DATABASE_URL:-}" ] \
    || die 2 "ETL_DATABASE_URL is not set (put it in the env file): refusing to use a default SQLite file"
command -v "$ETL_BIN" >/dev/null 2>&1 || die 2 "etl executable '$ETL_BIN' not found (set ETL_BIN)"
command -v flock >/dev/null 2>&1 || die 2 "flock(1) not found (install util-linux)"

# --- prune (no lock: short transactions, safe next to a sync) ------------------------

if [ "${1:-}" = prune ]; then
    shift
    trap ':' INT TERM HUP
    set +e
    "$ETL_BIN" prune --log-format json "$@" 2>&1 | to_json_lines >&3
    status=("${PIPESTATUS[@]}")
    set -e
    rc=${status[0]}
    if [ "$rc" -ne 0 ] && [ "$LOG_TO_FILE" = 1 ]; then
        printf '%s: etl prune exited %s; see %s\n' "$PROG" "$rc" "$ETL_LOG_FILE" >&2
    fi
    exit "$rc"
fi

# --- one run at a time -------------------------------------------------------------

{ true >>"$ETL_LOCK_FILE"; } 2>/dev/null || die 2 "cannot open lock file $ETL_LOCK_FILE (set ETL_LOCK_FILE)"
# etl inherits fd 9, so the lock lasts as long as etl does, even if this shell dies.
exec 9>>"$ETL_LOCK_FILE"
if ! flock -n 9; then
    log info "skipped: another etl sync is still running (lock held)" lock_file "$ETL_LOCK_FILE" exit_code 0
    exit 0
fi

# --- run ----------------------------------------------------------------------------

# Caught (not ignored, which etl would inherit): this shell waits for etl instead of dying.
trap ':' INT TERM HUP
set +e
discover_rc=0
if [ "$ETL_DISCOVER" = 1 ]; then
    # Discover first, so this run's sync already fetches what it found; a failed
    # discovery does not keep the queue's other work from syncing.
    "$ETL_BIN" discover --log-format json 2>&1 | to_json_lines >&3
    discover_rc=${PIPESTATUS[0]}
fi
"$ETL_BIN" sync --log-format json --max-runtime "$ETL_MAX_RUNTIME" "$@" 2>&1 | to_json_lines >&3
status=("${PIPESTATUS[@]}")
set -e
rc=${status[0]}
failed_command=sync
if [ "$rc" -eq 0 ] && [ "$discover_rc" -ne 0 ]; then
    rc=$discover_rc  # sync went fine; the discovery's problem is the run's result
    failed_command=discover
fi

if [ "$rc" -gt 128 ]; then
    # etl turns INT/TERM into a clean stop once its run has begun, so dying of a
    # signal means it was still starting up, or got SIGKILL (its sync_runs row
    # then stays unfinished and its leases expire by themselves).
    log error "etl $failed_command was killed by signal $((rc - 128))" exit_code "$rc"
fi
if [ "${status[1]}" -ne 0 ]; then
    printf '%s: could not write the log to %s\n' "$PROG" "$ETL_LOG_FILE" >&2
fi
if [ "$LOG_TO_FILE" = 1 ]; then
    for code in $ETL_STDERR_ON; do
        if [ "$code" = "$rc" ]; then
            printf '%s: etl %s exited %s; see %s\n' "$PROG" "$failed_command" "$rc" "$ETL_LOG_FILE" >&2
        fi
    done
fi
exit "$rc"
