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
        ("LUMEN_TLS_CERT", "/tls/cert.pem"),
        ("LUMEN_TLS_KEY", "/tls/key.pem"),
        ("LUMEN_TRUSTED_PROXIES", "10.0.0.0/8,::1"),
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
        ("DATABASE_URL", "postgres://ignored"),
        ("LUMEN_DATABASE_URL", "postgres://db/lumen"),
        ("LUMEN_SIGNUP", "invite-only"),
        ("LUMEN_ADMIN_PASSWORD", "first admin pw"),
        ("LUMEN_JWT_SECRET", "shared secret"),
        ("LUMEN_JWT_ISSUER", "iss"),
        ("LUMEN_JWT_AUDIENCE", "aud"),
        ("LUMEN_SESSIONS_PER_USER", "17"),
        ("LUMEN_CHAT_RATE_LIMIT_MESSAGES", "18"),
        ("LUMEN_CHAT_RATE_LIMIT_SECONDS", "19"),
        ("LUMEN_CHAT_FILTER_WORDS", "heck,darn"),
        ("LUMEN_RECORDING", "on_demand"),
        ("LUMEN_RECORDING_RETENTION_DAYS", "20"),
        ("LUMEN_REDIS_URL", "redis://dir:6379/2"),
        ("LUMEN_NODE_ID", "n-21"),
        ("LUMEN_REGION", "eu-22"),
        ("LUMEN_PUBLIC_URL", "http://n21.example:23"),
        ("LUMEN_FANOUT_LIMIT", "24"),
        ("LUMEN_DRAIN_TIMEOUT", "25"),
        ("LUMEN_TRANSCODE", "false"),
        ("LUMEN_TRANSCODE_MAX_STREAMS", "26"),
    ]);
    let expected = LumenConfig {
        data_dir: "123".into(),
        http: HttpConfig {
            addr: "127.0.0.1:1".parse().unwrap(),
            tls_cert: Some("/tls/cert.pem".into()),
            tls_key: Some("/tls/key.pem".into()),
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
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
        auth: AuthSection {
            database_url: Some("postgres://db/lumen".into()),
            signup: lumen_signaling::auth::SignupMode::InviteOnly,
            admin_password: Some("first admin pw".into()),
            jwt_secret: Some("shared secret".into()),
            issuer: "iss".into(),
            audience: "aud".into(),
            sessions_per_user: 17,
            ..AuthSection::default()
        },
        chat: lumen_signaling::ChatSettings {
            rate_limit_messages: 18,
            rate_limit_seconds: 19,
            filter_words: vec!["heck".into(), "darn".into()],
            ..lumen_signaling::ChatSettings::default()
        },
        recording: lumen_signaling::recorder::RecorderConfig {
            policy: lumen_signaling::recorder::Policy::OnDemand,
            retention_days: 20,
            ..lumen_signaling::recorder::RecorderConfig::default()
        },
        transcode: lumen_signaling::transcoder::TranscodeConfig {
            enabled: false,
            max_streams: 26,
            ..Default::default()
        },
        cluster: ClusterSection {
            redis_url: Some("redis://dir:6379/2".into()),
            node_id: Some("n-21".into()),
            region: "eu-22".into(),
            public_url: Some("http://n21.example:23".into()),
            fanout_limit: 24,
            drain_timeout_secs: 25,
        },
    };
    assert_eq!(ENV.len(), 45, "a new variable belongs in this test");
    let from_env = ConfigArgs::default()
        .load_with(vars, no_file())
        .expect("env");
    assert_eq!(from_env.config, expected);

    let args = ConfigArgs {
        config: None,
        data_dir: Some("123".into()),
        http_addr: Some("127.0.0.1:1".parse().unwrap()),
        tls_cert: Some("/tls/cert.pem".into()),
        tls_key: Some("/tls/key.pem".into()),
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
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
        ("LUMEN_ADMIN_PASSWORD", "first admin pw"),
        ("LUMEN_JWT_SECRET", "shared secret"),
        ("LUMEN_JWT_ISSUER", "iss"),
        ("LUMEN_JWT_AUDIENCE", "aud"),
        ("LUMEN_SESSIONS_PER_USER", "17"),
        ("LUMEN_HEADER_TIMEOUT", "5"),
        ("LUMEN_BODY_TIMEOUT", "6"),
        ("LUMEN_SESSION_BURST", "8"),
        ("LUMEN_EVENT_READERS_PER_SESSION", "11"),
        ("LUMEN_EVENT_READERS_PER_CLIENT", "12"),
        ("LUMEN_MAX_CANDIDATES", "13"),
        ("LUMEN_MAX_M_LINES", "14"),
        ("LUMEN_MAX_ADDRS_PER_SESSION", "15"),
        ("LUMEN_CONNECT_TIMEOUT", "16"),
        ("LUMEN_TRANSCODE", "false"),
        ("LUMEN_TRANSCODE_MAX_STREAMS", "26"),
        ("LUMEN_CHAT_RATE_LIMIT_MESSAGES", "18"),
        ("LUMEN_CHAT_RATE_LIMIT_SECONDS", "19"),
        ("LUMEN_CHAT_FILTER_WORDS", "heck,darn"),
        ("LUMEN_RECORDING", "on_demand"),
        ("LUMEN_RECORDING_RETENTION_DAYS", "20"),
    ]);
    let args = ConfigArgs {
        max_connections: Some(7),
        session_rate: Some(0.5),
        sessions_per_client: Some(9),
        max_sessions: Some(10),
        database_url: Some("postgres://db/lumen".into()),
        signup: Some("invite-only".into()),
        redis_url: Some("redis://dir:6379/2".into()),
        node_id: Some("n-21".into()),
        region: Some("eu-22".into()),
        public_url: Some("http://n21.example:23".into()),
        fanout_limit: Some(24),
        drain_timeout: Some(25),
        ..args
    };
    let from_flags = args.load_with(limit_vars, no_file()).expect("flags");
    assert_eq!(from_flags.config, expected);

    let server: lumen_signaling::Config = expected.clone().into();
    assert_eq!(LumenConfig::from(server), expected);
}

