#!/bin/sh
# Runs the vendored str0m's own unit tests (`cargo test --lib`), which
# this workspace does not build: the crates.io release ships no test data
# and its manifest here has no dev-dependencies. A scratch copy gets them
# (serde_json, systemstat, tracing-subscriber), a stub for the one SDP
# file the release leaves out (two tests read it and fail on the stub),
# and loses the optional crypto back-ends lumen does not build (their
# crates would have to resolve). Extra arguments go to `cargo test`,
# e.g. `vendor/str0m-unit-tests.sh rtx_cache`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
scratch=${STR0M_SCRATCH:-${TMPDIR:-/tmp}/str0m-unit-tests}
rm -rf "$scratch/src"
mkdir -p "$scratch/docs"
cp -r "$here/str0m/src" "$here/str0m/Cargo.toml" "$scratch/"
cp "$here/../Cargo.lock" "$scratch/"
echo '{}' > "$scratch/docs/chrome-sdp.json"
python3 - "$scratch/Cargo.toml" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
for dep in ("str0m-openssl", "str0m-rust-crypto", "str0m-apple-crypto", "str0m-wincrypto"):
    s = re.sub(r"\n\[(?:target[^\n]*\.)?dependencies\.%s\][^\[]*" % re.escape(dep), "\n", s)
for feat in ("apple-crypto", "openssl", "openssl-dimpl", "vendored", "wincrypto",
             "wincrypto-dimpl", "rust-crypto"):
    s = re.sub(r"\n%s = \[[^\]]*\]" % re.escape(feat), "", s)
s += """
[dev-dependencies]
serde_json = "1"
systemstat = "0.2"
tracing-subscriber = { version = "0.3", features = ["env-filter"] }

[workspace]
"""
open(p, "w").write(s)
PY
cd "$scratch"
exec cargo test --lib "$@"
