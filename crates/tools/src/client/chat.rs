//! The `chat` data channel of a WHIP or WHEP session (docs/chat.md): JSON
//! text frames, `send` out, `history`, `message`, `state`, `error` and the
//! rest in.
//!
//! [`ChatChannel::open`] creates the channel on a peer connection before its
//! offer, asking for compressed messages (the `deflate-raw` subprotocol, as
//! the web client does; binary messages are inflated), and runs two tasks: one turns received frames into
//! [`ChatFrames`], the other sends what [`ChatSender`] is given once the
//! channel is open (frames given earlier wait for it).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

/// The label of the chat data channel.
pub const CHAT_LABEL: &str = "chat";

/// Puts frames on the chat channel; clones share the channel.
#[derive(Clone, Debug)]
pub struct ChatSender {
    tx: mpsc::UnboundedSender<String>,
}

impl ChatSender {
    /// Sends `{"type":"send","text": text}`. Fails once the channel is gone.
    pub fn send_text(&self, text: &str) -> anyhow::Result<()> {
        self.send_frame(send_frame(text))
    }

    /// Sends one raw frame (a JSON object as text). Fails once the channel
    /// is gone.
    pub fn send_frame(&self, frame: String) -> anyhow::Result<()> {
        self.tx
            .send(frame)
            .map_err(|_| anyhow::anyhow!("the chat channel is closed"))
    }
}

/// The frames received on the chat channel, in order; frames that are not
/// JSON are skipped.
#[derive(Debug)]
pub struct ChatFrames {
    rx: mpsc::UnboundedReceiver<Value>,
}

impl ChatFrames {
    /// The next frame; `None` once the channel has closed.
    pub async fn recv(&mut self) -> Option<Value> {
        self.rx.recv().await
    }

    /// The next frame whose `type` is `kind`, skipping others, waiting at
    /// most `timeout`.
    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .with_context(|| format!("no chat {kind:?} frame within {timeout:?}"))?
                .context("the chat channel closed")?;
            if frame["type"] == kind {
                return Ok(frame);
            }
        }
    }

    /// The next `message` frame whose text is `text`, skipping others
    /// (one's own earlier messages, say), waiting at most `timeout`.
    pub async fn next_message(&mut self, text: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .next_of("message", left)
                .await
                .with_context(|| format!("no message {text:?}"))?;
            if m["text"] == text {
                return Ok(m);
            }
        }
    }
}

/// The chat channel of one session and its tasks.
pub(super) struct ChatChannel {
    sender: ChatSender,
    frames: Option<ChatFrames>,
    tasks: [JoinHandle<()>; 2],
}

impl ChatChannel {
    /// Creates the `chat` data channel on `pc` (call before the offer) and
    /// starts its tasks.
    pub(super) async fn open(pc: &dyn PeerConnection) -> anyhow::Result<ChatChannel> {
        let dc = pc
            .create_data_channel(
                CHAT_LABEL,
                Some(webrtc::data_channel::RTCDataChannelInit {
                    protocol: lumen_chat::protocol::DEFLATE_PROTOCOL.to_owned(),
                    ..Default::default()
                }),
            )
            .await
            .context("creating the chat data channel")?;
        let (open_tx, open_rx) = watch::channel(false);
        let (frames_tx, frames_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read(Arc::clone(&dc), open_tx, frames_tx));
        let writer = tokio::spawn(write(dc, open_rx, out_rx));
        Ok(ChatChannel {
            sender: ChatSender { tx: out_tx },
            frames: Some(ChatFrames { rx: frames_rx }),
            tasks: [reader, writer],
        })
    }

    pub(super) fn sender(&self) -> ChatSender {
        self.sender.clone()
    }

    /// The received frames; `None` after the first call.
    pub(super) fn take_frames(&mut self) -> Option<ChatFrames> {
        self.frames.take()
    }
}

impl Drop for ChatChannel {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A received message's JSON: binary ones are compressed (docs/chat.md).
fn text_of(is_string: bool, data: &[u8]) -> anyhow::Result<Value> {
    if is_string {
        return Ok(serde_json::from_slice(data)?);
    }
    let text =
        lumen_chat::protocol::inflate(data).context("a binary message that does not inflate")?;
    Ok(serde_json::from_str(&text)?)
}

async fn read(
    dc: Arc<dyn DataChannel>,
    open: watch::Sender<bool>,
    frames: mpsc::UnboundedSender<Value>,
) {
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                open.send_replace(true);
            }
            DataChannelEvent::OnMessage(msg) => match text_of(msg.is_string, &msg.data) {
                Ok(v) => {
                    for f in unbatch(v) {
                        // Nobody listening is fine: the frames are dropped.
                        let _ = frames.send(f);
                    }
                }
                Err(e) => tracing::debug!(%e, "a chat frame that is not JSON"),
            },
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    tracing::debug!("chat channel closed");
}

