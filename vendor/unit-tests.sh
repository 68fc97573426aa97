#!/bin/sh
# Runs a vendored crate's own unit tests (`cargo test --lib`), which this
# workspace does not build: the crates.io releases ship no test data and
# their manifests here have no dev-dependencies. A scratch copy gets them.
#
#   vendor/unit-tests.sh str0m [cargo test args]
#   vendor/unit-tests.sh sctp-proto [cargo test args]
#   vendor/unit-tests.sh dimpl [cargo test args]
#
# str0m also gets a stub for the one SDP file its release leaves out (two
# tests read it and fail on the stub) and loses the optional crypto
# back-ends lumen does not build (their crates would have to resolve).
# It is built against the vendored sctp-proto and dimpl, as lumen builds
# it. dimpl gets the certificate parser its tests use.
set -eu
crate=${1:?usage: vendor/unit-tests.sh str0m|sctp-proto|dimpl [cargo test args]}
shift
here=$(cd "$(dirname "$0")" && pwd)
scratch=${UNIT_TESTS_SCRATCH:-${TMPDIR:-/tmp}/lumen-unit-tests}/$crate
rm -rf "$scratch/src"
mkdir -p "$scratch/docs"
cp -r "$here/$crate/src" "$here/$crate/Cargo.toml" "$scratch/"
cp "$here/../Cargo.lock" "$scratch/"
python3 - "$scratch/Cargo.toml" "$crate" "$here" <<'PY'
import re, sys
p, crate, here = sys.argv[1], sys.argv[2], sys.argv[3]
s = open(p).read()
if crate == "str0m":
    for dep in ("str0m-openssl", "str0m-rust-crypto", "str0m-apple-crypto", "str0m-wincrypto"):
        s = re.sub(r"\n\[(?:target[^\n]*\.)?dependencies\.%s\][^\[]*" % re.escape(dep), "\n", s)
    for feat in ("apple-crypto", "openssl", "openssl-dimpl", "vendored", "wincrypto",
                 "wincrypto-dimpl", "rust-crypto"):
        s = re.sub(r"\n%s = \[[^\]]*\]" % re.escape(feat), "", s)
    # The SCTP and DTLS it is built with in lumen: the vendored copies.
    s += """
[patch.crates-io]
sctp-proto = { path = "%s/sctp-proto" }
dimpl = { path = "%s/dimpl" }
""" % (here, here)
    s += """
[dev-dependencies]
serde_json = "1"
systemstat = "0.2"
tracing-subscriber = { version = "0.3", features = ["env-filter"] }
"""
elif crate == "dimpl":
    s += '\n[dev-dependencies]\nx509-parser = "0.18"\n'
elif crate == "sctp-proto":
    if "dev-dependencies.assert_matches" not in s:
        s += '\n[dev-dependencies]\nassert_matches = "1"\n'
else:
    sys.exit("unknown crate: " + crate)
s += "\n[workspace]\n"
open(p, "w").write(s)
PY
if [ "$crate" = str0m ]; then echo '{}' > "$scratch/docs/chrome-sdp.json"; fi
cd "$scratch"
exec cargo test --lib "$@"
