#!/usr/bin/env bash
# The RESP server on cport beside a real redis-server (persistence off), both driven by the
# stock redis-benchmark, rounds interleaved (cport, redis, cport, redis, ...). Prints a markdown
# table of the median requests/s per test and pipeline depth, and the cport/redis ratio.
#
#   benches/resp_vs_redis.sh [ROUNDS] [REQUESTS]      # defaults: 3 rounds, 200000 requests
#   CPORT_THREADS=1 benches/resp_vs_redis.sh           # threads of the cport server (default 2)
#
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools).
# Writes the raw CSV of every run to results/resp/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
REQUESTS=${2:-200000}
TESTS=ping,set,get,incr,mset
CLIENTS=50
OUT=results/resp
mkdir -p "$OUT"
rm -f "$OUT"/*.csv

for tool in redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install redis-server redis-tools" >&2; exit 1; }
done

cargo build --release -p cport-resp-server
CPORT_PORT=${CPORT_PORT:-6390}
REDIS_PORT=${REDIS_PORT:-6391}

target/release/resp_server "127.0.0.1:$CPORT_PORT" --threads "${CPORT_THREADS:-2}" >"$OUT/cport.log" 2>&1 &
CPORT_PID=$!
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --logfile "$OUT/redis.log" &
REDIS_PID=$!
trap 'kill $CPORT_PID $REDIS_PID 2>/dev/null || true' EXIT

wait_up() {
    for _ in $(seq 100); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    exit 1
}
wait_up "$CPORT_PORT"
wait_up "$REDIS_PORT"

for round in $(seq "$ROUNDS"); do
    for pipeline in 1 16; do
        for server in cport redis; do
            port=$CPORT_PORT
            [ "$server" = redis ] && port=$REDIS_PORT
            redis-cli -p "$port" flushall >/dev/null
            echo "round $round/$ROUNDS: $server -P $pipeline" >&2
            redis-benchmark -h 127.0.0.1 -p "$port" -t "$TESTS" -c "$CLIENTS" -n "$REQUESTS" -P "$pipeline" --csv \
                | sed 1d | sed "s/^/\"$server\",\"$pipeline\",\"$round\",/" >>"$OUT/runs.csv"
        done
    done
done

# Median over rounds of requests/s and p99 (ms) per server, pipeline depth and test.
awk -F'","|^"|"$' '
    { server=$2; p=$3; test=$5; rps=$6; p99=$11
      key=p SUBSEP test
      n[server, key]++; r[server, key, n[server, key]]=rps; l[server, key, n[server, key]]=p99
      if (!(key in seen)) { seen[key]=1; order[++k]=key } }
    function median(arr, s, key, cnt,   i, j, t, v) {
        for (i = 1; i <= cnt; i++) v[i] = arr[s, key, i] + 0
        for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return v[int((cnt + 1) / 2)]
    }
    END {
        print "| test | pipeline | cport req/s | redis req/s | cport/redis | cport p99 ms | redis p99 ms |"
        print "|---|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= k; i++) {
            split(order[i], part, SUBSEP)
            c = median(r, "cport", order[i], n["cport", order[i]])
            d = median(r, "redis", order[i], n["redis", order[i]])
            cl = median(l, "cport", order[i], n["cport", order[i]])
            dl = median(l, "redis", order[i], n["redis", order[i]])
            printf "| %s | %s | %.0f | %.0f | %.2f | %.3f | %.3f |\n", part[2], part[1], c, d, c / d, cl, dl
        }
    }' "$OUT/runs.csv" | tee "$OUT/table.md"
