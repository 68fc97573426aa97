#!/bin/sh
# Instructions chat costs both ends of a data channel, counted by callgrind.
#
#   benches/chat-cost.sh [VIEWERS]     (default 50; needs valgrind)
#
# Runs the ignored scenario `cost::chat_cost` of lumen-sfu's tests
# (crates/sfu/tests/it/cost.rs: a 200 kbit/s publisher and VIEWERS viewers
# with a `chat` channel, str0m on both ends, a virtual clock) twice under
# `valgrind --tool=callgrind`: with the chat of `lumen load --chat-rate
# 1000` in a room of 500 (every 20 ms a 600-byte round to each viewer,
# 2 texts a second from each) and without. The difference in the
# scenario's 3-second window is what chat costs:
#   - the SFU: everything under the test's calls of `Sfu::handle_input`,
#     `Sfu::poll_output` and `Sfu::send_channel` (a viewer's
#     acknowledgements and texts in, the rounds out: SCTP, DTLS);
#   - the viewers: their str0m, receiving and acknowledging (the test's
#     `Browser::receive`, `tick`, `settle` and `World::send_on_channel`).
# Also per round message delivered. Instruction counts repeat from run to
# run (within 0.2 %) on a noisy machine where CPU times do not, so two
# builds compare.
set -eu
viewers=${1:-50}
cd "$(dirname "$0")/.."
. benches/cost-test.sh
for chat in 0 1; do
	LUMEN_COST_VIEWERS=$viewers LUMEN_COST_CHAT=$chat valgrind --tool=callgrind \
		--callgrind-out-file="$out/cg$chat" --collect-atstart=no \
		--toggle-collect='it::cost::measured_chat_window' \
		"$bin" --ignored --exact cost::chat_cost --nocapture --test-threads 1 \
		>"$out/test$chat.txt" 2>"$out/valgrind$chat.txt" ||
		{ cat "$out/test$chat.txt" "$out/valgrind$chat.txt"; exit 1; }
	callgrind_annotate --inclusive=yes --threshold=100 "$out/cg$chat" >"$out/incl$chat.txt" 2>/dev/null
done
python3 - "$out" "$viewers" <<'PY'
import re, sys
out, viewers = sys.argv[1], sys.argv[2]
def incl(chat):
    costs = {}
    for line in open(f"{out}/incl{chat}.txt"):
        m = re.match(r"\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(\S+?):(.+?)(?: \[(.*)\])?$", line)
        if m and m.group(4):
            costs[m.group(3)] = costs.get(m.group(3), 0) + int(m.group(1).replace(",", ""))
    return costs
def total(costs, names):
    missing = [n for n in names if n not in costs]
    if missing:
        sys.exit(f"not in the profile: {missing}")
    return sum(costs[n] for n in names)
server = ["it::harness::sfu_input", "it::harness::sfu_poll", "it::cost::send_channel"]
client = ["it::harness::browser::Browser::receive", "it::harness::browser::Browser::tick",
          "it::harness::browser::Browser::settle", "it::harness::World::send_on_channel"]
line = open(f"{out}/test1.txt").read()
m = re.search(r"(\d+) messages delivered, (\d+) sent", line)
delivered, sent = int(m.group(1)), int(m.group(2))
c0, c1 = incl(0), incl(1)
# Without chat the SFU sends no round and no viewer a text.
for f in ("it::cost::send_channel", "it::harness::World::send_on_channel"):
    c0.setdefault(f, 0)
s0, s1 = total(c0, server), total(c1, server)
v0, v1 = total(c0, client), total(c1, client)
print(f"viewers                                {viewers}")
print(f"round messages delivered               {delivered} (and {sent} texts sent)")
print(f"SFU instructions, without / with chat  {s0:,} / {s1:,}")
print(f"viewers' instructions, without / with  {v0:,} / {v1:,}")
print(f"chat per round message delivered:  SFU {(s1 - s0) / delivered:,.0f}   viewer {(v1 - v0) / delivered:,.0f}")
PY
