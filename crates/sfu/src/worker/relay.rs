//! Cross-worker fan-out (see `crate::relay`): the origin's and the
//! mirror's sides.

use std::time::{Duration, Instant};

use super::{Pending, Sfu};
use crate::relay::{
    Mirror, Origin, RelayBody, RelayMessage, RelayPacket, RelayTrack, UNUSED_MIRROR_TTL,
};
use crate::router::{RouterId, TrackIn};
use crate::{CloseReason, Output, PeerId, SessionError, SfuEvent};

impl Sfu {
    /// Origin side: starts (or renews) feeding worker `worker` with the
    /// stream's packets, so it can serve viewers of its own. Refused with
    /// [`SessionError::NotLive`] unless the stream's publisher is on this
    /// worker. The messages to hand over come out of
    /// [`poll_output`](Sfu::poll_output) as [`Output::Relay`]: the tracks,
    /// then (for a new mirror) each layer's cached group of pictures, then
    /// live packets.
    pub fn attach_mirror(
        &mut self,
        now: Instant,
        stream: &str,
        worker: usize,
    ) -> Result<(), SessionError> {
        self.advance(now);
        let not_live = || SessionError::NotLive(stream.to_string());
        let router_id = *self.router_names.get(stream).ok_or_else(not_live)?;
        let router = self.routers.get_mut(&router_id).ok_or_else(not_live)?;
        if router.publisher.is_none() {
            return Err(not_live());
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let new = match router.mirrors.iter_mut().find(|m| m.worker == worker) {
            Some(m) => {
                m.generation = generation;
                false
            }
            None => {
                router.mirrors.push(Mirror { worker, generation });
                true
            }
        };
        self.out.push_back(Output::Relay {
            to: worker,
            message: RelayMessage {
                stream: stream.to_string(),
                body: RelayBody::Source {
                    generation,
                    tracks: router.describe(),
                    fresh: false,
                },
            },
        });
        if new {
            // The mirror's viewers start on these, as the origin's would.
            let mut packets: Vec<RelayPacket> = Vec::new();
            for t in &router.tracks {
                for l in &t.layers {
                    if let Some(gop) = l.gop.fresh(now) {
                        packets.extend(gop.iter().cloned());
                    }
                }
            }
            if !packets.is_empty() {
                self.metrics.rtp_relayed += packets.len() as u64;
                self.out.push_back(Output::Relay {
                    to: worker,
                    message: RelayMessage {
                        stream: stream.to_string(),
                        body: RelayBody::Packets(packets),
                    },
                });
            }
        }
        Ok(())
    }

    /// Takes a message another worker's SFU produced for this one
    /// ([`Output::Relay`]); `from` is that worker's index. Messages from
    /// one worker must arrive in the order they were produced.
    pub fn handle_relay(&mut self, now: Instant, from: usize, message: RelayMessage) {
        self.advance(now);
        // A busy mirror may never see a timeout: sweep here too.
        self.sweep_mirrors(now);
        let RelayMessage { stream, body } = message;
        if !matches!(body, RelayBody::Packets(_)) {
            // Packets that came before this message go out under the
            // stream as it was.
            self.fan_out_all();
        }
        match body {
            RelayBody::Source {
                generation,
                tracks,
                fresh,
            } => self.mirror_source(now, from, &stream, generation, tracks, fresh),
            RelayBody::Packets(packets) => {
                let Some(&router_id) = self.router_names.get(&stream) else {
                    return;
                };
                let fed = self.routers.get(&router_id).is_some_and(|r| {
                    r.publisher.is_none() && r.origin.is_some_and(|o| o.worker == from && o.live)
                });
                if !fed {
                    return;
                }
                // Fanned out a chunk at a time by `poll_output`.
                self.pending_rtp
                    .extend(packets.into_iter().map(|p| Pending::Relayed(router_id, p)));
            }
            RelayBody::Keyframe(rid) => {
                let Some(&router_id) = self.router_names.get(&stream) else {
                    return;
                };
                let mirrored = self
                    .routers
                    .get(&router_id)
                    .is_some_and(|r| r.mirrors.iter().any(|m| m.worker == from));
                if mirrored {
                    self.request_layer_keyframe(router_id, rid, self.last_now);
                }
            }
            RelayBody::Detach { generation } => {
                let Some(&router_id) = self.router_names.get(&stream) else {
                    return;
                };
                let Some(router) = self.routers.get_mut(&router_id) else {
                    return;
                };
                // A detach that crossed a newer attach is stale.
                router
                    .mirrors
                    .retain(|m| !(m.worker == from && m.generation <= generation));
                if router.is_empty() {
                    self.router_names.remove(&stream);
                    self.routers.remove(&router_id);
                }
            }
        }
    }

    /// Mirror side: the origin's tracks changed, or this worker was
    /// attached (again).
    fn mirror_source(
        &mut self,
        now: Instant,
        from: usize,
        stream: &str,
        generation: u64,
        tracks: Vec<RelayTrack>,
        fresh: bool,
    ) {
        if let Some(r) = self
            .router_names
            .get(stream)
            .and_then(|id| self.routers.get(id))
        {
            if r.publisher.is_some() {
                // The stream is published here: no other worker feeds it.
                return;
            }
            if r.origin
                .is_some_and(|o| o.worker == from && o.generation > generation)
            {
                return;
            }
        }
        let router_id = self.router_for(stream);
        let interval = self.config.keyframe_request_interval;
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let live = !tracks.is_empty();
        let since = match router.origin {
            Some(o) if o.generation == generation => o.since,
            _ => now,
        };
        let rebuild = live && (fresh || router.tracks.is_empty() || router.describe() != tracks);
        router.origin = Some(Origin {
            worker: from,
            generation,
            live,
            since,
        });
        if !live {
            router.tracks.clear();
        } else if rebuild {
            router.tracks = tracks
                .iter()
                .map(|t| TrackIn::new(t.mid, t.kind, t.params.clone(), &t.rids, interval))
                .collect();
            for vid in self.rebind_viewers(router_id) {
                self.close_peer(vid, CloseReason::Incompatible);
            }
        }
        self.stream_updated(router_id);
    }

    /// The Consumers of a stream's viewers follow its (new) tracks; returns
    /// the viewers that can decode none of them.
    pub(super) fn rebind_viewers(&mut self, router_id: RouterId) -> Vec<PeerId> {
        let mut incompatible = Vec::new();
        let Some(router) = self.routers.get(&router_id) else {
            return incompatible;
        };
        for vid in &router.viewers {
            let Some(v) = self.peers.get_mut(vid) else {
                continue;
            };
            let mut any = false;
            for c in &mut v.consumers {
                if let Some(t) = router.tracks.iter().find(|t| t.kind == c.kind) {
                    any |= c.bind(&t.params);
                } else {
                    c.pt_map.clear();
                }
            }
            if !any {
                incompatible.push(*vid);
            }
        }
        incompatible
    }

    /// Origin side: tells every mirror of the stream what its publisher
    /// sends now (nothing: it went offline). `fresh`: a new publisher.
    pub(super) fn send_source(&mut self, router_id: RouterId, fresh: bool) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let tracks = if router.publisher.is_some() {
            router.describe()
        } else {
            Vec::new()
        };
        for m in &router.mirrors {
            self.out.push_back(Output::Relay {
                to: m.worker,
                message: RelayMessage {
                    stream: router.name.clone(),
                    body: RelayBody::Source {
                        generation: m.generation,
                        tracks: tracks.clone(),
                        fresh,
                    },
                },
            });
        }
    }

