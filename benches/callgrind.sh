#!/usr/bin/env bash
# Noise-free cost per request: instructions (valgrind callgrind) and system calls (strace -c)
# per small request and per SSE event, for llm-keyproxy, nginx and HAProxy, one at a time,
# against the same TLS mock upstream with the same configs as benches/compare.sh but one
# worker each (nginx: master_process off, worker_processes 1; HAProxy: nbthread 1;
# llm-keyproxy: its default runtime, which callgrind runs one thread at a time anyway).
#
# Instruction counts do not depend on what else the machine runs, so they compare the proxies
# when wall-clock figures are too noisy. They count user space only: the kernel's share (TCP,
# epoll, futex) shows in the system-call counts.
#
# Usage: benches/callgrind.sh [REQUESTS] [STREAMS]   (defaults 3000 and 20 x 1000 events)
# Needs: valgrind; strace for the system-call counts (skipped when missing); root or nginx and
#        haproxy already installed.
# Ports: 127.0.0.1:19443 (mock), 19080 (nginx), 19081 (HAProxy), 19090 and 19091 (llm-keyproxy
#        and its admin listener); CALLGRIND_MOCK_PORT, CALLGRIND_NGINX_PORT,
#        CALLGRIND_HAPROXY_PORT and CALLGRIND_KEYPROXY_PORT (admin: the next port) move them.
# Output: a Markdown table; the callgrind profiles stay in target/callgrind/ for
#         `callgrind_annotate --inclusive=yes target/callgrind/keyproxy-small.out`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=benches/peers.sh
source benches/peers.sh

REQUESTS=${1:-3000}
STREAMS=${2:-20}
EVENTS=1000
MOCK_PORT=${CALLGRIND_MOCK_PORT:-19443}
NGINX_PORT=${CALLGRIND_NGINX_PORT:-19080}
HAPROXY_PORT=${CALLGRIND_HAPROXY_PORT:-19081}
KP_PORT=${CALLGRIND_KEYPROXY_PORT:-19090}
KP_ADMIN=$((KP_PORT + 1))
KEY=sk-bench-not-a-real-key
OUT=target/callgrind

command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
install_peers
for port in $MOCK_PORT $NGINX_PORT $HAPROXY_PORT $KP_PORT $KP_ADMIN; do
    if port_open "$port"; then echo "callgrind.sh: 127.0.0.1:$port is taken" >&2; exit 1; fi
done

# llm-keyproxy with symbols (the shipped profile strips them), in its own target dir so the
# release binary the bench uses is left alone.
echo "==> building llm-keyproxy with symbols (target/prof) and mock-upstream" >&2
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release -q --bin llm-keyproxy --target-dir target/prof
cargo build --release -q -p mock-upstream --bin mock-upstream

DIR=$(mktemp -d /tmp/kp-callgrind.XXXXXX)
chmod 755 "$DIR"
trap 'stop_all; rm -rf "$DIR"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$OUT"

start_mock "$DIR" "$MOCK_PORT" "$KEY"
write_nginx_conf "$DIR" "$NGINX_PORT" "$MOCK_PORT" "$KEY" 1 4096
write_haproxy_cfg "$DIR" "$HAPROXY_PORT" "$MOCK_PORT" "$KEY" 1 4096 1000
cat > "$DIR/keyproxy.yaml" <<EOF
admin: {listen: '127.0.0.1:$KP_ADMIN'}
tls: {extra_ca_file: '$DIR/mock-ca.pem'}
limits: {drain_timeout: 1s}
providers:
  bench: {listen: '127.0.0.1:$KP_PORT', upstream: 'https://api.openai.com', upstream_address: '127.0.0.1:$MOCK_PORT', api_key: env:BENCH_KEY, auth: {header: authorization, prefix: 'Bearer '}}
EOF

# The client: sequential requests on one keep-alive connection, each checked.
cat > "$DIR/drive.py" <<'EOF'
import http.client, sys
port, kind, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
events = int(sys.argv[4]) if len(sys.argv) > 4 else 0
c = http.client.HTTPConnection("127.0.0.1", port)
hdrs = {"authorization": "Bearer client-placeholder", "x-api-key": "client-placeholder"}
for _ in range(n):
    if kind == "small":
        c.request("GET", "/mock/status/200", headers=hdrs)
    else:
        c.request("GET", f"/mock/sse?events={events}&gap_ms=0&size=256", headers=hdrs)
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, r.status
    assert kind == "small" or body.count(b"\n\n") == events, "events lost or merged"
