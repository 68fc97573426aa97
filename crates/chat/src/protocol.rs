//! The chat wire format: UTF-8 JSON text frames on the data channel `chat`.
//!
//! Client frames are parsed by hand from a `serde_json::Value` rather than
//! derived, so that every way a frame can be wrong maps to its own
//! [`ErrorCode`] (serde's derive folds "missing field", "wrong type" and
//! "unknown variant" into one opaque error). Server frames are derived:
//! the room builds them, so they cannot be malformed. docs/chat.md lists
//! every frame, field and code.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest frame accepted, in bytes; checked before anything is parsed.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// The longest message text, in Unicode scalar values (after trimming).
pub const MAX_TEXT_CHARS: usize = 500;
/// The longest moderation or report reason, in Unicode scalar values.
pub const MAX_REASON_CHARS: usize = 200;
/// The longest user id a command may name, in bytes.
pub const MAX_USER_BYTES: usize = 128;
/// The longest timeout: 14 days.
pub const MAX_TIMEOUT_SECS: u64 = 14 * 24 * 3600;
/// The longest slow-mode interval: one hour.
pub const MAX_SLOW_SECS: u64 = 3600;

/// The data-channel subprotocol with which a client asks for compressed
/// server messages: `createDataChannel("chat", {protocol: "deflate-raw"})`.
/// The server then may send any message as a *binary* one holding the
/// message's JSON text as raw DEFLATE (RFC 1951; what the browser's
/// `DecompressionStream("deflate-raw")` reads); text messages stay plain
/// JSON. Clients always send plain text frames.
pub const DEFLATE_PROTOCOL: &str = "deflate-raw";
/// A server message shorter than this goes uncompressed even to a client
/// that asked (a single chat message barely shrinks).
pub const DEFLATE_FROM: usize = 512;
/// The most a compressed server message inflates to (a batch of frames
/// stays within [`MAX_FRAME_BYTES`]; a single frame may be up to twice
/// that with its escapes).
pub const MAX_INFLATED_BYTES: usize = 4 * MAX_FRAME_BYTES;

