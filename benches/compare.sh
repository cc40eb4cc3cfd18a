#!/usr/bin/env bash
# llm-keyproxy side by side with nginx and HAProxy (Debian's packages) and AWF's Node.js
# api-proxy sidecar (from a checkout of AWF: see --awf-checkout), in one run.
#
# Installs nginx-light and haproxy when missing (apt-get, as root), builds the release binaries,
# starts the TLS mock upstream (the `mock-upstream` binary) on a fixed loopback port, writes
# equivalent nginx and HAProxy configs into a temp dir (benches/peers.sh: plain HTTP listener on
# 127.0.0.1; TLS to the mock with SNI api.openai.com verified against the mock's CA; the key
# injected; client credentials removed; a keep-alive pool to the upstream; buffering off; a
# 10 MiB body cap; one worker process / thread per core), then runs `cargo bench --bench load`
# with all of them as targets and prints one table: direct, llm-keyproxy, nginx, haproxy, node,
# each with its ratio to direct, and llm-keyproxy's ratio to the best peer. The node peer is AWF's
# sidecar, unmodified, run from an AWF checkout's containers/api-proxy/ with our
# benches/node-peer/bench-shim.js preloaded, its npm dependencies installed with `npm ci` into
# target/node-peer/ on first use (benches/peers.sh start_node_peer and
# benches/node-peer/README.md: how it is run, and how it differs). Without a checkout it fetches
# github/gh-aw-firewall at the pinned commit (AWF_COMMIT in benches/peers.sh) into target/awf/;
# where that fails (no network) the node column is left out, with a note in the report. Everything
# listens on 127.0.0.1; every process started here is stopped on exit.
#
# Usage: benches/compare.sh [--docs] [--serve] [--no-build] [--awf-checkout PATH]
#   --docs      also copy the results and the chart to docs/benchmarks-results.json and
#               docs/benchmarks.svg
#   --serve     start the mock and the peers, print their addresses and wait (Ctrl-C to
#               stop): for trying them with curl or profiling them; no bench
#   --no-build  skip the explicit builds (`cargo bench` still rebuilds what changed)
#   --awf-checkout PATH
#               a checkout of github/gh-aw-firewall (any commit; the sidecar is its
#               containers/api-proxy/) for the node peer; same as KEYPROXY_AWF_CHECKOUT=PATH
# Env:     KEYPROXY_BENCH_QUICK=1   the seconds-long smoke variant of every scenario
#          KEYPROXY_AWF_CHECKOUT    see --awf-checkout
#          KEYPROXY_BENCH_NODE=0    without the node peer (left out anyway, with a note, when
#                                   there is no AWF checkout and none can be fetched, when
#                                   node / npm are missing, or when npm ci fails)
#          COMPARE_MOCK_PORT / COMPARE_NGINX_PORT / COMPARE_HAPROXY_PORT / COMPARE_NODE_PORT
#                                   (18443 / 18080 / 18081 / 18082)
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
awf_checkout=${KEYPROXY_AWF_CHECKOUT:-}
while (($#)); do
    case $1 in
        --docs) docs=1 ;;
        --serve) serve=1 ;;
        --no-build) build=0 ;;
        --awf-checkout)
            (($# >= 2)) || { echo "compare.sh: --awf-checkout needs a PATH" >&2; exit 2; }
            awf_checkout=$2
            shift
            ;;
        --awf-checkout=*) awf_checkout=${1#*=} ;;
        -h | --help) sed -n '2,39p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

MOCK_PORT=${COMPARE_MOCK_PORT:-18443}
NGINX_PORT=${COMPARE_NGINX_PORT:-18080}
HAPROXY_PORT=${COMPARE_HAPROXY_PORT:-18081}
NODE_PORT=${COMPARE_NODE_PORT:-18082}
node_peer=${KEYPROXY_BENCH_NODE:-1}
KEY=sk-bench-not-a-real-key
CORES=$(nproc)
log() { echo "==> $*" >&2; }

# --- 1. nginx, HAProxy, node ------------------------------------------------------------------
install_peers
NGINX_VERSION=$(nginx -v 2>&1 | sed 's|.*nginx/||')
HAPROXY_VERSION=$(haproxy -v | awk 'NR == 1 {print $3}')
# The node peer: AWF's sidecar from the checkout given, else from the pinned commit fetched
# into target/awf/ (once); without either, no node column and a note saying why.
NODE_PEER_SKIPPED=""
if [[ $node_peer == 1 ]]; then
    if [[ -n $awf_checkout ]]; then
        if [[ ! -f $awf_checkout/containers/api-proxy/server.js ]]; then
            echo "compare.sh: $awf_checkout has no containers/api-proxy/server.js: not a checkout of github/gh-aw-firewall" >&2
            exit 2
        fi
        sidecar=$(cd "$awf_checkout/containers/api-proxy" && pwd)
        awf_rev=$(git -C "$sidecar" rev-parse --short=7 HEAD 2>/dev/null || echo "unknown commit")
    elif fetch_awf "$ROOT/target/awf/$AWF_COMMIT"; then
        sidecar=$ROOT/target/awf/$AWF_COMMIT/containers/api-proxy
        awf_rev=${AWF_COMMIT:0:7}
    else
        node_peer=0
    fi
    if [[ $node_peer == 1 ]] && install_node_peer "$sidecar"; then
        NODE_VERSION=$(node --version)
    else
        node_peer=0
        NODE_PEER_SKIPPED="node (AWF's Node.js api-proxy sidecar): left out of this run: $NODE_PEER_SKIPPED; pass an AWF checkout with --awf-checkout PATH or KEYPROXY_AWF_CHECKOUT (docs/benchmarks.md keeps the figures measured with it)"
        echo "compare.sh: $NODE_PEER_SKIPPED" >&2
    fi
else
    echo "compare.sh: KEYPROXY_BENCH_NODE=0: no node peer" >&2
fi
ports=("$MOCK_PORT" "$NGINX_PORT" "$HAPROXY_PORT")
if [[ $node_peer == 1 ]]; then ports+=("$NODE_PORT"); fi

for port in "${ports[@]}"; do
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
# shellcheck disable=SC2329 # run by the EXIT trap
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

peers="nginx=127.0.0.1:$NGINX_PORT,haproxy=127.0.0.1:$HAPROXY_PORT"
peer_pids="nginx=$NGINX_PID,haproxy=$HAPROXY_PID"
names="nginx, haproxy"
note="peers: nginx $NGINX_VERSION (master + NGINX_WORKERS workers, HTTP/1.1 upstream pool), HAProxy $HAPROXY_VERSION (nbthread $CORES, h2 upstream, http-reuse always)"
late_413=""
pids=("$NGINX_PID" "$HAPROXY_PID")
if [[ $node_peer == 1 ]]; then
    log "node $NODE_VERSION: AWF api-proxy sidecar on 127.0.0.1:$NODE_PORT"
    start_node_peer "$DIR" "$NODE_PORT" "$MOCK_PORT" "$KEY"
    NODE_PID=$BG_PID
    peers+=",node=127.0.0.1:$NODE_PORT"
    peer_pids+=",node=$NODE_PID"
    names+=", node"
    pids+=("$NODE_PID")
    note+=", node: AWF's api-proxy sidecar ($awf_rev) on Node $NODE_VERSION (one process, HTTP/1.1 upstream through Node's keep-alive globalAgent, direct: no Squid hop; buffers each request body; about six JSON log lines per request to a file)"
    # It checks the body's size as the body arrives, not the declared content-length.
    late_413=node
fi

nginx_workers=$(pgrep -c -P "$NGINX_PID" || true)
note=${note/NGINX_WORKERS/$nginx_workers}
note+="; llm-keyproxy: $CORES workers (one per core, each a current-thread runtime with its own upstream pool); each logs one line per request to a file"
# One note per line in the report.
if [[ -n $NODE_PEER_SKIPPED ]]; then note+=$'\n'"$NODE_PEER_SKIPPED"; fi

if [[ $serve == 1 ]]; then
    echo "mock-upstream  https://127.0.0.1:$MOCK_PORT (CA $DIR/mock-ca.pem, SNI api.openai.com)"
    echo "nginx          http://127.0.0.1:$NGINX_PORT (pid $NGINX_PID, config $DIR/nginx.conf)"
    echo "haproxy        http://127.0.0.1:$HAPROXY_PORT (pid $HAPROXY_PID, config $DIR/haproxy.cfg)"
    if [[ $node_peer == 1 ]]; then
        echo "node           http://127.0.0.1:$NODE_PORT (pid $NODE_PID, log $DIR/node.log, files $DIR/node-varlog/api-proxy)"
    fi
    echo "e.g. curl -s http://127.0.0.1:$NGINX_PORT/v1/models; Ctrl-C stops everything"
    while true; do
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || exit 1; done
        sleep 1
    done
fi

# --- 4. the bench ---------------------------------------------------------------------------
log "cargo bench --bench load (direct, llm-keyproxy, $names)"
set +e
KEYPROXY_BENCH_PEERS="$peers" \
KEYPROXY_BENCH_PEER_PIDS="$peer_pids" \
KEYPROXY_BENCH_LATE_413="$late_413" \
KEYPROXY_BENCH_MOCK="127.0.0.1:$MOCK_PORT" \
KEYPROXY_BENCH_MOCK_CA="$DIR/mock-ca.pem" \
KEYPROXY_BENCH_KEY="$KEY" \
KEYPROXY_BENCH_NOTE="$note" \
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
