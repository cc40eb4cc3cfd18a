#!/usr/bin/env bash
# llm-keyproxy side by side with nginx and HAProxy (Debian's packages), in one run.
#
# Installs nginx-light and haproxy when missing (apt-get, as root), builds the release binaries,
# starts the TLS mock upstream (the `mock-upstream` binary) on a fixed loopback port, writes
# equivalent nginx and HAProxy configs into a temp dir (benches/peers.sh: plain HTTP listener on
# 127.0.0.1; TLS to the mock with SNI api.openai.com verified against the mock's CA; the key
# injected; client credentials removed; a keep-alive pool to the upstream; buffering off; a
# 10 MiB body cap; one worker process / thread per core), then runs `cargo bench --bench load`
# with all of them as targets and prints one table: direct, llm-keyproxy, nginx, haproxy, each
# with its ratio to direct, and llm-keyproxy's ratio to the best peer. Everything listens on
# 127.0.0.1; every process started here is stopped on exit.
#
# Usage: benches/compare.sh [--docs] [--serve] [--no-build]
#   --docs      also copy the results and the chart to docs/benchmarks-results.json and
#               docs/benchmarks.svg
#   --serve     start the mock, nginx and HAProxy, print their addresses and wait (Ctrl-C to
#               stop): for trying them with curl or profiling them; no bench
#   --no-build  skip the explicit builds (`cargo bench` still rebuilds what changed)
# Env:     KEYPROXY_BENCH_QUICK=1   the seconds-long smoke variant of every scenario
#          COMPARE_MOCK_PORT / COMPARE_NGINX_PORT / COMPARE_HAPROXY_PORT (18443 / 18080 / 18081)
#          COMPARE_KEEP=1           keep the temp dir (configs, logs) for inspection
# Output:  target/bench-compare.txt (the whole run), target/bench-results.{md,json},
#          target/bench-chart.svg
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=benches/peers.sh
source benches/peers.sh
started=$(date +%s)

docs=0 serve=0 build=1
for arg in "$@"; do
    case $arg in
        --docs) docs=1 ;;
        --serve) serve=1 ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

MOCK_PORT=${COMPARE_MOCK_PORT:-18443}
NGINX_PORT=${COMPARE_NGINX_PORT:-18080}
HAPROXY_PORT=${COMPARE_HAPROXY_PORT:-18081}
KEY=sk-bench-not-a-real-key
CORES=$(nproc)
log() { echo "==> $*" >&2; }

# --- 1. nginx and HAProxy -------------------------------------------------------------------
install_peers
NGINX_VERSION=$(nginx -v 2>&1 | sed 's|.*nginx/||')
HAPROXY_VERSION=$(haproxy -v | head -n 1 | awk '{print $3}')

for port in "$MOCK_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do
    if port_open "$port"; then
        echo "compare.sh: something already listens on 127.0.0.1:$port" >&2
        exit 1
    fi
done

# --- 2. build -----------------------------------------------------------------------------
if [[ $build == 1 ]]; then
    log "cargo build --release (llm-keyproxy, mock-upstream) and the bench"
    cargo build --release -q -p llm-keyproxy --bin llm-keyproxy -p mock-upstream --bin mock-upstream
    cargo bench -q --bench load --no-run
fi