/// A frame from a client (or carried up a relay link on a client's behalf).
///
/// `Serialize` is for clients written in Rust (the CLI); the server parses
/// with [`ClientFrame::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Nothing but "I am here": a client that negotiated its `chat`
    /// channel out of band (`negotiated: true, id: 0`) sends it first, since
    /// the server joins such a channel to the room when it first hears
    /// from it. No answer of its own; harmless at any time.
    Join,
    /// Post a message.
    Send {
        /// The message, 1..=500 characters after trimming.
        text: String,
    },
    /// Delete a message: any message for a moderator, one's own otherwise.
    Delete {
        /// The message id the room assigned.
        id: u64,
    },
    /// Moderator: refuse a user's messages for a while.
    Timeout {
        /// The user id.
        user: String,
        /// 1..=[`MAX_TIMEOUT_SECS`].
        seconds: u64,
        /// Shown to the user and kept in the audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Moderator: refuse a user's messages until unbanned.
    Ban {
        /// The user id.
        user: String,
        /// Shown to the user and kept in the audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Moderator: lift a ban or timeout.
    Unban {
        /// The user id.
        user: String,
    },
    /// Moderator: clear the history for everyone.
    Clear,
    /// Moderator: set slow mode, 0 turns it off.
    Slow {
        /// Seconds a viewer must wait between messages, 0..=[`MAX_SLOW_SECS`].
        seconds: u64,
    },
    /// Moderator: allow only registered users to send.
    Mode {
        /// On or off.
        registered_only: bool,
    },
    /// Report a message to the moderators.
    Report {
        /// The message id.
        id: u64,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A frame from the server. Relay links carry these down unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A new message, to everyone.
    Message(ChatMessage),
    /// A message was deleted; clients drop it.
    Deleted {
        /// The message id.
        id: u64,
    },
    /// Human-readable information for one member.
    Notice {
        /// The text.
        text: String,
    },
    /// A frame of this member was refused.
    Error {
        /// What was wrong, machine-readable.
        code: ErrorCode,
        /// What was wrong, for a human.
        message: String,
        /// Seconds until a retry can succeed (rate limits, slow mode, timeouts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// The recent messages, oldest first; sent on join.
    History {
        /// Up to 50 messages.
        messages: Vec<ChatMessage>,
    },
    /// The room's modes; sent on join and whenever they change.
    State {
        /// Seconds between a viewer's messages, 0 when off.
        slow_mode: u64,
        /// Whether only registered users may send.
        registered_only: bool,
    },
    /// A moderator cleared the chat; clients drop every message.
    Cleared,
}

/// One chat message as the room accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Assigned by the room, increasing.
    pub id: u64,
    /// The sender's user id.
    pub user: String,
    /// The sender's display name at the time of sending.
    pub display_name: String,
    /// The sender's role in this room.
    pub role: Role,
    /// The text, after trimming and masking.
    pub text: String,
    /// Milliseconds since the Unix epoch, from the room's clock input.
    pub ts: u64,
}

/// A member's role in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Watches and chats.
    Viewer,
    /// Owns the stream; moderates its chat.
    Broadcaster,
    /// Moderates this stream's chat.
    Moderator,
    /// Moderates every chat.
    Admin,
}

impl Role {
    /// Whether this role may moderate, and is exempt from rate limits, slow
    /// mode, registered-only mode, the word filter and link blocking.
    pub fn is_privileged(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

/// Every reason a frame can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is over [`MAX_FRAME_BYTES`].
    TooLarge,
    /// The frame was a binary data-channel message.
    Binary,
    /// The frame is not valid UTF-8.
    NotUtf8,
    /// The frame is not JSON.
    NotJson,
    /// The frame is JSON but not an object.
    NotObject,
    /// `type` names no frame.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or is out of range.
    BadField,
    /// The text is empty or only whitespace.
    EmptyText,
    /// The text is over [`MAX_TEXT_CHARS`].
    TextTooLong,
    /// The member has no user identity (anonymous viewers read only).
    ReadOnly,
    /// Registered-only mode is on and the member is a guest.
    RegisteredOnly,
    /// The member's role does not allow this.
    Forbidden,
    /// The user is banned in this room.
    Banned,
    /// The user is timed out; see `retry_after`.
    TimedOut,
    /// Slow mode: wait `retry_after` seconds.
    SlowMode,
    /// Too many messages; wait `retry_after` seconds.
    RateLimited,
    /// The text contains a filtered word.
    Filtered,
    /// The text contains a link and links are blocked.
    LinksBlocked,
    /// No such message (or user, for unban).
    NotFound,
    /// The room cannot be reached right now: on a node of the relay tree
    /// whose link to its parent is down (being made again). See
    /// `retry_after`.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Binary => "binary",
            ErrorCode::NotUtf8 => "not_utf8",
            ErrorCode::NotJson => "not_json",
            ErrorCode::NotObject => "not_object",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::BadField => "bad_field",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::RegisteredOnly => "registered_only",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Banned => "banned",
            ErrorCode::TimedOut => "timed_out",
            ErrorCode::SlowMode => "slow_mode",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Filtered => "filtered",
            ErrorCode::LinksBlocked => "links_blocked",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// A client frame that could not be parsed: bad network input, answered
/// with an `error` frame to its sender and otherwise dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct FrameError {
    /// The wire code.
    pub code: ErrorCode,
    /// A message for a human; never echoes more than a short prefix of input.
    pub message: String,
}

impl FrameError {
    /// An error with this code and message (a relay node carries a
    /// refusal's code and message up to the origin's room this way).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
        }
    }
}

/// The checks of a client frame that look at its bytes only (size, the
/// binary flag, UTF-8), in the order [`ClientFrame::parse`] makes them:
/// the frame's text, or the error its sender gets. A node of the relay tree
/// that is not the stream's origin makes only these before it carries the
/// text up (the rest needs the room).
pub fn frame_text(binary: bool, data: &[u8]) -> Result<&str, FrameError> {
    // The size is checked first so that an oversized frame costs nothing.
    if data.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new(
            ErrorCode::TooLarge,
            format!(
                "frame is {} bytes, the limit is {MAX_FRAME_BYTES}",
                data.len()
            ),
        ));
    }
    if binary {
        return Err(FrameError::new(
            ErrorCode::Binary,
            "chat frames are text, not binary",
        ));
    }
    std::str::from_utf8(data).map_err(|e| {
        FrameError::new(
            ErrorCode::NotUtf8,
            format!("frame is not UTF-8 (invalid byte at {})", e.valid_up_to()),
        )
    })
}

