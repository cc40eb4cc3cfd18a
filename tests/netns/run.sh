#!/usr/bin/env bash
# The AWF egress topology in network namespaces: the agent reaches only llm-keyproxy, and
# llm-keyproxy reaches the (mock) provider only through Squid.
#
#   kp-agent 10.200.1.2 --veth-- 10.200.1.1 kp-proxy 10.200.2.1 --veth-- 10.200.2.2 kp-squid
#                                (llm-keyproxy :10000,            (squid :3128)
#                                 iptables: OUTPUT only to               10.200.3.1
#                                 squid:3128 + established)                  |veth
#                                                                        10.200.3.2 kp-upstream
#                                                                        (mock-upstream :443)
#
# kp-proxy even has a route to the upstream subnet (via kp-squid, which forwards packets), so
# the direct attempt that must fail is stopped by the iptables rules, as in AWF, not by a
# missing route.
#
# Needs root, iproute2, iptables, squid, curl. Usage: bash tests/netns/run.sh
# Env: KEYPROXY_PYTHON   python with the `openai` SDK (default .venv/bin/python if present)
#      KEYPROXY_BIN_DIR  directory holding llm-keyproxy and mock-upstream (default: cargo build,
#                        then target/debug)
#      KEYPROXY_REQUIRE_SQUID=1  fail instead of skipping when squid is missing
set -uo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "skipped: needs root"
    exit 0
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SQUID=$(command -v squid || ls /usr/sbin/squid 2>/dev/null || true)
if [ -z "$SQUID" ]; then
    if [ "${KEYPROXY_REQUIRE_SQUID:-}" = 1 ]; then
        echo "netns: FAIL: squid not installed (apt-get install squid)"
        exit 1
    fi
    echo "skipped: squid not installed (apt-get install squid)"
    exit 0
fi
for tool in ip iptables curl; do
    command -v "$tool" >/dev/null || { echo "netns: FAIL: $tool not installed"; exit 1; }
done

if [ -n "${KEYPROXY_BIN_DIR:-}" ]; then
    BIN=$KEYPROXY_BIN_DIR
else
    echo "building llm-keyproxy and mock-upstream ..."
    (cd "$ROOT" && cargo build -q --bin llm-keyproxy -p llm-keyproxy && cargo build -q -p mock-upstream --bin mock-upstream) \
        || { echo "netns: FAIL: cargo build failed"; exit 1; }
    BIN=$ROOT/target/debug
fi
for b in llm-keyproxy mock-upstream; do
    [ -x "$BIN/$b" ] || { echo "netns: FAIL: $BIN/$b missing"; exit 1; }
done

# Everything from here on is bounded: 60 s, then SIGTERM (the trap cleans up), then SIGKILL.
if [ -z "${KP_NETNS_TIMED:-}" ]; then
    KEYPROXY_BIN_DIR=$BIN KP_NETNS_TIMED=1 exec timeout -k 5 60 bash "$0" "$@"
fi

