#!/usr/bin/env bash
# The baseline of bench/ssh_release_bench.py: the Qubeless upgrade guide's way (seed 000),
# by hand over `ssh`, host after host. Usage: ssh_runbook.sh VERSION
#
# From the environment: HOSTS (addresses, space-separated), SSH_USER, SSH_KEY (a key file),
# KNOWN_HOSTS (a known_hosts file), BUILD_SECONDS, BACKUP_DIR, and libpq's PGHOST, PGPORT,
# PGUSER, PGPASSWORD, PGDATABASE for the backup. Prints "backup <start> <end>" and
# "host <address> <start> <end>" (Unix times), one line per phase.
set -euo pipefail

version=$1
ssh_options=(
    -i "$SSH_KEY" -o IdentitiesOnly=yes -o BatchMode=yes
    -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes
    -o ConnectTimeout=5 -o LogLevel=ERROR
)

# What the guide has the operator type on each server.
read -r -d '' on_host <<'EOF' || true
set -euo pipefail
version=$1 build=$2 address=$3
cd "$HOME"
systemctl stop web
systemctl stop worker
systemctl stop api
sleep "$build" # stands for: pnpm install --frozen-lockfile && pnpm build
ln -sfn "releases/$version" current
[ "$(cat current/VERSION)" = "$version" ] || { echo "$address is not on $version" >&2; exit 1; }
wait_healthy() { # curl until /health answers the version, a second apart, as Slipway's gate
    for _ in $(seq 30); do
        if curl -fsS --max-time 5 "http://$address:$1/health" 2>/dev/null |
            grep -qF "\"version\": \"$version\""; then
            return 0
        fi
        sleep 1
    done
    echo "$address:$1 never answered $version" >&2
    exit 1
}
systemctl start api
wait_healthy 8081
systemctl start worker
wait_healthy 8082
systemctl start web
wait_healthy 8080
EOF

started=$EPOCHREALTIME
mkdir -p "$BACKUP_DIR"
dump="$BACKUP_DIR/postgres_$(date +%Y%m%d_%H%M%S_%N).sql.gz"
pg_dump --no-password | gzip >"$dump"
gunzip -t "$dump"
echo "backup $started $EPOCHREALTIME"

for host in $HOSTS; do
    started=$EPOCHREALTIME
    ssh "${ssh_options[@]}" "$SSH_USER@$host" bash -s -- "$version" "$BUILD_SECONDS" "$host" \
        <<<"$on_host"
    echo "host $host $started $EPOCHREALTIME"
done