impl ClientFrame {
    /// Parses one data-channel message. `binary` is the message's binary
    /// flag (the SCTP payload protocol id); chat accepts text only.
    pub fn parse(binary: bool, data: &[u8]) -> Result<ClientFrame, FrameError> {
        let text = frame_text(binary, data)?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| FrameError::new(ErrorCode::NotJson, format!("frame is not JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(FrameError::new(
                ErrorCode::NotObject,
                "frame must be a JSON object",
            ));
        };
        let fields = Fields(&object);
        let kind = match object.get("type") {
            None => {
                return Err(FrameError::new(
                    ErrorCode::MissingField,
                    "missing field `type`",
                ));
            }
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => {
                return Err(FrameError::new(
                    ErrorCode::BadField,
                    "`type` must be a string",
                ));
            }
        };
        Ok(match kind {
            "join" => ClientFrame::Join,
            "send" => ClientFrame::Send {
                text: fields.text("text")?,
            },
            "delete" => ClientFrame::Delete {
                id: fields.id("id")?,
            },
            "timeout" => ClientFrame::Timeout {
                user: fields.user("user")?,
                seconds: fields.uint("seconds", 1, MAX_TIMEOUT_SECS)?,
                reason: fields.reason()?,
            },
            "ban" => ClientFrame::Ban {
                user: fields.user("user")?,
                reason: fields.reason()?,
            },
            "unban" => ClientFrame::Unban {
                user: fields.user("user")?,
            },
            "clear" => ClientFrame::Clear,
            "slow" => ClientFrame::Slow {
                seconds: fields.uint("seconds", 0, MAX_SLOW_SECS)?,
            },
            "mode" => ClientFrame::Mode {
                registered_only: fields.boolean("registered_only")?,
            },
            "report" => ClientFrame::Report {
                id: fields.id("id")?,
                reason: fields.reason()?,
            },
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(FrameError::new(
                    ErrorCode::UnknownType,
                    format!("unknown frame type `{shown}`"),
                ));
            }
        })
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ClientFrame always serializes")
    }
}

/// What a `batch` frame adds around the frames it carries.
pub const BATCH_OVERHEAD: usize = BATCH_HEAD.len() + BATCH_TAIL.len();
const BATCH_HEAD: &str = r#"{"type":"batch","frames":["#;
const BATCH_TAIL: &str = "]}";

/// One data-channel message carrying server frames in order: a single
/// frame as itself, several as `{"type":"batch","frames":[…]}` (the frames
/// as JSON objects, unchanged). The server coalesces what it has for a
/// member into one message this way; a client handles each frame of a
/// batch as if it had come alone. The caller keeps the result within
/// [`MAX_FRAME_BYTES`]: [`batch_len`] is its length.
pub fn batch<S: AsRef<str>>(frames: &[S]) -> String {
    if let [one] = frames {
        return one.as_ref().to_owned();
    }
    let mut out = String::with_capacity(batch_len(frames.iter().map(|f| f.as_ref().len())));
    out.push_str(BATCH_HEAD);
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(f.as_ref());
    }
    out.push_str(BATCH_TAIL);
    out
}

/// The length of [`batch`] of frames of these lengths.
pub fn batch_len(lens: impl IntoIterator<Item = usize>) -> usize {
    let (n, sum) = lens
        .into_iter()
        .fold((0usize, 0usize), |(n, sum), l| (n + 1, sum + l));
    match n {
        0 => BATCH_OVERHEAD,
        1 => sum,
        // The frames and the commas between them.
        _ => BATCH_OVERHEAD + sum + n - 1,
    }
}

/// A server message for a client that asked for [`DEFLATE_PROTOCOL`]: its
/// text as raw DEFLATE, or `None` when it goes as text (shorter than
/// [`DEFLATE_FROM`], or not smaller compressed).
pub fn deflate(text: &str) -> Option<Vec<u8>> {
    if text.len() < DEFLATE_FROM {
        return None;
    }
    // Level 1: chat's JSON repeats its keys and names, which the fastest
    // level already finds; higher levels cost several times the CPU for a
    // few percent.
    let packed = COMPRESSOR.with_borrow_mut(|c| compress(c, text.as_bytes()))?;
    (packed.len() < text.len()).then_some(packed)
}

