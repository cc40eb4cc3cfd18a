# shellcheck shell=bash
# Shared by benches/compare.sh and benches/callgrind.sh (sourced, not run): installing nginx,
# HAProxy and AWF's Node.js api-proxy sidecar, their configs, and starting / stopping background
# processes.
#
# The configs are the peers' equivalents of llm-keyproxy's: a plain-HTTP listener on 127.0.0.1;
# TLS to the mock with SNI api.openai.com, verified against the mock's CA; the key injected;
# client credentials removed; a keep-alive pool to the upstream; buffering off; a 10 MiB body
# cap; one access-log line per request written to a file (llm-keyproxy logs one JSON line per
# request to stdout, a file in the bench).

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Installs nginx-light and haproxy (Debian packages) when missing; needs root for that.
install_peers() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
    command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "${0##*/}: missing ${missing[*]} and not root to install them" >&2
        return 1
    fi
    echo "==> apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' scripts from starting system services (port 80, /run pidfiles).
    local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added_policy=1
    fi
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -qq
        # nginx-light is Debian 12's; later releases fold it into nginx.
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || apt-get install -y -qq --no-install-recommends "${missing[@]/nginx-light/nginx}" >/dev/null \
            || rc=1
    fi
    if [[ $added_policy == 1 ]]; then rm -f "$policy"; fi
    return $rc
}

# The node peer is AWF's api-proxy sidecar (github/gh-aw-firewall, containers/api-proxy/), run
# from a checkout of AWF, never from files in this repository (benches/node-peer/README.md).
# bench-shim.js and the settings below were written against this commit; others may work.
AWF_REPO=https://github.com/github/gh-aw-firewall.git
AWF_COMMIT=f550957662089295dd144b0667414f5557b6a84b

# fetch_awf DEST: a shallow clone of AWF_REPO at AWF_COMMIT into DEST (reused when already
# there). Returns 1 and leaves the reason in NODE_PEER_SKIPPED when git is missing or the fetch
# fails (no network, say).
fetch_awf() {
    local dest=$1 err
    [[ -f $dest/containers/api-proxy/server.js ]] && return 0
    if ! command -v git >/dev/null 2>&1; then
        NODE_PEER_SKIPPED="git not found, so github/gh-aw-firewall could not be fetched"
        return 1
    fi
    echo "==> git fetch $AWF_REPO ${AWF_COMMIT:0:7} (AWF, for the node peer) into $dest" >&2
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp"
    if ! err=$(cd "$dest.tmp" && git init -q && GIT_TERMINAL_PROMPT=0 timeout 300 \
        git fetch -q --depth 1 "$AWF_REPO" "$AWF_COMMIT" 2>&1 && git checkout -q FETCH_HEAD 2>&1) \
        || [[ ! -f $dest.tmp/containers/api-proxy/server.js ]]; then
        rm -rf "$dest.tmp"
        NODE_PEER_SKIPPED="fetching github/gh-aw-firewall at ${AWF_COMMIT:0:7} failed ($(tail -n 1 <<< "${err:-no containers/api-proxy/server.js}"))"
        return 1
    fi
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
}

# install_node_peer SIDECAR: the npm dependencies of AWF's sidecar in the directory SIDECAR (a
# checkout's containers/api-proxy): `npm ci --omit=dev` from its package-lock.json (as its
# Dockerfile does) into target/node-peer/<lock hash>/, reused while the lock file is unchanged.
# Sets NODE_PEER_SRC and NODE_PEER_MODULES. Returns 1 and leaves the reason in
# NODE_PEER_SKIPPED when node or npm is missing or the install fails.
install_node_peer() {
    local src=$1 hash dir
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        NODE_PEER_SKIPPED="node or npm not found"
        return 1
    fi
    hash=$(sha256sum "$src/package-lock.json" | cut -c1-16)
    dir=$(pwd)/target/node-peer/$hash
    if [[ ! -d $dir/node_modules ]]; then
        echo "==> npm ci --omit=dev (AWF api-proxy sidecar's dependencies) in $dir" >&2
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp"
        cp "$src/package.json" "$src/package-lock.json" "$dir.tmp/"
        if ! (cd "$dir.tmp" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2); then
            rm -rf "$dir.tmp"
            NODE_PEER_SKIPPED="npm ci failed for $src/package-lock.json"
            return 1
        fi
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
    fi
    NODE_PEER_SRC=$src
    NODE_PEER_MODULES=$dir/node_modules
}