#[test]
fn tls_and_trusted_proxies_reach_the_server() {
    let dir = Scratch::new("tls");
    let path = dir.file(
        "lumen.toml",
        "[http]\ntls_cert = \"/file/cert.pem\"\ntls_key = \"/file/key.pem\"\n\
         trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\"]\n",
    );
    let c = with_file(&path)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    assert_eq!(c.http.tls_cert, Some(PathBuf::from("/file/cert.pem")));
    let server: lumen_signaling::Config = c.clone().into();
    assert_eq!(
        server.tls,
        Some(lumen_signaling::TlsFiles {
            cert: "/file/cert.pem".into(),
            key: "/file/key.pem".into(),
        })
    );
    let shown: Vec<String> = server
        .trusted_proxies
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]);
    assert_eq!(LumenConfig::from(server), c);

    // The environment beats the file, a flag the environment.
    let vars = env(&[
        ("LUMEN_TLS_KEY", "/env/key.pem"),
        ("LUMEN_TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
    ]);
    let args = ConfigArgs {
        tls_cert: Some("/flag/cert.pem".into()),
        ..with_file(&path)
    };
    let c = args.load_with(vars, no_file()).expect("load").config;
    assert_eq!(c.http.tls_cert, Some(PathBuf::from("/flag/cert.pem")));
    assert_eq!(c.http.tls_key, Some(PathBuf::from("/env/key.pem")));
    assert_eq!(
        c.http.trusted_proxies,
        ["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]
    );

    // Off by default: plain HTTP, and no forwarding header believed.
    let server: lumen_signaling::Config = LumenConfig::default().into();
    assert_eq!(server.tls, None);
    assert!(server.trusted_proxies.is_empty());
}

#[test]
fn tls_files_come_in_pairs_and_proxies_are_networks() {
    for vars in [
        env(&[("LUMEN_TLS_CERT", "/c.pem")]),
        env(&[("LUMEN_TLS_KEY", "/k.pem")]),
    ] {
        let err = ConfigArgs::default()
            .load_with(vars, no_file())
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("http.tls_cert") && msg.contains("http.tls_key"),
            "{msg}"
        );
    }

    let vars = env(&[("LUMEN_TRUSTED_PROXIES", "10.0.0.0/8,10.1.2.3/8")]);
    let err = ConfigArgs::default()
        .load_with(vars, no_file())
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("http.trusted_proxies"), "{msg}");
    assert!(msg.contains("LUMEN_TRUSTED_PROXIES"), "{msg}");
    assert!(msg.contains("10.1.2.3/8"), "{msg}");

    let dir = Scratch::new("bad-proxy");
    let path = dir.file("lumen.toml", "[http]\ntrusted_proxies = [\"proxy.lan\"]\n");
    let err = with_file(&path).load_with(env(&[]), no_file()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("http.trusted_proxies") && msg.contains("proxy.lan"),
        "{msg}"
    );
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
    assert_eq!(value["accounts"]["api_keys"]["ci"].as_str(), Some("***"));
    assert_eq!(value["webhooks"][0]["signing_key"].as_str(), Some("***"));
    assert_eq!(value["store"]["token"][1].as_str(), Some("***"));
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