use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, create_comp_flags_from_zip_params,
};

thread_local! {
    /// The compressor [`deflate`] reuses on this thread: a new one zeroes
    /// and frees its ~300 KB of tables on every message.
    static COMPRESSOR: std::cell::RefCell<Box<CompressorOxide>> =
        // Level 1, raw DEFLATE (no zlib header: window bits 0).
        std::cell::RefCell::new(Box::new(CompressorOxide::new(
            create_comp_flags_from_zip_params(1, 0, 0),
        )));
}

/// `input` as one raw DEFLATE stream, with `c` reset first (`None` only if
/// miniz refused its parameters).
fn compress(c: &mut CompressorOxide, mut input: &[u8]) -> Option<Vec<u8>> {
    c.reset();
    let mut out = vec![0; (input.len() / 2).max(64)];
    let mut at = 0;
    loop {
        let (status, read, wrote) =
            miniz_oxide::deflate::core::compress(c, input, &mut out[at..], TDEFLFlush::Finish);
        at += wrote;
        match status {
            TDEFLStatus::Done => {
                out.truncate(at);
                return Some(out);
            }
            TDEFLStatus::Okay => {
                input = &input[read.min(input.len())..];
                if out.len() - at < 64 {
                    out.resize(out.len() * 2, 0);
                }
            }
            // A bad parameter: sent as text instead.
            _ => return None,
        }
    }
}

/// A binary server message from a [`DEFLATE_PROTOCOL`] channel as its JSON
/// text; `None` when it is not raw DEFLATE of UTF-8 text within
/// [`MAX_INFLATED_BYTES`].
pub fn inflate(data: &[u8]) -> Option<String> {
    let text = miniz_oxide::inflate::decompress_to_vec_with_limit(data, MAX_INFLATED_BYTES).ok()?;
    String::from_utf8(text).ok()
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Only string keys and plain values: serialization cannot fail.
        serde_json::to_string(self).expect("a ServerFrame always serializes")
    }
}