# start_node_peer DIR PORT MOCK_PORT KEY: AWF's sidecar (NODE_PEER_SRC/server.js, unmodified)
# with only its OpenAI provider configured (OPENAI_API_KEY=KEY), preloading our
# benches/node-peer/bench-shim.js, which moves its hard-coded listener 0.0.0.0:10000 to
# 127.0.0.1:PORT (its stub listeners 10001-10004 to free loopback ports) and dials its TLS
# connections for api.openai.com:443 to 127.0.0.1:MOCK_PORT, SNI and certificate check still for
# api.openai.com against DIR/mock-ca.pem (NODE_EXTRA_CA_CERTS). No HTTPS_PROXY: AWF points it at
# Squid; here it goes direct, so Node's https.globalAgent (keep-alive) pools the upstream
# connections. A clean environment (env -i), so no proxy or OTEL variable of this shell leaks
# in. Its logs as in AWF: JSON lines on stdout (DIR/node.log), and its files in
# /var/log/api-proxy (otel.jsonl, token-usage.jsonl, models.json, ...): as root, a private mount
# namespace binds DIR/node-varlog over /var/log (AWF mounts a host directory there); otherwise
# the env vars it has move all but otel.jsonl (a hard-coded path, best-effort: not written
# then). Needs install_node_peer first. The pid left in BG_PID is node's (env, unshare and sh
# exec it).
start_node_peer() {
    local dir=$1 port=$2 mock_port=$3 key=$4 shim logs
    shim=$(pwd)/benches/node-peer/bench-shim.js
    logs=$dir/node-varlog/api-proxy
    mkdir -p "$logs"
    local -a vars=(
        "PATH=$PATH" "HOME=${HOME:-/root}"
        "NODE_PATH=$NODE_PEER_MODULES"
        "NODE_EXTRA_CA_CERTS=$dir/mock-ca.pem"
        "BENCH_LISTEN=127.0.0.1:$port"
        "BENCH_UPSTREAM=127.0.0.1:$mock_port"
        "OPENAI_API_KEY=$key"
        "AWF_TOKEN_LOG_DIR=$logs"
        "AWF_API_PROXY_LOG_DIR=$logs"
    )
    local -a cmd=(node -r "$shim" "$NODE_PEER_SRC/server.js")
    if [[ $(id -u) == 0 ]] && unshare -m --propagation private true 2>/dev/null; then
        # shellcheck disable=SC2016 # expanded by the inner sh
        start_bg "$dir/node.log" env -i "${vars[@]}" unshare -m --propagation private -- \
            sh -c 'mount --bind "$0" /var/log && exec "$@"' "$dir/node-varlog" "${cmd[@]}"
    else
        echo "${0##*/}: not root: the node peer's otel.jsonl (/var/log/api-proxy) is not written" >&2
        start_bg "$dir/node.log" env -i "${vars[@]}" "${cmd[@]}"
    fi
    wait_port "$port" "$BG_PID" "node peer (AWF api-proxy)"
}

