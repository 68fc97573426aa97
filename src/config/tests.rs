//! `lumen.toml`, environment and flags: precedence, errors and masking.
//! The environment is a function here, so no test touches the process's.

use super::*;
use std::collections::HashMap;

/// A scratch directory for config files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("lumen-config-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write config file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn no_file() -> &'static Path {
    Path::new("/nonexistent/lumen-config-test/lumen.toml")
}

fn with_file(path: &Path) -> ConfigArgs {
    ConfigArgs {
        config: Some(path.to_path_buf()),
        ..ConfigArgs::default()
    }
}

#[test]
fn defaults_when_nothing_is_set() {
    let loaded = ConfigArgs::default()
        .load_with(env(&[]), no_file())
        .expect("load");
    assert_eq!(loaded.file, None);
    let c = loaded.config;
    assert_eq!(c, LumenConfig::default());
    assert_eq!(c.http.addr, addr("127.0.0.1:8080"));
    assert_eq!(c.media.addr, addr("127.0.0.1:8000"));
    assert_eq!(c.data_dir, PathBuf::from("lumen-data"));
    assert_eq!(
        c.media.worker_spread,
        lumen_signaling::DEFAULT_WORKER_SPREAD
    );
    assert!(c.media.workers >= 1);
    assert_eq!((c.media.public_ip, c.media.public_port), (None, None));
}

#[test]
fn file_beats_default() {
    let dir = Scratch::new("file");
    let path = dir.file(
        "lumen.toml",
        "data_dir = \"/srv/lumen\"\n[http]\naddr = \"0.0.0.0:9090\"\n\
         [media]\nworkers = 3\nice_servers = [\"stun:a:3478\"]\n",
    );
    let c = with_file(&path)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    assert_eq!(c.http.addr, addr("0.0.0.0:9090"));
    assert_eq!(c.data_dir, PathBuf::from("/srv/lumen"));
    assert_eq!(c.media.workers, 3);
    assert_eq!(c.media.ice_servers, ["stun:a:3478"]);
    // Keys the file leaves out keep their defaults.
    assert_eq!(c.media.addr, LumenConfig::default().media.addr);
}

#[test]
fn default_file_is_read_only_when_present() {
    let dir = Scratch::new("default-file");
    let path = dir.file("lumen.toml", "[media]\nworker_spread = 5\n");
    let loaded = ConfigArgs::default()
        .load_with(env(&[]), &path)
        .expect("load");
    assert_eq!(loaded.file.as_deref(), Some(path.as_path()));
    assert_eq!(loaded.config.media.worker_spread, 5);

    // `LUMEN_CONFIG=` (empty) names no file, like any empty variable.
    let loaded = with_file(Path::new(""))
        .load_with(env(&[]), &path)
        .expect("load");
    assert_eq!(loaded.file.as_deref(), Some(path.as_path()));
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let path = Path::new("/nonexistent/lumen-config-test/custom.toml");
    let err = with_file(path).load_with(env(&[]), no_file()).unwrap_err();
    assert!(format!("{err:#}").contains("custom.toml"), "{err:#}");
}

#[test]
fn env_beats_file() {
    let dir = Scratch::new("env");
    let path = dir.file(
        "lumen.toml",
        "[http]\naddr = \"0.0.0.0:9090\"\n[media]\nworkers = 3\npublic_port = 1\n",
    );
    let vars = env(&[
        ("LUMEN_HTTP_ADDR", "127.0.0.1:7070"),
        ("LUMEN_WORKERS", "5"),
        ("LUMEN_ICE_SERVERS", "stun:a:3478, turn:b:3478"),
        ("LUMEN_PUBLIC_IP", "203.0.113.7"),
        ("LUMEN_PUBLIC_PORT", ""),
    ]);
    let c = with_file(&path)
        .load_with(vars, no_file())
        .expect("load")
        .config;
    assert_eq!(c.http.addr, addr("127.0.0.1:7070"));
    assert_eq!(c.media.workers, 5);
    assert_eq!(c.media.ice_servers, ["stun:a:3478", "turn:b:3478"]);
    assert_eq!(c.media.public_ip, Some("203.0.113.7".parse().unwrap()));
    // Empty means unset: the file's value stands.
    assert_eq!(c.media.public_port, Some(1));
}