EOF
drive() { python3 "$DIR/drive.py" "$@"; }

declare -A IR_SMALL IR_EVENT SYS_SMALL SYS_DETAIL

# measure NAME PORT CMD...: instructions per request and per event under callgrind, then
# system calls per request under strace (without valgrind).
measure() {
    local name=$1 port=$2
    shift 2
    local cg="$DIR/cg-$name"
    start_bg "$DIR/$name-valgrind.log" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$cg.out" "$@"
    local vpid=$BG_PID
    wait_port "$port" "$vpid" "$name under valgrind"
    callgrind_control -i on "$vpid" >/dev/null
    drive "$port" small 300
    drive "$port" sse 2 200
    callgrind_control -z "$vpid" >/dev/null
    drive "$port" small "$REQUESTS"
    callgrind_control -d "$vpid" >/dev/null
    callgrind_control -z "$vpid" >/dev/null
    drive "$port" sse "$STREAMS" "$EVENTS"
    callgrind_control -d "$vpid" >/dev/null
    stop_all_but_mock
    local f
    # Dumps are numbered in order: .1 the small requests, .2 the SSE events.
    f="$cg.out.1"
    IR_SMALL[$name]=$(awk '/^summary:/ {print $2}' "$f")
    cp "$f" "$OUT/$name-small.out"
    f="$cg.out.2"
    IR_EVENT[$name]=$(awk '/^summary:/ {print $2}' "$f")
    cp "$f" "$OUT/$name-sse.out"

    if command -v strace >/dev/null; then
        start_bg "$DIR/$name-plain.log" "$@"
        local pid=$BG_PID
        wait_port "$port" "$pid" "$name"
        drive "$port" small 300
        start_bg "$DIR/$name-strace.log" strace -f -c -o "$DIR/strace-$name.txt" -p "$pid"
        local spid=$BG_PID
        sleep 1
        drive "$port" small "$REQUESTS"
        kill -INT "$spid"
        wait "$spid" 2>/dev/null || true
        stop_all_but_mock
        SYS_SMALL[$name]=$(awk '$NF == "total" {print $4}' "$DIR/strace-$name.txt")
        SYS_DETAIL[$name]=$(awk -v n="$REQUESTS" '$NF != "total" && $4 ~ /^[0-9]+$/ && $4 / n >= 0.5 {printf "%s %.1f\n", $NF, $4 / n}' "$DIR/strace-$name.txt" \
            | sort -k2 -rn | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
    fi
}

# Stops everything started since the mock (the mock stays for the next target).
stop_all_but_mock() {
    local mock=${BG_PIDS[0]}
    local rest=("${BG_PIDS[@]:1}")
    BG_PIDS=("${rest[@]}")
    stop_all
    BG_PIDS=("$mock")
}

echo "==> llm-keyproxy" >&2
BENCH_KEY=$KEY measure llm-keyproxy $KP_PORT target/prof/release/llm-keyproxy --config "$DIR/keyproxy.yaml"
echo "==> nginx" >&2
measure nginx $NGINX_PORT nginx -c "$DIR/nginx.conf" -p "$DIR" -g 'daemon off; master_process off;'
echo "==> haproxy" >&2
measure haproxy $HAPROXY_PORT haproxy -db -f "$DIR/haproxy.cfg"

echo
echo "Cost per request / event, user-space instructions (callgrind) and system calls (strace);"
echo "$REQUESTS sequential small requests on one connection; $STREAMS streams x $EVENTS SSE events of 256 B"
echo
echo "| target | instructions per small request | instructions per SSE event | system calls per small request | most frequent (per request) |"
echo "|---|---:|---:|---:|---|"
for name in llm-keyproxy nginx haproxy; do
    ir=${IR_SMALL[$name]:-0} ie=${IR_EVENT[$name]:-0} sc=${SYS_SMALL[$name]:-}
    printf '| %s | %d | %d | %s | %s |\n' "$name" $((ir / REQUESTS)) $((ie / (STREAMS * EVENTS))) \
        "$( [[ -n $sc ]] && awk -v s="$sc" -v n="$REQUESTS" 'BEGIN {printf "%.1f", s / n}' || echo n/a)" \
        "${SYS_DETAIL[$name]:-}"
done
echo
echo "profiles: $OUT/{llm-keyproxy,nginx,haproxy}-{small,sse}.out (callgrind_annotate --inclusive=yes FILE)"