PY=${KEYPROXY_PYTHON:-}
if [ -z "$PY" ] && [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; fi

CANARY=sk-KPCANARY0a1b2c3d4e5f6789   # the key only the proxy holds
AGENT_KEY=sk-agent-fake-key          # what the sandboxed agent has
NS=(kp-agent kp-proxy kp-squid kp-upstream)
AGENT=10.200.1.2 PROXY=10.200.1.1 PROXY_OUT=10.200.2.1 SQUID_IP=10.200.2.2
SQUID_OUT=10.200.3.1 UPSTREAM=10.200.3.2
WORK=$(mktemp -d /tmp/kp-netns.XXXXXX)
chmod 777 "$WORK"   # squid drops to its cache_effective_user (Debian: proxy)
PIDS=()
OWN_NS=0
PASS=0 FAIL=0
START=$SECONDS

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # The processes this run started (their real pids: `ip netns exec` execs the command) ...
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    # ... and anything else still inside the namespaces this run created (under the lock).
    if [ "$OWN_NS" = 1 ]; then
        for ns in "${NS[@]}"; do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
            ip netns del "$ns" 2>/dev/null
        done
    fi
    if [ "$FAIL" = 0 ] && [ "$rc" = 0 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'FAIL=$((FAIL+1)); echo "  FAIL  interrupted or over the 60 s bound"; echo "netns: $PASS passed, $FAIL failed"; exit 1' INT TERM

pass() { PASS=$((PASS+1)); echo "  PASS  $*"; }
fail() { FAIL=$((FAIL+1)); echo "  FAIL  $*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Runs a command in the agent's namespace with no proxy variables (the agent talks plain HTTP).
agent() { in_ns kp-agent env -u HTTPS_PROXY -u https_proxy -u HTTP_PROXY -u http_proxy -u ALL_PROXY "$@"; }

wait_tcp() { # ns ip port seconds
    local deadline=$((SECONDS + $4))
    while [ $SECONDS -le $deadline ]; do
        in_ns "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

die() { echo "  FAIL  $*"; FAIL=$((FAIL+1)); echo "netns: $PASS passed, $FAIL failed"; exit 1; }

# ---- namespaces, links, addresses, routes -------------------------------------------------
# The namespace names are fixed: runs are serialised by a lock, so whatever exists under these
# names once we hold it is a leftover of a killed run.
exec 9>/run/kp-netns.lock
flock -w 20 9 || die "another tests/netns/run.sh holds /run/kp-netns.lock"
OWN_NS=1
for ns in "${NS[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
done
for ns in "${NS[@]}"; do
    ip netns add "$ns" || die "ip netns add $ns"
    in_ns "$ns" ip link set lo up
done
link() { # nsA ifA ipA nsB ifB ipB
    ip link add "$2" netns "$1" type veth peer name "$5" netns "$4" || die "veth $2-$5"
    in_ns "$1" ip addr add "$3/24" dev "$2"; in_ns "$1" ip link set "$2" up
    in_ns "$4" ip addr add "$6/24" dev "$5"; in_ns "$4" ip link set "$5" up
}
link kp-agent  veth-agent  $AGENT     kp-proxy    veth-pa  $PROXY
link kp-proxy  veth-ps     $PROXY_OUT kp-squid    veth-sp  $SQUID_IP
link kp-squid  veth-su     $SQUID_OUT kp-upstream veth-us  $UPSTREAM
# A path proxy -> upstream exists at the IP level (squid's namespace forwards); only the
# firewall below stops it.
in_ns kp-proxy ip route add 10.200.3.0/24 via $SQUID_IP
in_ns kp-upstream ip route add 10.200.2.0/24 via $SQUID_OUT
in_ns kp-squid sysctl -qw net.ipv4.ip_forward=1

# ---- firewall of the proxy's namespace (AWF: egress only through Squid) --------------------
in_ns kp-proxy iptables -P OUTPUT DROP
in_ns kp-proxy iptables -A OUTPUT -o lo -j ACCEPT
in_ns kp-proxy iptables -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
in_ns kp-proxy iptables -A OUTPUT -p tcp -d $SQUID_IP --dport 3128 -j ACCEPT
in_ns kp-proxy ip6tables -P OUTPUT DROP 2>/dev/null

# ---- mock provider ---------------------------------------------------------------------------
ip netns exec kp-upstream "$BIN/mock-upstream" --listen $UPSTREAM:443 --ca-out "$WORK/ca.pem" \
    --key "$CANARY" --gap-ms 20 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_tcp kp-upstream $UPSTREAM 443 10 || die "mock-upstream did not start: $(cat "$WORK/mock.log")"

# ---- squid -----------------------------------------------------------------------------------
cat >"$WORK/squid.conf" <<EOF
http_port $SQUID_IP:3128
pid_filename $WORK/squid.pid
access_log stdio:$WORK/access.log squid
cache_log $WORK/cache.log
cache_store_log none
netdb_filename none
pinger_enable off
coredump_dir $WORK
cache deny all
cache_mem 1 MB
shutdown_lifetime 0 seconds
acl CONNECT method CONNECT
acl SSL_ports port 443
acl from_proxy src $PROXY_OUT/32
acl to_upstream dst $UPSTREAM/32
http_access deny CONNECT !SSL_ports
http_access allow from_proxy CONNECT to_upstream
http_access deny all
EOF
ip netns exec kp-squid "$SQUID" -N -f "$WORK/squid.conf" -d 1 >"$WORK/squid.out" 2>&1 &
SQUID_PID=$!
PIDS+=($SQUID_PID)
wait_tcp kp-squid $SQUID_IP 3128 10 || die "squid did not start: $(cat "$WORK/squid.out")"

# ---- llm-keyproxy ----------------------------------------------------------------------------
cat >"$WORK/proxy.yaml" <<EOF
admin: {listen: $PROXY:9901}
upstream_proxy: http://$SQUID_IP:3128
tls: {roots: [webpki], extra_ca_file: $WORK/ca.pem}
limits: {connect_timeout: 5s}
providers:
  openai: {listen: $PROXY:10000, api_key: env:OPENAI_API_KEY, upstream_address: '$UPSTREAM:443'}
EOF
ip netns exec kp-proxy env -i PATH="$PATH" OPENAI_API_KEY="$CANARY" \
    "$BIN/llm-keyproxy" --config "$WORK/proxy.yaml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)
ready=0
for _ in $(seq 100); do
    if agent curl -sf -o /dev/null --max-time 1 "http://$PROXY:9901/ready"; then ready=1; break; fi
    kill -0 $PROXY_PID 2>/dev/null || break
    sleep 0.1
done
[ $ready = 1 ] || die "llm-keyproxy not ready: $(cat "$WORK/proxy.log")"
echo "topology up in $((SECONDS - START)) s (agent $AGENT -> proxy $PROXY -> squid $SQUID_IP -> upstream $UPSTREAM)"

# ---- checks ----------------------------------------------------------------------------------
# 1. The proxy's namespace cannot reach the upstream directly (while squid's can).
dropped() { in_ns kp-proxy iptables -nvxL OUTPUT | awk 'NR==1 {print $5}'; }  # policy DROP packets
before=$(dropped)
if in_ns kp-proxy curl -sk -o /dev/null --max-time 2 "https://$UPSTREAM:443/mock/status/200"; then
    fail "kp-proxy reached https://$UPSTREAM:443 directly: the firewall does not hold"
elif [ "$(dropped)" -le "${before:-0}" ]; then
    fail "kp-proxy could not reach $UPSTREAM:443, but not because of the firewall"
elif ! in_ns kp-squid curl -sk -o /dev/null --max-time 2 "https://$UPSTREAM:443/mock/status/200"; then
    fail "upstream not reachable from kp-squid either: the block proves nothing"
else
    pass "direct egress kp-proxy -> $UPSTREAM:443 dropped by the firewall (kp-squid reaches it)"
fi

CHAT='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'

# 2. Plain chat completion from the agent (curl, with the agent's own fake key).
out=$(agent curl -s --max-time 10 -w '\n%{http_code}' -H "Authorization: Bearer $AGENT_KEY" \
    -H 'content-type: application/json' -d "$CHAT" "http://$PROXY:10000/v1/chat/completions")
echo "$out" >>"$WORK/agent.out"
code=${out##*$'\n'}
if [ "$code" = 200 ] && grep -q '"Hello from mock chunk 0' <<<"$out"; then
    pass "curl chat completion through proxy+squid (200)"
else
    fail "curl chat completion: $out"
fi

# 3. Streaming chat completion from the agent.
out=$(agent curl -sN --max-time 10 -H "Authorization: Bearer $AGENT_KEY" \
    -H 'content-type: application/json' -d "$STREAM" "http://$PROXY:10000/v1/chat/completions")
echo "$out" >>"$WORK/agent.out"
events=$(grep -c '^data: ' <<<"$out")
if grep -q '^data: \[DONE\]' <<<"$out" && [ "$events" -ge 3 ]; then
    pass "curl streaming chat completion ($events SSE events, [DONE])"
else
    fail "curl streaming chat completion: $out"
fi

# 4. The OpenAI Python SDK, plain and streaming (when a python with `openai` is available).
if [ -n "$PY" ] && "$PY" -c 'import openai' 2>/dev/null; then
    sdk_out=$(agent timeout 20 "$PY" - "http://$PROXY:10000/v1" "$AGENT_KEY" <<'PYEOF' 2>&1
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0, timeout=10)
msgs = [{"role": "user", "content": "hi"}]
r = client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
plain = r.choices[0].message.content
assert plain.startswith("Hello from mock chunk 0"), plain
text = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True)
    if c.choices
)
assert text == plain, (text, plain)
print("sdk ok:", len(plain), "chars, plain and streamed equal")
PYEOF
)
    sdk_rc=$?
    echo "$sdk_out" >>"$WORK/agent.out"
    if [ $sdk_rc = 0 ]; then pass "OpenAI SDK plain + streaming chat completion ($sdk_out)"; else fail "OpenAI SDK: $sdk_out"; fi
else
    echo "  SKIP  OpenAI SDK (no .venv/bin/python with openai; set KEYPROXY_PYTHON)"
fi

# 5. Squid carried it: after the proxy stops (tunnels close), access.log has the CONNECT.
kill -TERM $PROXY_PID 2>/dev/null
for _ in $(seq 100); do kill -0 $PROXY_PID 2>/dev/null || break; sleep 0.1; done
for _ in $(seq 50); do grep -q ' CONNECT ' "$WORK/access.log" 2>/dev/null && break; sleep 0.1; done
tunnels=$(grep -c "TCP_TUNNEL/200 [0-9]* CONNECT $UPSTREAM:443 " "$WORK/access.log" 2>/dev/null)
if [ "${tunnels:-0}" -ge 1 ]; then
    pass "squid logged $tunnels CONNECT $UPSTREAM:443 tunnel(s) from the proxy"
else
    fail "no CONNECT $UPSTREAM:443 in squid's access.log: $(cat "$WORK/access.log" 2>/dev/null)"
fi

# 6. The key stayed in the proxy: not in its logs, not in anything the agent received.
if grep -q KPCANARY "$WORK/proxy.log" "$WORK/access.log" "$WORK/cache.log" 2>/dev/null; then
    fail "the key appears in proxy or squid logs"
elif grep -q KPCANARY "$WORK/agent.out" 2>/dev/null; then
    fail "the key appears in a response the agent received"
else
    pass "the key appears in no log and in no response to the agent"
fi

echo "netns: $PASS passed, $FAIL failed ($((SECONDS - START)) s)"
[ "$FAIL" = 0 ]