#[test]
fn flag_beats_env() {
    let vars = env(&[
        ("LUMEN_HTTP_ADDR", "127.0.0.1:7070"),
        ("LUMEN_ICE_SERVERS", "stun:env"),
        ("LUMEN_DATA_DIR", "/env"),
    ]);
    let args = ConfigArgs {
        http_addr: Some("127.0.0.1:6060".parse().unwrap()),
        ice_servers: vec!["stun:flag".into()],
        ..ConfigArgs::default()
    };
    let c = args.load_with(vars, no_file()).expect("load").config;
    assert_eq!(c.http.addr, addr("127.0.0.1:6060"));
    assert_eq!(c.media.ice_servers, ["stun:flag"]);
    assert_eq!(c.data_dir, PathBuf::from("/env"));
}

#[test]
fn every_env_variable_and_flag_reaches_its_field() {
    let vars = env(&[
        ("LUMEN_DATA_DIR", "123"),
        ("LUMEN_HTTP_ADDR", "127.0.0.1:1"),
        ("LUMEN_RTC_ADDR", "127.0.0.1:2"),
        ("LUMEN_PUBLIC_IP", "::1"),
        ("LUMEN_PUBLIC_PORT", "3"),
        ("LUMEN_ICE_SERVERS", "stun:x"),
        ("LUMEN_WORKERS", "4"),
        ("LUMEN_WORKER_SPREAD", "0"),
        ("LUMEN_HEADER_TIMEOUT", "5"),
        ("LUMEN_BODY_TIMEOUT", "6"),
        ("LUMEN_MAX_CONNECTIONS", "7"),
        ("LUMEN_SESSION_RATE", "0.5"),
        ("LUMEN_SESSION_BURST", "8"),
        ("LUMEN_SESSIONS_PER_CLIENT", "9"),
        ("LUMEN_MAX_SESSIONS", "10"),
        ("LUMEN_EVENT_READERS_PER_SESSION", "11"),
        ("LUMEN_EVENT_READERS_PER_CLIENT", "12"),
        ("LUMEN_MAX_CANDIDATES", "13"),
        ("LUMEN_MAX_M_LINES", "14"),
        ("LUMEN_MAX_ADDRS_PER_SESSION", "15"),
        ("LUMEN_CONNECT_TIMEOUT", "16"),
    ]);
    let expected = LumenConfig {
        data_dir: "123".into(),
        http: HttpConfig {
            addr: "127.0.0.1:1".parse().unwrap(),
        },
        media: MediaConfig {
            addr: "127.0.0.1:2".parse().unwrap(),
            public_ip: Some("::1".parse().unwrap()),
            public_port: Some(3),
            ice_servers: vec!["stun:x".into()],
            workers: 4,
            worker_spread: 0,
        },
        limits: LimitsConfig {
            header_timeout_secs: 5,
            body_timeout_secs: 6,
            max_connections: 7,
            session_rate: 0.5,
            session_burst: 8,
            sessions_per_client: 9,
            max_sessions: 10,
            event_readers_per_session: 11,
            event_readers_per_client: 12,
            max_candidates: 13,
            max_m_lines: 14,
            max_addrs_per_session: 15,
            connect_timeout_secs: 16,
        },
    };
    assert_eq!(ENV.len(), 21, "a new variable belongs in this test");
    let from_env = ConfigArgs::default()
        .load_with(vars, no_file())
        .expect("env");
    assert_eq!(from_env.config, expected);

    let args = ConfigArgs {
        config: None,
        data_dir: Some("123".into()),
        http_addr: Some("127.0.0.1:1".parse().unwrap()),
        rtc_addr: Some("127.0.0.1:2".parse().unwrap()),
        public_ip: Some("::1".parse().unwrap()),
        public_port: Some(3),
        ice_servers: vec!["stun:x".into()],
        workers: Some(4),
        worker_spread: Some(0),
        ..ConfigArgs::default()
    };
    // The limits without a flag come from the environment here.
    let limit_vars = env(&[
        ("LUMEN_HEADER_TIMEOUT", "5"),
        ("LUMEN_BODY_TIMEOUT", "6"),
        ("LUMEN_SESSION_BURST", "8"),
        ("LUMEN_EVENT_READERS_PER_SESSION", "11"),
        ("LUMEN_EVENT_READERS_PER_CLIENT", "12"),
        ("LUMEN_MAX_CANDIDATES", "13"),
        ("LUMEN_MAX_M_LINES", "14"),
        ("LUMEN_MAX_ADDRS_PER_SESSION", "15"),
        ("LUMEN_CONNECT_TIMEOUT", "16"),
    ]);
    let args = ConfigArgs {
        max_connections: Some(7),
        session_rate: Some(0.5),
        sessions_per_client: Some(9),
        max_sessions: Some(10),
        ..args
    };
    let from_flags = args.load_with(limit_vars, no_file()).expect("flags");
    assert_eq!(from_flags.config, expected);

    let server: lumen_signaling::Config = expected.clone().into();
    assert_eq!(LumenConfig::from(server), expected);
}

