//! The workspace's one-way layering (DESIGN): `lumen (bin) -> signaling ->
//! node -> sfu -> str0m`, `node -> udp`, `tools -> udp`, `signaling ->
//! recorder -> node, auth`, `signaling -> transcoder -> node, recorder`; nothing depends on a crate above it, and the
//! server path (signaling, node, sfu, udp) carries no webrtc-rs (`webrtc`,
//! `rtc`) at all, and no openh264, reqwest or mio of its own: openh264 comes
//! only with the recorder (thumbnails) and reqwest only with object_store's
//! S3 client under it.
//!
//! Read from `cargo metadata`: for each workspace package, the transitive
//! closure over *normal* dependency edges (no dev- or build-dependency edges;
//! target-specific ones count, for the platform being built), as
//! `cargo tree -p <package> -e normal` shows it. `cargo metadata` unifies
//! features over the whole workspace, as building the `lumen` binary does, so
//! an optional dependency that another member switches on counts too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The packages the rules are about. One that is missing fails the test by
/// name rather than passing its rules vacuously.
const REQUIRED: &[&str] = &[
    "lumen-sfu",
    "lumen-udp",
    "lumen-node",
    "lumen-auth",
    "lumen-chat",
    "lumen-recorder",
    "lumen-cascade",
    "lumen-transcoder",
    "lumen-signaling",
];

/// The server path.
const SERVER: &[&str] = &[
    "lumen-sfu",
    "lumen-udp",
    "lumen-node",
    "lumen-auth",
    "lumen-signaling",
];

/// Edges that exist only because `cargo metadata` unifies features over the
/// whole workspace, not because a crate of the server path asks for them:
/// the `redis` client of lumen-cascade switches on `combine`'s `tokio`
/// feature (tokio and tokio-util), and str0m parses SDP with `combine`. lumen-sfu still builds
/// without tokio (`.ci/run` checks `cargo tree -p lumen-sfu`).
const UNIFIED_ONLY: &[(&str, &str)] = &[("combine", "tokio"), ("combine", "tokio-util")];

/// No package of the server path has any of these in its closure: the
/// clients' WebRTC stack stays in tools.
const SERVER_FORBIDDEN: &[&str] = &["webrtc", "rtc"];

/// Nor any of these as a direct dependency. (tokio's reactor is mio, so mio
/// is in the closure of everything on tokio; what is ruled out is the server
/// polling sockets with mio itself, as the load generator does. openh264 and
/// reqwest come in only through the recorder, below, and its object store.)
const SERVER_FORBIDDEN_DIRECT: &[&str] = &["mio", "openh264", "reqwest"];

/// Package, crates that must not be in its normal dependency closure.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The sans-IO core: no runtime, no HTTP, and the bottom of the workspace.
    (
        "lumen-sfu",
        &[
            "tokio",
            "axum",
            "hyper",
            "lumen-udp",
            "lumen-node",
            "lumen-signaling",
            "lumen-tools",
            "lumen",
        ],
    ),
    // Syscalls only: no lumen crate at all.
    (
        "lumen-udp",
        &[
            "lumen-sfu",
            "lumen-node",
            "lumen-signaling",
            "lumen-tools",
            "lumen",
        ],
    ),
    // The node runtime: no HTTP; below signaling and beside tools.
    (
        "lumen-node",
        &["axum", "hyper", "lumen-signaling", "lumen-tools", "lumen"],
    ),
    // Accounts: a store and a policy, called by signaling; no HTTP server,
    // no media.
    (
        "lumen-auth",
        &[
            "axum",
            "lumen-sfu",
            "lumen-udp",
            "lumen-node",
            "lumen-signaling",
            "lumen-tools",
            "lumen",
        ],
    ),
    // The chat room: sans-IO like the SFU core, no runtime, no store.
    (
        "lumen-chat",
        &[
            "tokio",
            "axum",
            "hyper",
            "sqlx",
            "lumen-sfu",
            "lumen-udp",
            "lumen-node",
            "lumen-auth",
            "lumen-signaling",
            "lumen-tools",
            "lumen",
        ],
    ),
    // The recorder: a sink reader and a store client; no HTTP server, no
    // clients' stack.
    (
        "lumen-recorder",
        &["axum", "lumen-signaling", "lumen-tools", "lumen"],
    ),
    // The relay tree: the directory (Redis), placement, and relay links,
    // which are sinks of a stream like the recorder (so the node and the
    // SFU's types, below it); no HTTP server, no store.
    (
        "lumen-cascade",
        &[
            "axum",
            "sqlx",
            "lumen-recorder",
            "lumen-signaling",
            "lumen-tools",
            "lumen",
        ],
    ),
    // The transcoder: a sink reader with codecs; no HTTP server, no
    // clients' stack, below signaling. (It reuses the recorder's
    // depacketizer, and so has hyper under the recorder's S3 client.)
    (
        "lumen-transcoder",
        &[
            "axum",
            "lumen-cascade",
            "lumen-signaling",
            "lumen-tools",
            "lumen",
        ],
    ),
    ("lumen-signaling", &["lumen-tools", "lumen"]),
];