async fn write(
    dc: Arc<dyn DataChannel>,
    mut open: watch::Receiver<bool>,
    mut out: mpsc::UnboundedReceiver<String>,
) {
    if open.wait_for(|o| *o).await.is_err() {
        return;
    }
    while let Some(frame) = out.recv().await {
        if let Err(e) = dc.send_text(&frame).await {
            tracing::warn!(%e, "sending a chat frame");
            return;
        }
    }
}

/// `{"type":"send","text": text}`, escaped.
pub fn send_frame(text: &str) -> String {
    serde_json::json!({"type": "send", "text": text}).to_string()
}

/// The frames one data-channel message carries: the frames of a `batch`
/// in order, or the message itself (docs/chat.md).
pub fn unbatch(v: Value) -> Vec<Value> {
    match v {
        Value::Object(mut o) if o.get("type").and_then(Value::as_str) == Some("batch") => {
            match o.remove("frames") {
                Some(Value::Array(frames)) => frames,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

/// How a frame shows on a terminal: `Ok` lines for stdout, `Err` lines for
/// stderr, nothing for frames not worth a line.
pub(super) fn render(frame: &Value) -> Vec<Result<String, String>> {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    match frame["type"].as_str() {
        Some("message") => vec![Ok(render_message(frame))],
        Some("history") => frame["messages"]
            .as_array()
            .map(|ms| ms.iter().map(|m| Ok(render_message(m))).collect())
            .unwrap_or_default(),
        Some("error") => vec![Err(format!(
            "chat error: {}: {}",
            s(&frame["code"]),
            s(&frame["message"])
        ))],
        Some("notice") => vec![Ok(format!("* {}", s(&frame["text"])))],
        Some("deleted") => vec![Ok(format!("* message {} deleted", frame["id"]))],
        Some("cleared") => vec![Ok("* chat cleared".to_owned())],
        _ => Vec::new(),
    }
}

/// `[HH:MM:SS] name (role): text`, the time of day in UTC.
pub(super) fn render_message(m: &Value) -> String {
    let secs = m["ts"].as_u64().unwrap_or(0) / 1000 % 86_400;
    let name = m["display_name"]
        .as_str()
        .or_else(|| m["user"].as_str())
        .unwrap_or("?");
    format!(
        "[{:02}:{:02}:{:02}] {name} ({}): {}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        m["role"].as_str().unwrap_or("?"),
        m["text"].as_str().unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_frames_are_escaped_json() {
        let f = send_frame("say \"hi\"\n\\ ok");
        let v: Value = serde_json::from_str(&f).expect("json");
        assert_eq!(v["type"], "send");
        assert_eq!(v["text"], "say \"hi\"\n\\ ok");
    }

    #[test]
    fn messages_render_with_time_name_and_role() {
        let m = serde_json::json!({"type": "message", "id": 42, "user": "u_1",
            "display_name": "Ann", "role": "viewer", "text": "hello", "ts": 1_764_633_600_000u64 + 3_723_123});
        assert_eq!(
            render(&m),
            vec![Ok("[01:02:03] Ann (viewer): hello".to_owned())]
        );
        let h = serde_json::json!({"type": "history", "messages": [m, m]});
        assert_eq!(render(&h).len(), 2);
        let e = serde_json::json!({"type": "error", "code": "read_only", "message": "log in"});
        assert_eq!(
            render(&e),
            vec![Err("chat error: read_only: log in".to_owned())]
        );
        let st = serde_json::json!({"type": "state", "slow_mode": 0, "registered_only": false});
        assert!(render(&st).is_empty());
    }

    #[test]
    fn batches_come_apart_into_their_frames() {
        let m = serde_json::json!({"type": "message", "id": 1, "text": "hi"});
        let c = serde_json::json!({"type": "cleared"});
        let b = serde_json::json!({"type": "batch", "frames": [m, c]});
        assert_eq!(unbatch(b), vec![m.clone(), c]);
        assert_eq!(unbatch(m.clone()), vec![m]);
    }
}