    /// Mirror side: no viewer left here; tell the origin and forget the
    /// stream.
    pub(super) fn detach(&mut self, router_id: RouterId) {
        let Some(router) = self.routers.remove(&router_id) else {
            return;
        };
        self.router_names.remove(&router.name);
        let Some(origin) = router.origin else {
            return;
        };
        self.out.push_back(Output::Relay {
            to: origin.worker,
            message: RelayMessage {
                stream: router.name.clone(),
                body: RelayBody::Detach {
                    generation: origin.generation,
                },
            },
        });
        // Nothing of the stream is left on this worker.
        let mut info = router.info();
        info.live = false;
        info.viewers = 0;
        info.layers.clear();
        self.out
            .push_back(Output::Event(SfuEvent::StreamUpdated(info)));
    }

    /// Mirror side: detaches mirrors whose viewer never came.
    pub(super) fn sweep_mirrors(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let unused: Vec<RouterId> = self
            .routers
            .iter()
            .filter(|(_, r)| {
                r.viewers.is_empty()
                    && r.origin.is_some_and(|o| {
                        now.saturating_duration_since(o.since) >= UNUSED_MIRROR_TTL
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            self.detach(id);
        }
    }

    /// Queues a packet for a mirroring worker's batch.
    pub(super) fn relay_packet(&mut self, worker: usize, stream: &str, pkt: RelayPacket) {
        self.metrics.rtp_relayed += 1;
        match self
            .relay_batches
            .iter_mut()
            .find(|(w, s, _)| *w == worker && s == stream)
        {
            Some((_, _, batch)) => batch.push(pkt),
            None => self
                .relay_batches
                .push((worker, stream.to_string(), vec![pkt])),
        }
    }

    /// Hands out the batches gathered during a fan-out.
    pub(super) fn flush_relay(&mut self) {
        for (to, stream, packets) in self.relay_batches.drain(..) {
            self.out.push_back(Output::Relay {
                to,
                message: RelayMessage {
                    stream,
                    body: RelayBody::Packets(packets),
                },
            });
        }
    }
}