#[test]
fn layering_is_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = Graph::load(root);
    let problems = graph.check();
    assert!(
        problems.is_empty(),
        "the workspace's layering is broken:\n  {}",
        problems.join("\n  ")
    );
}

/// Workspace members and the normal dependency edges of the resolved graph.
struct Graph {
    /// Package id to name.
    names: BTreeMap<String, String>,
    /// Workspace member name to package id.
    members: BTreeMap<String, String>,
    /// Package id to the ids it depends on as a normal dependency.
    normal: BTreeMap<String, Vec<String>>,
}

impl Graph {
    fn load(root: &Path) -> Self {
        let cargo = env!("CARGO");
        // Without --filter-platform, metadata resolves every platform and
        // needs, offline, the manifests of Windows-only crates that a build
        // here never downloads.
        let host = host_triple(cargo);
        let args = [
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ];
        let out = Command::new(cargo)
            .args(args)
            .current_dir(root)
            .output()
            .unwrap_or_else(|e| panic!("running {cargo} {}: {e}", args.join(" ")));
        assert!(
            out.status.success(),
            "`cargo {}` in {} failed ({}):\n{}",
            args.join(" "),
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
        Self::from_metadata(&meta)
    }

    fn from_metadata(meta: &Value) -> Self {
        let str_of = |v: &Value| v.as_str().expect("a string in cargo metadata").to_owned();
        let names: BTreeMap<String, String> = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (str_of(&p["id"]), str_of(&p["name"])))
            .collect();
        let members = meta["workspace_members"]
            .as_array()
            .expect("workspace_members")
            .iter()
            .map(|id| {
                let id = str_of(id);
                (names[&id].clone(), id)
            })
            .collect();
        let normal = meta["resolve"]["nodes"]
            .as_array()
            .expect("resolve.nodes")
            .iter()
            .map(|node| {
                let deps = node["deps"]
                    .as_array()
                    .expect("deps")
                    .iter()
                    // kind is null for a normal dependency, "dev" or "build"
                    // otherwise; one entry per (kind, target).
                    .filter(|d| {
                        d["dep_kinds"]
                            .as_array()
                            .expect("dep_kinds")
                            .iter()
                            .any(|k| k["kind"].is_null())
                    })
                    .map(|d| str_of(&d["pkg"]))
                    .collect();
                (str_of(&node["id"]), deps)
            })
            .collect();
        Self {
            names,
            members,
            normal,
        }
    }

    /// Names of the packages `id` depends on, directly or through others,
    /// over normal edges.
    fn closure(&self, id: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            for dep in self.normal.get(id).into_iter().flatten() {
                let edge = (self.names[id].as_str(), self.names[dep].as_str());
                if UNIFIED_ONLY.contains(&edge) {
                    continue;
                }
                if seen.insert(dep.as_str()) {
                    stack.push(dep);
                }
            }
        }
        seen.into_iter().map(|id| self.names[id].as_str()).collect()
    }

    fn direct(&self, id: &str) -> BTreeSet<&str> {
        self.normal
            .get(id)
            .into_iter()
            .flatten()
            .map(|id| self.names[id].as_str())
            .collect()
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for name in REQUIRED {
            if !self.members.contains_key(*name) {
                problems.push(format!(
                    "workspace package `{name}` does not exist (not a member in \
                     `cargo metadata`); the layering rules need it"
                ));
            }
        }
        let mut rules: Vec<(&str, &[&str], bool)> = Vec::new();
        for name in SERVER {
            rules.push((name, SERVER_FORBIDDEN, false));
            rules.push((name, SERVER_FORBIDDEN_DIRECT, true));
        }
        for (name, forbidden) in FORBIDDEN {
            rules.push((name, forbidden, false));
        }
        for (name, forbidden, direct_only) in rules {
            let Some(id) = self.members.get(name) else {
                continue; // reported above
            };
            let deps = if direct_only {
                self.direct(id)
            } else {
                self.closure(id)
            };
            for bad in forbidden.iter().filter(|f| deps.contains(*f)) {
                problems.push(if direct_only {
                    format!("`{name}` depends directly on `{bad}`")
                } else {
                    format!(
                        "`{name}` depends on `{bad}` (see `cargo tree -p {name} -e normal -i {bad}`)"
                    )
                });
            }
        }
        problems
    }
}

/// The `host:` line of `cargo -vV`.
fn host_triple(cargo: &str) -> String {
    let out = Command::new(cargo)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} -vV: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no `host:` line in `{cargo} -vV`"))
        .trim()
        .to_owned()
}
