//! Scopes: `publish:{stream}`, `subscribe:{stream}`, `chat:{stream}`,
//! `moderate:{stream}`, `admin`; `*` as the stream matches every stream.
//!
//! A token's `scope` claim is parsed strictly: a scope this server does not
//! know, or a stream name it would never accept, is an error rather than
//! something silently ignored, so a typo in a minted token shows up at once.
//! [`Scopes`] prints in one canonical order, and parsing what it prints
//! gives back an equal value.

use std::collections::BTreeSet;
use std::fmt;

/// What a credential may do to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// WHIP.
    Publish,
    /// WHEP.
    Subscribe,
    /// Write in the stream's chat.
    Chat,
    /// Moderate the stream's chat.
    Moderate,
}

impl Action {
    /// Every action, in canonical order.
    pub const ALL: [Action; 4] = [
        Action::Publish,
        Action::Subscribe,
        Action::Chat,
        Action::Moderate,
    ];

    /// The scope prefix: `publish`, `subscribe`, `chat` or `moderate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Chat => "chat",
            Action::Moderate => "moderate",
        }
    }

    fn from_prefix(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether a grant of `self` also grants `wanted` (moderators may chat).
    fn implies(self, wanted: Action) -> bool {
        self == wanted || (self == Action::Moderate && wanted == Action::Chat)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stream name rule in words, for the errors that refuse one.
pub const STREAM_NAME_RULE: &str =
    "a stream name is 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'";

/// Whether `name` is a valid stream name: 1 to 64 ASCII letters, digits,
/// '-', '_' or '.', not starting with '.' (`.` and `..` would make session
/// URLs such as `/whip/../{id}` that a client's URL resolution turns into
/// other paths). The one rule for URLs, scopes and the account store.
pub fn is_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A parsed space-separated `scope` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    admin: bool,
    // A set, so that equality ignores order and duplicates, and Display
    // prints one canonical order (action, then `*` before names).
    grants: BTreeSet<(Action, Target)>,
}

impl Scopes {
    /// Parses `"publish:foo subscribe:*"`; unknown scopes are an error.
    ///
    /// Scopes are separated by spaces (RFC 6749 §3.3); extra spaces are
    /// ignored, and an empty string is no scope at all.
    pub fn parse(s: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for item in s.split(' ').filter(|i| !i.is_empty()) {
            scopes.add_item(item)?;
        }
        Ok(scopes)
    }

    /// The stream scopes of `s` that lumen knows, for an external issuer's
    /// token: other scopes (`openid profile`, and `admin`, which only
    /// lumen's own tokens may carry) are ignored rather than refused.
    pub fn parse_external(s: &str) -> Scopes {
        let mut scopes = Scopes::default();
        for item in s.split(' ').filter(|i| !i.is_empty() && *i != "admin") {
            let mut one = Scopes::default();
            if one.add_item(item).is_ok() {
                scopes.grants.extend(one.grants);
            }
        }
        scopes
    }

    /// Only `admin`.
    pub fn admin() -> Scopes {
        Scopes {
            admin: true,
            grants: BTreeSet::new(),
        }
    }

    /// Adds `action` on `stream` (a stream name or `*`).
    pub fn grant(&mut self, action: Action, stream: &str) -> Result<(), String> {
        let target = Target::parse(stream).ok_or_else(|| bad_stream(action, stream))?;
        self.grants.insert((action, target));
        Ok(())
    }

    /// These scopes with `action` on `stream` added.
    pub fn with(mut self, action: Action, stream: &str) -> Result<Scopes, String> {
        self.grant(action, stream)?;
        Ok(self)
    }

    /// Whether these scopes allow `action` on `stream` (`admin` allows all).
    pub fn allows(&self, action: Action, stream: &str) -> bool {
        self.admin
            || self
                .grants
                .iter()
                .any(|(granted, target)| granted.implies(action) && target.matches(stream))
    }

    /// Whether `admin` is among them.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether there is no scope at all.
    pub fn is_empty(&self) -> bool {
        !self.admin && self.grants.is_empty()
    }

    fn add_item(&mut self, item: &str) -> Result<(), String> {
        let (prefix, stream) = match item.split_once(':') {
            Some((p, s)) => (p, Some(s)),
            None => (item, None),
        };
        if prefix == "admin" {
            return match stream {
                None => {
                    self.admin = true;
                    Ok(())
                }
                Some(_) => Err(format!(
                    "scope `{}`: `admin` takes no stream",
                    shorten(item)
                )),
            };
        }
        let Some(action) = Action::from_prefix(prefix) else {
            return Err(format!(
                "unknown scope `{}`: expected admin, publish:{{stream}}, \
                 subscribe:{{stream}}, chat:{{stream}} or moderate:{{stream}}",
                shorten(item)
            ));
        };
        match stream {
            None | Some("") => Err(format!(
                "scope `{}` needs a stream: `{action}:{{stream}}` or `{action}:*`",
                shorten(item)
            )),
            Some(stream) => self.grant(action, stream),
        }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.admin {
            f.write_str("admin")?;
            sep = " ";
        }
        for (action, target) in &self.grants {
            write!(f, "{sep}{action}:{target}")?;
            sep = " ";
        }
        Ok(())
    }
}

/// The stream part of a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// `*`: every stream.
    All,
    /// One stream, by its exact (case-sensitive) name.
    Stream(String),
}

