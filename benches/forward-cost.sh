#!/bin/sh
# Instructions the SFU spends per forwarded packet, counted by callgrind.
#
#   benches/forward-cost.sh [VIEWERS]     (default 20; needs valgrind)
#
# Runs the ignored scenario `cost::forwarding_cost` of lumen-sfu's tests
# (crates/sfu/tests/it/cost.rs: a 2.5 Mbit/s one-layer publisher and
# VIEWERS viewers, str0m on both ends, a virtual clock) under
# `valgrind --tool=callgrind`, counting only inside the SFU's entry points
# (`Sfu::handle_input`, `Sfu::poll_output`) during the scenario's 3-second
# measured window. Instruction counts repeat from run to run on a noisy
# machine where CPU times do not, so two builds compare to the instruction.
# The SFU's work is everything but the kernel: demultiplexing, forwarding,
# str0m's queues and RTCP, SRTP. Each incoming packet is fanned out and
# drained on its own (no receive batch), the costliest case per packet.
set -eu
viewers=${1:-20}
cd "$(dirname "$0")/.."
. benches/cost-test.sh
LUMEN_COST_VIEWERS=$viewers valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
	--collect-atstart=no \
	--toggle-collect='lumen_sfu::worker::Sfu::handle_input' \
	--toggle-collect='lumen_sfu::worker::Sfu::poll_output' \
	--zero-before='it::cost::measured_window' --dump-after='it::cost::measured_window' \
	"$bin" --ignored --exact cost::forwarding_cost --nocapture --test-threads 1 \
	>"$out/test.txt" 2>"$out/valgrind.txt" || { cat "$out/test.txt" "$out/valgrind.txt"; exit 1; }
forwarded=$(sed -n 's/.*forwarded \([0-9]*\) packets.*/\1/p' "$out/test.txt")
total=$(sed -n 's/^totals: //p' "$out/cg.1")
callgrind_annotate --inclusive=yes --threshold=100 "$out/cg.1" >"$out/incl.txt" 2>/dev/null
callgrind_annotate --threshold=100 "$out/cg.1" >"$out/excl.txt" 2>/dev/null
python3 - "$forwarded" "$total" "$viewers" "$out" <<'PY'
import re, sys
forwarded, total, viewers, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rows(path):
    for line in open(path):
        m = re.match(r"\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(\S+?):(.+?)(?: \[(.*)\])?$", line)
        if m and m.group(4):  # a function's own entry, not an inlined piece
            yield int(m.group(1).replace(",", "")), m.group(3)
incl = dict((f, n) for n, f in rows(f"{out}/incl.txt"))
# (`protect_rtp` is inlined into its callers and calls this.)
srtp = incl.get("str0m::rtp_::srtp::SrtpContext::protect_rtp_parts", 0)
print(f"viewers                     {viewers}")
print(f"packets forwarded           {forwarded}")
print(f"SFU instructions per packet {total / forwarded:.0f}")
print(f"  of which SRTP encryption  {srtp / forwarded:.0f} ({100 * srtp / total:.1f} %)")
print("the functions that cost most, their own instructions per packet:")
# (The threads' roots carry everything while collection is on: skipped.)
own = [(n, f) for n, f in rows(f"{out}/excl.txt") if n < total * 0.9]
for n, f in sorted(own, reverse=True)[:12]:
    print(f"  {n / forwarded:6.0f}  {f[:100]}")
PY