# write_nginx_conf DIR PORT MOCK_PORT KEY WORKERS FDS: writes DIR/nginx.conf (the mock's CA is
# DIR/mock-ca.pem). HTTP/1.1 to the upstream (nginx's proxy module has no HTTP/2 upstream) with
# an idle keep-alive pool of 64 connections per worker.
write_nginx_conf() {
    local dir=$1 port=$2 mock_port=$3 key=$4 workers=$5 fds=$6 user=""
    if [[ $(id -u) == 0 ]]; then
        if id www-data >/dev/null 2>&1; then user="user www-data;"; else user="user nobody;"; fi
    fi
    mkdir -p "$dir/nginx"
    cat > "$dir/nginx.conf" <<EOF
$user
worker_processes $workers;
worker_rlimit_nofile $fds;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events {
    worker_connections $fds;
}
http {
    access_log $dir/nginx-access.log;
    client_body_temp_path $dir/nginx/body;
    proxy_temp_path $dir/nginx/proxy;
    fastcgi_temp_path $dir/nginx/fastcgi;
    uwsgi_temp_path $dir/nginx/uwsgi;
    scgi_temp_path $dir/nginx/scgi;
    # nginx closes a client or upstream connection after 1000 requests by default;
    # llm-keyproxy and HAProxy keep theirs open.
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_max_body_size 10m;

    upstream openai {
        server 127.0.0.1:$mock_port;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }

    server {
        # reuseport: the kernel spreads connections evenly over the workers (without it one
        # worker can take most of the 10,000 streams and run out of fds: each holds two).
        listen 127.0.0.1:$port backlog=4096 reuseport;
        location / {
            proxy_pass https://openai;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host api.openai.com;
            proxy_set_header Authorization "Bearer $key";
            proxy_set_header X-Api-Key "";
            proxy_set_header Proxy-Authorization "";
            proxy_set_header X-Goog-Api-Key "";
            proxy_set_header Api-Key "";
            proxy_ssl_server_name on;
            proxy_ssl_name api.openai.com;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $dir/mock-ca.pem;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
}
EOF
}

# write_haproxy_cfg DIR PORT MOCK_PORT KEY THREADS FDS MAXCONN: writes DIR/haproxy.cfg. One
# process; HTTP/2 to the upstream when the mock offers it (ALPN h2); upstream connections
# shared between clients (http-reuse always: the closest to llm-keyproxy's one shared pool).
write_haproxy_cfg() {
    local dir=$1 port=$2 mock_port=$3 key=$4 threads=$5 fds=$6 maxconn=$7
    cat > "$dir/haproxy.cfg" <<EOF
global
    # 10,000 open streams need 10,000 client connections (the upstream leg is multiplexed).
    # HAProxy reserves two fds per connection, more than this machine's per-process limit
    # (20,000): start anyway, it needs one per client plus the few upstream connections.
    no strict-limits
    ulimit-n $fds
    maxconn $maxconn
    nbthread $threads
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    # Forward each chunk of a streamed body as it comes, without MSG_MORE batching: HAProxy's
    # switch for interactive streams such as SSE (without it events arrive ~25 ms late).
    option http-no-delay
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    timeout http-keep-alive 60s
    maxconn $maxconn
frontend llm
    bind 127.0.0.1:$port
    http-request deny deny_status 413 if { req.hdr_val(content-length) gt 10485760 }
    http-request del-header x-api-key
    http-request del-header proxy-authorization
    http-request del-header x-goog-api-key
    http-request del-header api-key
    http-request set-header Authorization "Bearer $key"
    http-request set-header Host api.openai.com
    default_backend openai
backend openai
    http-reuse always
    server s1 127.0.0.1:$mock_port ssl sni str(api.openai.com) verify required verifyhost api.openai.com ca-file $dir/mock-ca.pem alpn h2,http/1.1
EOF
}

# Background processes started with `start_bg`, stopped by `stop_all` (TERM, then KILL after
# 5 s), which the scripts call from their EXIT trap.
BG_PIDS=()

start_bg() { # LOGFILE CMD...: runs CMD in the background; its pid is left in BG_PID
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

stop_all() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BG_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            # Gone, or exited and not yet reaped (kill -0 still succeeds on a zombie).
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z) == Z ]] && break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BG_PIDS=()
}

wait_port() { # PORT PID WHAT: until PORT accepts, or fail when PID exits or after 20 s
    for _ in $(seq 1 200); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || { echo "${0##*/}: $3 exited" >&2; return 1; }
        sleep 0.1
    done
    echo "${0##*/}: $3 not listening on $1" >&2
    return 1
}

# start_mock DIR PORT KEY: the release mock-upstream, CA written to DIR/mock-ca.pem.
start_mock() {
    local dir=$1 port=$2 key=$3
    start_bg "$dir/mock.log" target/release/mock-upstream --listen "127.0.0.1:$port" \
        --ca-out "$dir/mock-ca.pem" --key "$key"
    wait_port "$port" "$BG_PID" mock-upstream || return 1
    for _ in $(seq 1 50); do [[ -s $dir/mock-ca.pem ]] && return 0; sleep 0.1; done
    echo "${0##*/}: mock-upstream wrote no CA" >&2
    return 1
}