impl Target {
    fn parse(s: &str) -> Option<Target> {
        if s == "*" {
            Some(Target::All)
        } else if is_stream_name(s) {
            Some(Target::Stream(s.to_string()))
        } else {
            None
        }
    }

    fn matches(&self, stream: &str) -> bool {
        match self {
            Target::All => true,
            Target::Stream(name) => name == stream,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("*"),
            Target::Stream(name) => f.write_str(name),
        }
    }
}

fn bad_stream(action: Action, stream: &str) -> String {
    format!(
        "scope `{action}:{}`: a stream is `*` or 1 to 64 letters, digits, '-', '_' or '.', \
         not starting with '.'",
        shorten(stream)
    )
}

/// The input as quoted in an error, cut so that a huge claim does not make a
/// huge message.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Scopes {
        Scopes::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn external_tokens_keep_stream_scopes_only() {
        let s = Scopes::parse_external("openid profile subscribe:cam admin publish:bad/name");
        assert_eq!(s, parse("subscribe:cam"));
        assert!(!s.is_admin());
    }

    #[test]
    fn parses_every_kind() {
        let s = parse("publish:foo subscribe:* chat:bar moderate:baz admin");
        assert!(s.is_admin());
        assert_eq!(
            s.to_string(),
            "admin publish:foo subscribe:* chat:bar moderate:baz"
        );
    }

    #[test]
    fn empty_is_no_scope() {
        for s in ["", " ", "   "] {
            let scopes = parse(s);
            assert!(scopes.is_empty());
            assert_eq!(scopes, Scopes::default());
            assert!(!scopes.allows(Action::Subscribe, "foo"));
            assert_eq!(scopes.to_string(), "");
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let cases = [
            "subscribe:b publish:a",
            "  chat:x   chat:x moderate:*  ",
            "admin",
            "moderate:a.b-c_d publish:* publish:Z9 admin subscribe:x",
            "",
        ];
        for case in cases {
            let parsed = parse(case);
            let shown = parsed.to_string();
            assert_eq!(parse(&shown), parsed, "{case:?} -> {shown:?}");
            // Canonical: printing the re-parsed value gives the same text.
            assert_eq!(parse(&shown).to_string(), shown);
        }
        assert_eq!(
            parse("subscribe:b publish:a subscribe:* publish:a").to_string(),
            "publish:a subscribe:* subscribe:b"
        );
        // Order and duplicates do not make a difference.
        assert_eq!(parse("chat:a publish:b"), parse("publish:b chat:a chat:a"));
    }

    #[test]
    fn exact_stream_grants_only_that_stream() {
        let s = parse("publish:foo");
        assert!(s.allows(Action::Publish, "foo"));
        assert!(!s.allows(Action::Publish, "foo2"));
        assert!(!s.allows(Action::Publish, "Foo"));
        assert!(!s.allows(Action::Subscribe, "foo"));
        assert!(!s.allows(Action::Chat, "foo"));
        assert!(!s.is_admin());
    }

    #[test]
    fn wildcard_matches_every_stream_for_its_action_only() {
        let s = parse("subscribe:*");
        for stream in ["foo", "bar", "a.b", "x-y_z"] {
            assert!(s.allows(Action::Subscribe, stream));
            assert!(!s.allows(Action::Publish, stream));
            assert!(!s.allows(Action::Chat, stream));
            assert!(!s.allows(Action::Moderate, stream));
        }
    }

    #[test]
    fn moderate_implies_chat_on_the_same_stream() {
        let s = parse("moderate:foo");
        assert!(s.allows(Action::Moderate, "foo"));
        assert!(s.allows(Action::Chat, "foo"));
        assert!(!s.allows(Action::Chat, "bar"));
        assert!(!s.allows(Action::Subscribe, "foo"));
        assert!(!s.allows(Action::Publish, "foo"));

        let everywhere = parse("moderate:*");
        assert!(everywhere.allows(Action::Chat, "any"));

        // Not the other way round.
        let chat = parse("chat:foo");
        assert!(chat.allows(Action::Chat, "foo"));
        assert!(!chat.allows(Action::Moderate, "foo"));
    }

    #[test]
    fn admin_allows_everything() {
        let s = parse("admin");
        for action in Action::ALL {
            assert!(s.allows(action, "anything"));
        }
        assert_eq!(Scopes::admin(), s);
    }

    #[test]
    fn builder_matches_parse() {
        let built = Scopes::default()
            .with(Action::Publish, "foo")
            .and_then(|s| s.with(Action::Subscribe, "*"))
            .expect("valid");
        assert_eq!(built, parse("subscribe:* publish:foo"));
        assert!(Scopes::default().with(Action::Chat, ".hidden").is_err());
        assert!(Scopes::default().with(Action::Chat, "").is_err());
    }

    #[test]
    fn stream_names() {
        assert!(is_stream_name("a"));
        assert!(is_stream_name(&"a".repeat(64)));
        assert!(is_stream_name("a.b-c_D9"));
        assert!(is_stream_name("a."));
        assert!(!is_stream_name(""));
        assert!(!is_stream_name(&"a".repeat(65)));
        assert!(!is_stream_name(".a"));
        assert!(!is_stream_name("a b"));
        assert!(!is_stream_name("a/b"));
        assert!(!is_stream_name("a:b"));
        assert!(!is_stream_name("é"));
        assert!(!is_stream_name("*"));
    }

    #[test]
    fn errors_are_precise() {
        let err = |s: &str| Scopes::parse(s).expect_err(s);
        assert!(err("publish:foo read:foo").starts_with("unknown scope `read:foo`"));
        assert!(err("Publish:foo").starts_with("unknown scope `Publish:foo`"));
        assert!(err("publishing").starts_with("unknown scope `publishing`"));
        assert_eq!(
            err("admin:foo"),
            "scope `admin:foo`: `admin` takes no stream"
        );
        assert_eq!(
            err("publish"),
            "scope `publish` needs a stream: `publish:{stream}` or `publish:*`"
        );
        assert_eq!(
            err("chat:"),
            "scope `chat:` needs a stream: `chat:{stream}` or `chat:*`"
        );
        for bad in [
            "subscribe:.x",
            "subscribe:a:b",
            "subscribe:**",
            "subscribe:a*",
            "subscribe:a/b",
        ] {
            let e = err(bad);
            assert!(e.starts_with(&format!("scope `{bad}`: a stream is")), "{e}");
        }
        let long = format!("subscribe:{}", "a".repeat(65));
        assert!(err(&long).contains("1 to 64"));
        // Tabs and newlines are not separators: they make a bad stream name.
        assert!(Scopes::parse("publish:a\tchat:b").is_err());
    }

    #[test]
    fn long_input_is_cut_in_errors() {
        let e = Scopes::parse(&"x".repeat(10_000)).expect_err("unknown");
        assert!(e.len() < 300, "{}", e.len());
    }
}