# --- 3. processes, stopped on exit --------------------------------------------------------
DIR=$(mktemp -d /tmp/kp-compare.XXXXXX)
chmod 755 "$DIR"
cleanup() {
    local rc=$?
    stop_all
    if [[ ${COMPARE_KEEP:-0} == 1 ]]; then
        echo "compare.sh: kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Room for 10,000 open streams (client and upstream legs), as far as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
# HAProxy counts every client connection against maxconn; keep 4,000 fds for the rest.
HAPROXY_MAXCONN=$((FDS > 14100 ? FDS - 4000 : 10100))

log "mock-upstream on 127.0.0.1:$MOCK_PORT"
start_mock "$DIR" "$MOCK_PORT" "$KEY"

# Workers matched to the machine: nginx one worker process per core (auto), HAProxy one thread
# per core, llm-keyproxy tokio's default runtime (one worker thread per core).
write_nginx_conf "$DIR" "$NGINX_PORT" "$MOCK_PORT" "$KEY" auto "$FDS"
write_haproxy_cfg "$DIR" "$HAPROXY_PORT" "$MOCK_PORT" "$KEY" "$CORES" "$FDS" "$HAPROXY_MAXCONN"
nginx -t -q -c "$DIR/nginx.conf" -p "$DIR" 2>&1 | grep -v 'could not open error log' >&2 || true
haproxy -q -c -f "$DIR/haproxy.cfg" >&2

log "nginx $NGINX_VERSION on 127.0.0.1:$NGINX_PORT"
start_bg "$DIR/nginx.out" nginx -c "$DIR/nginx.conf" -p "$DIR" -g 'daemon off;'
NGINX_PID=$BG_PID
wait_port "$NGINX_PORT" "$NGINX_PID" nginx

log "haproxy $HAPROXY_VERSION on 127.0.0.1:$HAPROXY_PORT"
start_bg "$DIR/haproxy.log" haproxy -db -f "$DIR/haproxy.cfg"
HAPROXY_PID=$BG_PID
wait_port "$HAPROXY_PORT" "$HAPROXY_PID" haproxy

nginx_workers=$(pgrep -c -P "$NGINX_PID" || true)

if [[ $serve == 1 ]]; then
    echo "mock-upstream  https://127.0.0.1:$MOCK_PORT (CA $DIR/mock-ca.pem, SNI api.openai.com)"
    echo "nginx          http://127.0.0.1:$NGINX_PORT (pid $NGINX_PID, config $DIR/nginx.conf)"
    echo "haproxy        http://127.0.0.1:$HAPROXY_PORT (pid $HAPROXY_PID, config $DIR/haproxy.cfg)"
    echo "e.g. curl -s http://127.0.0.1:$NGINX_PORT/v1/models; Ctrl-C stops everything"
    while kill -0 "$NGINX_PID" 2>/dev/null && kill -0 "$HAPROXY_PID" 2>/dev/null; do sleep 1; done
    exit 1
fi

# --- 4. the bench ---------------------------------------------------------------------------
log "cargo bench --bench load (direct, llm-keyproxy, nginx, haproxy)"
set +e
KEYPROXY_BENCH_PEERS="nginx=127.0.0.1:$NGINX_PORT,haproxy=127.0.0.1:$HAPROXY_PORT" \
KEYPROXY_BENCH_PEER_PIDS="nginx=$NGINX_PID,haproxy=$HAPROXY_PID" \
KEYPROXY_BENCH_MOCK="127.0.0.1:$MOCK_PORT" \
KEYPROXY_BENCH_MOCK_CA="$DIR/mock-ca.pem" \
KEYPROXY_BENCH_KEY="$KEY" \
KEYPROXY_BENCH_NOTE="peers: nginx $NGINX_VERSION (master + $nginx_workers workers, HTTP/1.1 upstream pool), HAProxy $HAPROXY_VERSION (nbthread $CORES, h2 upstream, http-reuse always); llm-keyproxy: tokio default runtime ($CORES worker threads); each logs one line per request to a file" \
    cargo bench -q --bench load 2>&1 | tee target/bench-compare.txt
bench_rc=${PIPESTATUS[0]}
set -e

# --- 5. the chart -------------------------------------------------------------------------
if [[ -s target/bench-results.json ]]; then
    python3 benches/chart.py target/bench-results.json target/bench-chart.svg
    if [[ $docs == 1 ]]; then
        cp target/bench-results.json docs/benchmarks-results.json
        cp target/bench-chart.svg docs/benchmarks.svg
        echo "compare.sh: docs/benchmarks-results.json and docs/benchmarks.svg updated" >&2
    fi
fi

took=$(($(date +%s) - started))
echo "compare.sh: done in ${took} s (bench exit status $bench_rc); full output in $ROOT/target/bench-compare.txt" >&2
exit "$bench_rc"