/// Field accessors that turn each shape error into its code.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn required(&self, name: &str) -> Result<&Value, FrameError> {
        match self.0.get(name) {
            Some(Value::Null) | None => Err(FrameError::new(
                ErrorCode::MissingField,
                format!("missing field `{name}`"),
            )),
            Some(value) => Ok(value),
        }
    }

    fn string(&self, name: &str) -> Result<&str, FrameError> {
        self.required(name)?.as_str().ok_or_else(|| {
            FrameError::new(ErrorCode::BadField, format!("`{name}` must be a string"))
        })
    }

    fn text(&self, name: &str) -> Result<String, FrameError> {
        let text = self.string(name)?.trim();
        if text.is_empty() {
            return Err(FrameError::new(
                ErrorCode::EmptyText,
                "the message is empty",
            ));
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(FrameError::new(
                ErrorCode::TextTooLong,
                format!("the message is {chars} characters, the limit is {MAX_TEXT_CHARS}"),
            ));
        }
        Ok(text.to_owned())
    }

    fn user(&self, name: &str) -> Result<String, FrameError> {
        let user = self.string(name)?;
        if user.is_empty() || user.len() > MAX_USER_BYTES {
            return Err(FrameError::new(
                ErrorCode::BadField,
                format!("`{name}` must be a user id of 1 to {MAX_USER_BYTES} bytes"),
            ));
        }
        Ok(user.to_owned())
    }

    fn id(&self, name: &str) -> Result<u64, FrameError> {
        self.required(name)?.as_u64().ok_or_else(|| {
            FrameError::new(
                ErrorCode::BadField,
                format!("`{name}` must be a non-negative integer"),
            )
        })
    }

    fn uint(&self, name: &str, min: u64, max: u64) -> Result<u64, FrameError> {
        match self.required(name)?.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(FrameError::new(
                ErrorCode::BadField,
                format!("`{name}` must be an integer from {min} to {max}"),
            )),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, FrameError> {
        self.required(name)?.as_bool().ok_or_else(|| {
            FrameError::new(
                ErrorCode::BadField,
                format!("`{name}` must be true or false"),
            )
        })
    }

    /// `reason` is optional: absent, null and blank all mean none.
    fn reason(&self) -> Result<Option<String>, FrameError> {
        match self.0.get("reason") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(reason)) => {
                let reason = reason.trim();
                if reason.chars().count() > MAX_REASON_CHARS {
                    return Err(FrameError::new(
                        ErrorCode::BadField,
                        format!("`reason` is over {MAX_REASON_CHARS} characters"),
                    ));
                }
                Ok((!reason.is_empty()).then(|| reason.to_owned()))
            }
            Some(_) => Err(FrameError::new(
                ErrorCode::BadField,
                "`reason` must be a string",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_messages_deflate_to_what_inflates_back_and_small_ones_stay_text() {
        let one = ServerFrame::Deleted { id: 1 }.to_json();
        assert_eq!(deflate(&one), None, "a short frame goes as text");
        let frames: Vec<String> = (0..30)
            .map(|i| {
                format!(
                    r#"{{"type":"message","id":{i},"user":"u{i}","display_name":"Viewer {i}","role":"viewer","text":"hello number {i}","ts":17000000{i:05}}}"#
                )
            })
            .collect();
        let text = batch(&frames);
        let packed = deflate(&text).expect("a batch of messages compresses");
        assert!(
            packed.len() * 3 < text.len(),
            "{} -> {} bytes",
            text.len(),
            packed.len()
        );
        assert_eq!(inflate(&packed).as_deref(), Some(text.as_str()));
        assert_eq!(inflate(b"not deflate at all \xff"), None);
        // Past the bound: refused, not inflated without limit.
        let huge = miniz_oxide::deflate::compress_to_vec(&vec![b'a'; MAX_INFLATED_BYTES + 1], 1);
        assert_eq!(inflate(&huge), None);
        // The thread's compressor is reused: each message after another, of
        // any size (a long one needs more than the first guess of output),
        // is whole and alone.
        let long: String = (0..2000).map(|i| format!("{}", i * 7919 % 10007)).collect();
        let long = format!(r#"{{"type":"notice","text":"{long}"}}"#);
        for t in [&text, &long, &text, &batch(&frames[..5])] {
            let packed = deflate(t).expect("compresses");
            assert_eq!(inflate(&packed).as_deref(), Some(t.as_str()));
            assert_eq!(
                packed,
                miniz_oxide::deflate::compress_to_vec(t.as_bytes(), 1),
                "as a fresh compressor makes it"
            );
        }
    }

    #[test]
    fn batches_carry_frames_unchanged_and_one_frame_goes_alone() {
        let a = ServerFrame::Deleted { id: 1 }.to_json();
        let b = ServerFrame::Cleared.to_json();
        assert_eq!(batch(&[&a]), a);
        let both = batch(&[&a, &b]);
        assert_eq!(both.len(), batch_len([a.len(), b.len()]));
        let v: Value = serde_json::from_str(&both).expect("json");
        assert_eq!(v["type"], "batch");
        let frames = v["frames"].as_array().expect("frames");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], serde_json::from_str::<Value>(&a).expect("json"));
        assert_eq!(frames[1]["type"], "cleared");
    }

    use super::*;

    fn code(binary: bool, data: &[u8]) -> ErrorCode {
        match ClientFrame::parse(binary, data) {
            Err(e) => e.code,
            Ok(frame) => panic!("parsed {frame:?}"),
        }
    }

    #[test]
    fn parses_every_client_frame() {
        let cases = [
            (
                r#"{"type":"send","text":"  hi  "}"#,
                ClientFrame::Send { text: "hi".into() },
            ),
            (r#"{"type":"delete","id":7}"#, ClientFrame::Delete { id: 7 }),
            (
                r#"{"type":"timeout","user":"u1","seconds":60,"reason":"spam"}"#,
                ClientFrame::Timeout {
                    user: "u1".into(),
                    seconds: 60,
                    reason: Some("spam".into()),
                },
            ),
            (
                r#"{"type":"ban","user":"u1"}"#,
                ClientFrame::Ban {
                    user: "u1".into(),
                    reason: None,
                },
            ),
            (
                r#"{"type":"unban","user":"u1"}"#,
                ClientFrame::Unban { user: "u1".into() },
            ),
            (r#"{"type":"join"}"#, ClientFrame::Join),
            (r#"{"type":"clear"}"#, ClientFrame::Clear),
            (
                r#"{"type":"slow","seconds":0}"#,
                ClientFrame::Slow { seconds: 0 },
            ),
            (
                r#"{"type":"mode","registered_only":true}"#,
                ClientFrame::Mode {
                    registered_only: true,
                },
            ),
            (
                r#"{"type":"report","id":3,"reason":" "}"#,
                ClientFrame::Report {
                    id: 3,
                    reason: None,
                },
            ),
        ];
        for (json, want) in cases {
            let got = ClientFrame::parse(false, json.as_bytes()).unwrap();
            assert_eq!(got, want, "{json}");
            // What a Rust client serializes, the server parses back.
            assert_eq!(
                ClientFrame::parse(false, got.to_json().as_bytes()).unwrap(),
                got
            );
        }
    }

    #[test]
    fn each_bad_input_has_its_code() {
        let big = format!(
            r#"{{"type":"send","text":"{}"}}"#,
            "a".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(code(false, big.as_bytes()), ErrorCode::TooLarge);
        assert_eq!(code(true, br#"{"type":"clear"}"#), ErrorCode::Binary);
        assert_eq!(code(false, b"\xff\xfe{}"), ErrorCode::NotUtf8);
        assert_eq!(code(false, b"{\"type\":"), ErrorCode::NotJson);
        assert_eq!(code(false, b"[1,2]"), ErrorCode::NotObject);
        assert_eq!(code(false, br#"{"text":"hi"}"#), ErrorCode::MissingField);
        assert_eq!(code(false, br#"{"type":5}"#), ErrorCode::BadField);
        assert_eq!(code(false, br#"{"type":"shout"}"#), ErrorCode::UnknownType);
        assert_eq!(code(false, br#"{"type":"send"}"#), ErrorCode::MissingField);
        assert_eq!(
            code(false, br#"{"type":"send","text":3}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(false, br#"{"type":"delete","id":-1}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(false, br#"{"type":"timeout","user":"u","seconds":0}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(false, br#"{"type":"slow","seconds":3601}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(false, br#"{"type":"mode","registered_only":"yes"}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(false, br#"{"type":"ban","user":""}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(false, br#"{"type":"send","text":" \n "}"#),
            ErrorCode::EmptyText
        );
        let long = format!(
            r#"{{"type":"send","text":"{}"}}"#,
            "é".repeat(MAX_TEXT_CHARS + 1)
        );
        assert_eq!(code(false, long.as_bytes()), ErrorCode::TextTooLong);
        // 500 two-byte characters are 1000 bytes but within the limit.
        let ok = format!(
            r#"{{"type":"send","text":"{}"}}"#,
            "é".repeat(MAX_TEXT_CHARS)
        );
        assert!(ClientFrame::parse(false, ok.as_bytes()).is_ok());
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        use ErrorCode::*;
        for code in [
            TooLarge,
            Binary,
            NotUtf8,
            NotJson,
            NotObject,
            UnknownType,
            MissingField,
            BadField,
            EmptyText,
            TextTooLong,
            ReadOnly,
            RegisteredOnly,
            Forbidden,
            Banned,
            TimedOut,
            SlowMode,
            RateLimited,
            Filtered,
            LinksBlocked,
            NotFound,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn server_frames_have_the_documented_shape() {
        let error = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after: Some(3),
        };
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","code":"rate_limited","message":"slow down","retry_after":3}"#
        );
        let message = ServerFrame::Message(ChatMessage {
            id: 1,
            user: "u1".into(),
            display_name: "Ann".into(),
            role: Role::Viewer,
            text: "hi".into(),
            ts: 1000,
        });
        assert_eq!(
            message.to_json(),
            r#"{"type":"message","id":1,"user":"u1","display_name":"Ann","role":"viewer","text":"hi","ts":1000}"#
        );
        assert_eq!(ServerFrame::Cleared.to_json(), r#"{"type":"cleared"}"#);
        let back: ServerFrame = serde_json::from_str(&message.to_json()).unwrap();
        assert_eq!(back, message);
    }
}