#[test]
fn auth_settings_reach_the_server_and_secrets_are_masked() {
    let dir = Scratch::new("auth");
    let path = dir.file(
        "lumen.toml",
        "[auth]\nsignup = \"open\"\nadmin_password = \"hunter22hunter22\"\n\
         database_url = \"postgres://u:pw@db/lumen\"\n\
         [cluster]\nredis_url = \"redis://:redispw@dir:6379/\"\n\
         [[auth.external]]\nissuer = \"https://site.example\"\njwks_file = \"/etc/site.jwks\"\n",
    );
    let loaded = with_file(&path)
        .load_with(env(&[]), no_file())
        .expect("load");
    let server = loaded.config.clone().server().expect("server config");
    assert_eq!(server.auth.signup, lumen_signaling::auth::SignupMode::Open);
    assert_eq!(
        server.auth.admin_password.as_deref(),
        Some("hunter22hunter22")
    );
    assert_eq!(server.auth.external_issuers.len(), 1);
    assert!(matches!(
        &server.auth.external_issuers[0].jwks,
        lumen_signaling::auth::JwksSource::File(f) if f == &PathBuf::from("/etc/site.jwks")
    ));
    let shown = loaded.to_masked_toml().expect("toml");
    assert!(!shown.contains("hunter22"), "{shown}");
    assert!(!shown.contains("u:pw"), "{shown}");
    assert!(!shown.contains("redispw"), "{shown}");
    // An external issuer needs exactly one JWKS source.
    let bad = dir.file("bad.toml", "[[auth.external]]\nissuer = \"x\"\n");
    let err = with_file(&bad)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config
        .server()
        .expect_err("no JWKS source");
    assert!(err.to_string().contains("jwks_url"), "{err}");
    // A sign up mode that is not one is an error naming the value.
    let err = ConfigArgs {
        signup: Some("sometimes".into()),
        ..ConfigArgs::default()
    }
    .load_with(env(&[]), no_file())
    .expect_err("bad mode");
    assert!(format!("{err:#}").contains("sometimes"), "{err:#}");
}

#[test]
fn chat_section_sets_the_rooms_rules_and_refuses_a_zero_limit() {
    let scratch = Scratch::new("chat");
    let file = scratch.file(
        "lumen.toml",
        "[chat]\nrate_limit_messages = 120\nrate_limit_seconds = 60\nfilter_mode = \"mask\"\nblock_links = true\n",
    );
    let c = with_file(&file)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    assert_eq!(c.chat.rate_limit_messages, 120);
    assert_eq!(format!("{:?}", c.chat.filter_mode), "Mask");
    assert!(c.chat.block_links);
    let server = c.server().expect("a valid [chat]");
    assert_eq!(server.chat.rate_limit_seconds, 60);

    let file = scratch.file("zero.toml", "[chat]\nrate_limit_messages = 0\n");
    let c = with_file(&file)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    let e = c.server().unwrap_err().to_string();
    assert!(e.contains("chat.rate_limit_messages"), "{e}");
}

#[test]
fn transcode_section_sets_the_ladder_and_refuses_a_bad_rung() {
    let scratch = Scratch::new("transcode");
    let file = scratch.file(
        "lumen.toml",
        "[transcode]\nmax_streams = 1\n\n[[transcode.rungs]]\nrid = \"q\"\nwidth = 426\nheight = 240\nbitrate_kbps = 400\n",
    );
    let c = with_file(&file)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    let server = c.server().expect("a valid [transcode]");
    assert!(server.transcode.enabled, "on by default");
    assert_eq!(server.transcode.max_streams, 1);
    let rids: Vec<&str> = server
        .transcode
        .rungs
        .iter()
        .map(|r| r.rid.as_str())
        .collect();
    assert_eq!(rids, ["q"]);
    assert_eq!(server.transcode.rungs[0].bitrate_kbps, 400);

    let file = scratch.file(
        "bad.toml",
        "[[transcode.rungs]]\nrid = \"q\"\nwidth = 426\nheight = 240\nbitrate_kbps = 0\n",
    );
    let c = with_file(&file)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    let e = c.server().unwrap_err().to_string();
    assert!(e.contains("bitrate_kbps"), "{e}");
}

#[test]
fn a_rung_may_be_av1_and_an_unknown_codec_is_refused() {
    use lumen_signaling::transcoder::RungCodec;
    let scratch = Scratch::new("transcode-av1");
    let rung = |rid: &str, codec: &str| {
        format!(
            "[[transcode.rungs]]\nrid = \"{rid}\"\nwidth = 320\nheight = 180\nbitrate_kbps = 200\n{codec}\n"
        )
    };
    let file = scratch.file(
        "lumen.toml",
        &(rung("l", "") + &rung("a", "codec = \"av1\"")),
    );
    let c = with_file(&file)
        .load_with(env(&[]), no_file())
        .expect("load")
        .config;
    let server = c.server().expect("a valid [transcode]");
    let codecs: Vec<RungCodec> = server.transcode.rungs.iter().map(|r| r.codec).collect();
    assert_eq!(codecs, [RungCodec::H264, RungCodec::Av1], "h264 by default");
    assert!(server.transcode.has_av1());

    let file = scratch.file("bad.toml", &rung("v", "codec = \"vp9\""));
    let err = match with_file(&file).load_with(env(&[]), no_file()) {
        Err(e) => format!("{e:#}"),
        Ok(l) => l
            .config
            .server()
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default(),
    };
    assert!(err.contains("vp9"), "{err:?}");
}
