//! Data channels: what a peer sends on them comes out as events
//! ([`SfuEvent::ChannelOpen`](crate::SfuEvent::ChannelOpen),
//! [`ChannelData`](crate::SfuEvent::ChannelData),
//! [`ChannelClose`](crate::SfuEvent::ChannelClose)), and what the
//! application sends goes in as a command, like media. What the messages
//! mean (chat) is decided beside the SFU, never inside it.

use str0m::RtcError;
use str0m::error::{ProtoError, SctpError};

use super::Sfu;
use crate::{ChannelId, PeerId, SessionError};

/// Bytes a peer's data channels may hold unsent (str0m's default, named
/// here because a message bigger than this can never be sent).
pub(super) const SEND_BUFFER: usize = 128 * 1024;

impl Sfu {
    /// Sends a message on one of a peer's data channels (as opened in
    /// [`SfuEvent::ChannelOpen`](crate::SfuEvent::ChannelOpen)): `binary`,
    /// or text (UTF-8, which the caller vouches for).
    ///
    /// Refused, sending nothing, with [`SessionError::UnknownPeer`] when the
    /// peer is not on this worker, [`SessionError::ChannelClosed`] when the
    /// channel is not open on it, [`SessionError::ChannelFull`] when its
    /// send buffer cannot take the message now, and
    /// [`SessionError::ChannelMessageTooLarge`] when it never could.
    pub fn send_channel(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        binary: bool,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        let mut ch = p.rtc.channel(channel).ok_or(SessionError::ChannelClosed)?;
        if data.len() > SEND_BUFFER {
            return Err(SessionError::ChannelMessageTooLarge);
        }
        match ch.write(binary, data) {
            Ok(true) => {}
            Ok(false) => return Err(SessionError::ChannelFull),
            Err(RtcError::Sctp(SctpError::Proto(ProtoError::ErrOutboundPacketTooLarge))) => {
                return Err(SessionError::ChannelMessageTooLarge);
            }
            // The channel or its association is closing under it.
            Err(_) => return Err(SessionError::ChannelClosed),
        }
        self.mark_dirty(peer);
        Ok(())
    }
}
