#!/usr/bin/env bash
# Runs llm-keyproxy offline in front of the bundled mock upstream (config/quickstart.yaml).
# The mock serves TLS for api.openai.com / api.anthropic.com with its own CA on 127.0.0.1:8443;
# the proxy listens on 127.0.0.1:10000 (OpenAI) and :10001 (Anthropic), admin on :9901.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p mock-upstream -p llm-keyproxy
mkdir -p target && rm -f target/mock-ca.pem
./target/release/mock-upstream --listen 127.0.0.1:8443 --ca-out target/mock-ca.pem --key sk-demo-key &
mock=$!
trap 'kill "$mock" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 50); do [ -s target/mock-ca.pem ] && break; sleep 0.1; done

echo "try: curl -N http://127.0.0.1:10000/v1/chat/completions -H 'content-type: application/json' \\"
echo "       -d '{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
OPENAI_API_KEY=sk-demo-key ANTHROPIC_API_KEY=sk-demo-key \
  ./target/release/llm-keyproxy --config config/quickstart.yaml --log-format text