#[test]
fn bad_value_error_names_key_and_source() {
    let vars = env(&[("LUMEN_PUBLIC_PORT", "eighty")]);
    let err = ConfigArgs::default()
        .load_with(vars, no_file())
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("media.public_port"), "{msg}");
    assert!(msg.contains("LUMEN_PUBLIC_PORT"), "{msg}");

    let dir = Scratch::new("bad");
    let path = dir.file("lumen.toml", "[http]\naddr = \"not an address\"\n");
    let err = with_file(&path).load_with(env(&[]), no_file()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("http.addr") && msg.contains("lumen.toml"),
        "{msg}"
    );
}

#[test]
fn unknown_key_and_broken_syntax_are_errors() {
    let dir = Scratch::new("unknown");
    let path = dir.file("lumen.toml", "[http]\nadr = \"127.0.0.1:1\"\n");
    let err = with_file(&path).load_with(env(&[]), no_file()).unwrap_err();
    assert!(format!("{err:#}").contains("adr"), "{err:#}");

    let path = dir.file("broken.toml", "[http\naddr = 1\n");
    let err = with_file(&path).load_with(env(&[]), no_file()).unwrap_err();
    assert!(format!("{err:#}").contains("broken.toml"), "{err:#}");
}

#[test]
fn masks_secrets_at_any_depth() {
    let mut value: toml::Value = toml::from_str(
        r#"
        name = "lumen"
        jwt_secret = "s1"
        [accounts]
        admin_Password = "s2"
        lifetime = 60
        [accounts.api_keys]
        ci = "s3"
        [[webhooks]]
        url = "https://example.com/hook"
        signing_key = "s4"
        [[webhooks]]
        url = "https://example.org/hook"
        [store]
        token = ["s5", "s6"]
        "#,
    )
    .expect("sample");
    mask_secrets(&mut value);
    let text = toml::to_string(&value).expect("print");
    for secret in ["s1", "s2", "s3", "s4", "s5", "s6"] {
        assert!(
            !text.contains(&format!("\"{secret}\"")),
            "{secret} leaked:\n{text}"
        );
    }
    assert_eq!(value["jwt_secret"].as_str(), Some("***"));
    assert_eq!(value["accounts"]["admin_Password"].as_str(), Some("***"));
    assert_eq!(value["accounts"]["api_keys"].as_str(), Some("***"));
    assert_eq!(value["webhooks"][0]["signing_key"].as_str(), Some("***"));
    assert_eq!(value["store"]["token"].as_str(), Some("***"));
    assert_eq!(value["name"].as_str(), Some("lumen"));
    assert_eq!(value["accounts"]["lifetime"].as_integer(), Some(60));
    assert_eq!(
        value["webhooks"][1]["url"].as_str(),
        Some("https://example.org/hook")
    );
}

#[test]
fn print_names_sources_and_round_trips() {
    let dir = Scratch::new("print");
    let path = dir.file("lumen.toml", "[media]\nworkers = 3\n");
    let args = ConfigArgs {
        config: Some(path.clone()),
        rtc_addr: Some("127.0.0.1:9".parse().unwrap()),
        ..ConfigArgs::default()
    };
    let loaded = args
        .load_with(env(&[("LUMEN_HTTP_ADDR", "127.0.0.1:7")]), no_file())
        .expect("load");
    let text = loaded.to_masked_toml().expect("print");
    assert!(
        text.contains("# http.addr: LUMEN_HTTP_ADDR environment variable"),
        "{text}"
    );
    assert!(text.contains("# media.addr: --rtc-addr flag"), "{text}");
    assert!(
        text.contains("# media.workers: ") && text.contains("TOML file"),
        "{text}"
    );
    assert!(!text.contains("# data_dir"), "{text}");
    // The printout is itself a valid lumen.toml giving the same result.
    let again = dir.file("again.toml", &text);
    let reread = with_file(&again)
        .load_with(env(&[]), no_file())
        .expect("reload");
    assert_eq!(reread.config, loaded.config);
}
