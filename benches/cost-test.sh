# Sourced by benches/forward-cost.sh and benches/chat-cost.sh: builds
# lumen-sfu's scenario tests (release) and sets `bin` to the test binary
# and `out` to a scratch directory removed on exit.
bin=$(cargo test --release --locked -p lumen-sfu --test it --no-run --message-format=json 2>/dev/null |
	python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
