//! What an operator deploys: the Kubernetes manifests in `deploy/k8s/` and
//! the `Dockerfile` are read and checked against each other and against
//! lumen's own defaults (no cluster and no Docker here: the checks are of
//! the files), and `lumen simulate` plans a 10-million-viewer tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of `deploy/k8s/`, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                docs.push((name.clone(), v));
            }
        }
    }
    docs
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => panic!("not a string: {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `--flag` in `args` (`--flag value` or `--flag=value`).
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// Whether every `selector` label is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let (Some(sel), Some(lab)) = (selector.as_mapping(), labels.as_mapping()) else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| lab.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_fit_together() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, d)| kind(d)).collect();
    for k in ["StatefulSet", "Service", "Deployment", "Kustomization"] {
        assert!(kinds.contains(k), "no {k} in deploy/k8s: {kinds:?}");
    }

    // The kustomization lists every other file, and names the image.
    let kust = &docs
        .iter()
        .find(|(_, d)| kind(d) == "Kustomization")
        .expect("a kustomization")
        .1;
    let listed: BTreeSet<String> = str_list(&kust["resources"]).into_iter().collect();
    let files: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| kind(d) != "Kustomization")
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources");
    let kust_images: BTreeSet<&str> = kust["images"]
        .as_sequence()
        .map(|s| s.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();

    let services: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| kind(d) == "Service")
        .collect();
    let sets: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| kind(d) == "StatefulSet")
        .collect();
    assert!(!sets.is_empty());

    let mut lumen_images = BTreeSet::new();
    for set in &sets {
        let ctx = name(set);
        let spec = &set["spec"];
        let pod = &spec["template"]["spec"];
        let pod_labels = &spec["template"]["metadata"]["labels"];
        assert!(
            selects(&spec["selector"]["matchLabels"], pod_labels),
            "{ctx}: the selector matches its own pods"
        );
        assert!(
            services
                .iter()
                .any(|s| name(s) == spec["serviceName"].as_str().unwrap_or("-")),
            "{ctx}: its serviceName is a Service here"
        );
        assert_eq!(pod["hostNetwork"].as_bool(), Some(true), "{ctx}");
        assert_eq!(
            pod["dnsPolicy"].as_str(),
            Some("ClusterFirstWithHostNet"),
            "{ctx}: cluster DNS from the host network"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        let uid = pod["securityContext"]["runAsUser"].as_u64();
        assert!(uid.is_some_and(|u| u != 0), "{ctx}: a non-root uid");

        let containers = pod["containers"].as_sequence().expect("containers");
        let lumen = containers
            .iter()
            .find(|c| c["name"].as_str() == Some("lumen"))
            .unwrap_or_else(|| panic!("{ctx}: a container named lumen"));
        let args = str_list(&lumen["args"]);
        assert_eq!(args.first().map(String::as_str), Some("serve"), "{ctx}");
        for f in ["--redis-url", "--region", "--public-url"] {
            assert!(flag(&args, f).is_some(), "{ctx}: {f} in {args:?}");
        }

        // Every $(VAR) in the args is defined in the container's env.
        let env: BTreeMap<&str, &Value> = lumen["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().expect("env name"), e))
            .collect();
        for a in &args {
            let mut rest = a.as_str();
            while let Some(start) = rest.find("$(") {
                let end = rest[start..].find(')').expect("closed $(…)") + start;
                let var = &rest[start + 2..end];
                assert!(env.contains_key(var), "{ctx}: $({var}) is not in env");
                rest = &rest[end + 1..];
            }
        }
        let field = |var: &str| env[var]["valueFrom"]["fieldRef"]["fieldPath"].as_str();
        assert_eq!(field("HOST_IP"), Some("status.hostIP"), "{ctx}");
        // --region comes from a pod label that exists.
        let region_var = flag(&args, "--region").unwrap();
        let region_path = field(region_var.trim_start_matches("$(").trim_end_matches(')'));
        let label = region_path
            .and_then(|p| p.strip_prefix("metadata.labels['"))
            .and_then(|p| p.strip_suffix("']"))
            .unwrap_or_else(|| panic!("{ctx}: --region from a pod label, got {region_path:?}"));
        assert!(pod_labels[label].as_str().is_some(), "{ctx}: label {label}");
        let db = &env
            .get("LUMEN_DATABASE_URL")
            .unwrap_or_else(|| panic!("{ctx}: LUMEN_DATABASE_URL"))["valueFrom"]["secretKeyRef"];
        assert!(
            db["name"].as_str().is_some(),
            "{ctx}: the database URL from a Secret"
        );
        assert!(
            !args.iter().any(|a| a.contains("postgres")),
            "{ctx}: no database URL in the args"
        );

        // --redis-url names a Service here that selects a Redis.
        let redis = flag(&args, "--redis-url").unwrap();
        let hostport = redis
            .strip_prefix("redis://")
            .expect("a redis:// URL")
            .trim_end_matches('/');
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "6379"));
        let svc = services
            .iter()
            .find(|s| name(s) == host)
            .unwrap_or_else(|| panic!("{ctx}: no Service {host} for --redis-url"));
        let svc_ports = svc["spec"]["ports"].as_sequence().expect("ports");
        assert!(
            svc_ports
                .iter()
                .any(|p| p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(port))
        );
        let redis_pods = docs
            .iter()
            .filter(|(_, d)| kind(d) == "Deployment")
            .find(|(_, d)| {
                selects(
                    &svc["spec"]["selector"],
                    &d["spec"]["template"]["metadata"]["labels"],
                )
            })
            .unwrap_or_else(|| panic!("{ctx}: Service {host} selects no Deployment"));
        let redis_image = redis_pods.1["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("");
        assert!(redis_image.starts_with("redis:"), "{redis_image}");

        // Probes: ready on /readyz, alive on something that does not
        // fail while draining.
        let ready = &lumen["readinessProbe"]["httpGet"];
        assert_eq!(ready["path"].as_str(), Some("/readyz"), "{ctx}");
        let live = &lumen["livenessProbe"];
        assert!(live.is_mapping(), "{ctx}: a liveness probe");
        assert_ne!(live["httpGet"]["path"].as_str(), Some("/readyz"), "{ctx}");

        // The probes' and Services' named ports exist; the HTTP port is the
        // one --http-addr binds; one UDP port per worker from --rtc-addr.
        let ports = lumen["ports"].as_sequence().expect("ports");
        let port_of = |n: &str| {
            ports
                .iter()
                .find(|p| p["name"].as_str() == Some(n))
                .and_then(|p| p["containerPort"].as_u64())
        };
        assert_eq!(ready["port"].as_str().and_then(port_of), Some(8080));
        let http: std::net::SocketAddr = flag(&args, "--http-addr")
            .expect("--http-addr")
            .parse()
            .expect("an address");
        assert_eq!(Some(u64::from(http.port())), port_of("http"), "{ctx}");
        let rtc_port: u64 = flag(&args, "--rtc-addr")
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .expect("--rtc-addr with a port");
        let workers: u64 = flag(&args, "--workers")
            .expect("--workers, to match the ports")
            .parse()
            .expect("a number");
        let udp: BTreeSet<u64> = ports
            .iter()
            .filter(|p| p["protocol"].as_str() == Some("UDP"))
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        assert_eq!(
            udp,
            (rtc_port..rtc_port + workers).collect(),
            "{ctx}: a UDP port per worker"
        );

        // The grace period outlasts the drain.
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let drain: u64 = flag(&args, "--drain-timeout")
            .expect("--drain-timeout")
            .trim_end_matches('s')
            .parse()
            .expect("seconds");
        assert!(grace > drain, "{ctx}: grace {grace} s <= drain {drain} s");

        // The signing key goes to the data dir the server uses.
        let data_dir = flag(&args, "--data-dir").expect("--data-dir");
        let mounts = |c: &Value| -> Vec<String> {
            c["volumeMounts"]
                .as_sequence()
                .map(|m| {
                    m.iter()
                        .filter_map(|m| m["mountPath"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(mounts(lumen).iter().any(|m| m == data_dir), "{ctx}");
        for init in pod["initContainers"].as_sequence().into_iter().flatten() {
            let script = str_list(&init["command"]).join(" ");
            if script.contains("jwt-ed25519.pk8") {
                assert!(script.contains(&format!("{data_dir}/jwt-ed25519.pk8")));
                assert!(script.contains("chmod 600"), "{script}");
            }
            lumen_images.insert(init["image"].as_str().unwrap_or("").to_string());
        }
        lumen_images.insert(lumen["image"].as_str().unwrap_or("").to_string());
    }

    // One lumen image, the one the kustomization sets.
    assert_eq!(lumen_images.len(), 1, "lumen images: {lumen_images:?}");
    let image = lumen_images.pop_first().unwrap();
    assert!(
        kust_images.contains(image.split(':').next().unwrap_or("")),
        "{image} is not in the kustomization's images {kust_images:?}"
    );

    // The HTTP Service reaches the lumen pods by a port they name.
    let http = services
        .iter()
        .find(|s| {
            sets.iter().any(|set| {
                selects(
                    &s["spec"]["selector"],
                    &set["spec"]["template"]["metadata"]["labels"],
                )
            }) && s["spec"]["clusterIP"].as_str() != Some("None")
        })
        .expect("a Service in front of the lumen pods");
    assert_eq!(
        http["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );
}

/// `Dockerfile` instructions with their continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("a Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(more) = t.strip_suffix('\\') {
            cur.push_str(more);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (op, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_builds_locked_and_runs_as_non_root() {
    let ins = dockerfile();
    let froms: Vec<usize> = (0..ins.len()).filter(|&i| ins[i].0 == "FROM").collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let (builder, runtime) = (froms[0], *froms.last().unwrap());
    let base = &ins[builder].1;
    assert!(base.starts_with("rust:"), "{base}");

    // The builder's Rust is at least the workspace's rust-version.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("rust-version");
    let version = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    let have = base["rust:".len()..].split('-').next().unwrap_or("");
    assert!(
        version(have) >= version(wanted),
        "rust {have} < rust-version {wanted}"
    );

    let build = ins[builder..runtime]
        .iter()
        .find(|(op, r)| op == "RUN" && r.contains("cargo build"))
        .expect("a cargo build in the builder");
    for f in ["--release", "--locked"] {
        assert!(build.1.contains(f), "{f} in {}", build.1);
    }
    let runtime_base = &ins[runtime].1;
    assert!(runtime_base.starts_with("debian:"), "{runtime_base}");

    let last_user = ins[runtime..]
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.split(':').next().unwrap_or("").to_string())
        .expect("a USER in the runtime stage");
    assert!(
        !matches!(last_user.as_str(), "" | "0" | "root"),
        "runs as {last_user}"
    );

    // It exposes lumen's default ports, which its ENV binds on every
    // address, and stops with the signal `lumen serve` handles.
    let defaults = lumen_signaling::Config::new();
    let exposed: BTreeSet<String> = ins
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, r)| r.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    let http = format!("{}/tcp", defaults.http_addr.port());
    let udp = format!("{}/udp", defaults.rtc_addr.port());
    assert!(
        exposed.contains(&http) && exposed.contains(&udp),
        "{exposed:?}"
    );
    let env = ins
        .iter()
        .filter(|(op, _)| op == "ENV")
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(env.contains(&format!(
        "LUMEN_HTTP_ADDR=0.0.0.0:{}",
        defaults.http_addr.port()
    )));
    assert!(env.contains(&format!(
        "LUMEN_RTC_ADDR=0.0.0.0:{}",
        defaults.rtc_addr.port()
    )));
    assert!(
        ins.iter()
            .any(|(op, r)| op == "STOPSIGNAL" && r == "SIGTERM"),
        "lumen serve drains on SIGTERM"
    );
    assert!(Path::new(&repo().join(".dockerignore")).exists());
}

#[test]
fn simulate_plans_ten_million_viewers() {
    let lumen = env!("CARGO_BIN_EXE_lumen");
    let out = Command::new(lumen)
        .args(["simulate", "--viewers", "10000000", "--regions", "6"])
        .output()
        .expect("lumen runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "level",
        "depth:",
        "relay links:",
        "origin egress:",
        "added latency:",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(text.contains("depth:            3 level(s)"), "{text}");

    let out = Command::new(lumen)
        .args([
            "simulate",
            "--viewers",
            "10000000",
            "--regions",
            "6",
            "--json",
        ])
        .output()
        .expect("lumen runs");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let plan = &doc["plan"];
    assert_eq!(plan["depth"], 3);
    assert_eq!(plan["levels"].as_array().map(Vec::len), Some(4));
    assert!(plan["edge_capacity"].as_u64() >= Some(10_000_000));
    assert_eq!(doc["scenario"]["node_capacity"], 800);

    let out = Command::new(lumen)
        .args(["simulate", "--regions", "0"])
        .output()
        .expect("lumen runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("region"));
}
