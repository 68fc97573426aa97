//! The chat side of the media loop (`--chat-rate`): the pacer's sends and
//! the viewers' channel events.

use std::time::Instant;

use str0m::Event;

use super::Driver;
use crate::client::micros_since_epoch;
use crate::load::chat::{CHAT_LABEL, Stamp, send_frame};

impl Driver {
    /// Sends the messages whose pacer slots are due. Every loop runs the
    /// whole schedule and sends for its own chatters, so the run's rate
    /// stays the one asked for however many loops share it.
    pub(super) fn fire_chat(&mut self, now: Instant) {
        let Some(pacer) = &mut self.pacer else {
            return;
        };
        let due: Vec<usize> = std::iter::from_fn(|| pacer.poll_due(now)).collect();
        let (plan, index) = (self.place.plan, self.place.index);
        for chatter in due.into_iter().filter(|c| plan.loop_of(*c) == index) {
            match self.chatter_slots.get(chatter).copied().flatten() {
                Some(i) => self.send_chat(i, now),
                None => self.chat.skipped += 1,
            }
        }
    }

    /// One stamped message from viewer `i`, if it is in the room.
    fn send_chat(&mut self, i: usize, now: Instant) {
        let v = &mut self.viewers[i];
        let target = match &mut v.chat {
            Some(c) if c.joined && !v.dead => c.channel.map(|ch| (c, ch)),
            _ => None,
        };
        let Some((c, channel)) = target else {
            self.chat.skipped += 1;
            return;
        };
        let stamp = Stamp {
            sent_us: micros_since_epoch(),
            viewer: v.id,
            n: c.next_n,
        };
        c.next_n += 1;
        let frame = send_frame(&stamp);
        match v
            .rtc
            .channel(channel)
            .map(|mut ch| ch.write(false, frame.as_bytes()))
        {
            Some(Ok(true)) => {
                c.sent += 1;
                self.chat.sent += 1;
                // The whole room, every loop's viewers in it.
                let shared = &self.place.shared;
                shared.tell_members(&mut self.pending, self.chat.members);
                self.chat.expected += shared.chat_members();
            }
            Some(Ok(false)) => self.chat.buffer_full += 1,
            Some(Err(_)) | None => self.chat.skipped += 1,
        }
        self.drain(i, now);
    }

    /// A data channel event of viewer `i`; only its chat channel counts.
    pub(super) fn channel_event(&mut self, i: usize, e: Event) {
        let Some(c) = &mut self.viewers[i].chat else {
            return;
        };
        match e {
            Event::ChannelOpen(id, label) if c.channel == Some(id) && label == CHAT_LABEL => {
                c.open = true;
            }
            Event::ChannelData(d) if c.channel == Some(d.id) => {
                let arrived = self.arrived_us.unwrap_or_else(micros_since_epoch);
                self.chat.on_frame(c, d.binary, &d.data, arrived);
            }
            Event::ChannelClose(id) if c.channel == Some(id) => {
                self.chat.closed += 1;
                self.chat.left(c);
            }
            _ => {}
        }
    }
}
