//! Sinks of a stream (see `crate::sink`): mirrors on other workers (see
//! `crate::mirror`) and external sinks, attached and fed by the same code.
//! The origin's side attaches sinks and feeds them; the mirror's side
//! builds a Router from what its origin sends and detaches when its last
//! viewer leaves.

use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Rid};

use super::{Pending, Sfu};
use crate::mirror::{Origin, UNUSED_MIRROR_TTL};
use crate::router::{RouterId, TrackIn};
use crate::sink::{MediaPacket, Sink, SinkBody, SinkMessage, TrackDescription};
use crate::{CloseReason, Output, PeerId, SessionError, SfuEvent, SinkId};

impl Sfu {
    /// Attaches (or renews) a sink of the stream, whose publisher must be
    /// on this worker (refused with [`SessionError::NotLive`] otherwise).
    /// The messages for it come out of [`poll_output`](Sfu::poll_output) as
    /// [`Output::Sink`]: the stream's description, then (for a new sink)
    /// each layer's cached group of pictures, then live batches.
    ///
    /// Answers the attachment's generation, which the sink's
    /// [`SinkBody::Source`] messages carry and its
    /// [`SinkMessage::detach`] names.
    ///
    /// For [`SinkId::Worker`], the mirror on that worker serves viewers of
    /// its own; it must receive these messages before it takes their offers.
    /// A [`SinkId::External`] sink gets the same messages; it stays attached
    /// while the stream is offline (a `Source` without tracks) and gets its
    /// next publisher (a `Source` with `fresh` set) until it detaches.
    pub fn attach_sink(
        &mut self,
        now: Instant,
        stream: &str,
        sink: SinkId,
    ) -> Result<u64, SessionError> {
        self.advance(now);
        let not_live = || SessionError::NotLive(stream.to_string());
        let router_id = *self.router_names.get(stream).ok_or_else(not_live)?;
        let router = self.routers.get_mut(&router_id).ok_or_else(not_live)?;
        if router.publisher.is_none() {
            return Err(not_live());
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let new = match router.sinks.iter_mut().find(|s| s.id == sink) {
            Some(s) => {
                s.generation = generation;
                false
            }
            None => {
                router.sinks.push(Sink {
                    id: sink,
                    generation,
                });
                true
            }
        };
        self.out.push_back(Output::Sink {
            to: sink,
            message: SinkMessage {
                stream: stream.to_string(),
                body: SinkBody::Source {
                    generation,
                    tracks: router.describe(),
                    fresh: false,
                    live: router.publisher_connected,
                },
            },
        });
        if new {
            // The sink starts on these, as the origin's viewers would.
            let mut packets: Vec<MediaPacket> = Vec::new();
            for t in &router.tracks {
                for l in &t.layers {
                    if let Some(gop) = l.gop.fresh(now) {
                        packets.extend(gop.iter().cloned());
                    }
                }
            }
            if !packets.is_empty() {
                count_copies(&mut self.metrics, sink, packets.len() as u64);
                self.out.push_back(Output::Sink {
                    to: sink,
                    message: SinkMessage {
                        stream: stream.to_string(),
                        body: SinkBody::Packets(packets),
                    },
                });
            }
        }
        Ok(generation)
    }

    /// Takes a message produced for this worker as [`Output::Sink`] by
    /// another one; `from` names that worker ([`SinkId::Worker`]). Messages
    /// from one sender must arrive in the order they were produced.
    ///
    /// Both directions come in here: a stream's description and packets
    /// from its origin (this worker mirrors the stream), keyframe requests
    /// and detaches from a sink (this worker is the origin). From a
    /// [`SinkId::External`] sink only the latter two are taken, and the
    /// packets of layers it makes ([`SinkBody::Inject`]): nothing outside
    /// the SFU replaces a stream's publisher.
    pub fn handle_sink_message(&mut self, now: Instant, from: SinkId, message: SinkMessage) {
        self.advance(now);
        // A busy mirror may never see a timeout: sweep here too.
        self.sweep_mirrors(now);
        let SinkMessage { stream, body } = message;
        if matches!(from, SinkId::External(_))
            && matches!(body, SinkBody::Source { .. } | SinkBody::Packets(_))
        {
            return;
        }
        if matches!(from, SinkId::Worker(_)) && matches!(body, SinkBody::Inject(_)) {
            return;
        }
        if !matches!(body, SinkBody::Packets(_) | SinkBody::Inject(_)) {
            // Packets that came before this message go out under the
            // stream as it was.
            self.fan_out_all();
        }
        match body {
            SinkBody::Source {
                generation,
                tracks,
                fresh,
                live,
            } => self.mirror_source(now, from, &stream, generation, tracks, fresh, live),
            SinkBody::Packets(packets) => {
                let Some(&router_id) = self.router_names.get(&stream) else {
                    return;
                };
                let fed = self.routers.get(&router_id).is_some_and(|r| {
                    r.publisher.is_none()
                        && r.origin.is_some_and(|o| o.from == from && o.publishing)
                });
                if !fed {
                    return;
                }
                // Fanned out a chunk at a time by `poll_output`.
                self.pending_rtp
                    .extend(packets.into_iter().map(|p| Pending::Mirrored(router_id, p)));
            }
            SinkBody::Inject(packets) => self.inject(now, from, &stream, packets),
            SinkBody::Keyframe(rid) => {
                let Some(&router_id) = self.router_names.get(&stream) else {
                    return;
                };
                let attached = self
                    .routers
                    .get(&router_id)
                    .is_some_and(|r| r.sinks.iter().any(|s| s.id == from));
                if attached {
                    self.sink_wants_keyframe(router_id, rid);
                }
            }
            SinkBody::Detach { generation } => {
                let Some(&router_id) = self.router_names.get(&stream) else {
                    return;
                };
                let Some(router) = self.routers.get_mut(&router_id) else {
                    return;
                };
                // A detach that crossed a newer attach is stale.
                router
                    .sinks
                    .retain(|s| !(s.id == from && s.generation <= generation));
                if router.is_empty() {
                    self.router_names.remove(&stream);
                    self.routers.remove(&router_id);
                }
            }
        }
    }

    /// A sink asked for a keyframe of `rid`; `None` on a simulcast track
    /// (a sink that does not follow layers, after a gap) means every layer
    /// the publisher sends. Each request goes through its layer's throttle.
    fn sink_wants_keyframe(&mut self, router_id: RouterId, rid: Option<Rid>) {
        let layers: Vec<Option<Rid>> = match rid {
            Some(_) => vec![rid],
            None => self
                .routers
                .get(&router_id)
                .and_then(|r| r.video())
                .map(|t| {
                    t.layers
                        .iter()
                        .filter(|l| l.made_by.is_none())
                        .map(|l| l.rid)
                        .collect()
                })
                .unwrap_or_default(),
        };
        for r in layers {
            self.request_layer_keyframe(router_id, r, self.last_now);
        }
    }

    /// Origin side: packets of layers an attached external sink makes (a
    /// transcoder's rungs), queued for the fan-out like the publisher's.
    /// A packet that does not fit the stream's video is refused and
    /// counted; the first packet of a new rid makes its layer.
    fn inject(&mut self, now: Instant, from: SinkId, stream: &str, packets: Vec<MediaPacket>) {
        let n = packets.len() as u64;
        let Some(&router_id) = self.router_names.get(stream) else {
            self.metrics.sink_packets_refused += n;
            return;
        };
        let Some(router) = self.routers.get_mut(&router_id) else {
            self.metrics.sink_packets_refused += n;
            return;
        };
        let attached = router.sinks.iter().any(|s| s.id == from);
        if !attached || !router.publisher_connected {
            self.metrics.sink_packets_refused += n;
            return;
        }
        let sinks: Vec<SinkId> = router.sinks.iter().map(|s| s.id).collect();
        for mut p in packets {
            let fits = router
                .tracks
                .iter_mut()
                .find(|t| t.mid == p.mid)
                .is_some_and(|t| {
                    t.kind == MediaKind::Video
                        && p.payload.len() <= super::forward::MAX_FORWARDED_PAYLOAD
                        && t.params.iter().any(|x| x.pt() == p.pt)
                        && p.rid.is_some_and(|r| !t.rids.contains(&r))
                        && make_layer(t, p.rid, from, &sinks)
                });
            if !fits {
                self.metrics.sink_packets_refused += 1;
                continue;
            }
            // Its arrival here, as for a publisher's packet: the rate, the
            // cache and the forwarding delay count from now.
            p.at = now;
            self.metrics.sink_packets_injected += 1;
            self.pending_rtp.push_back(Pending::Injected(router_id, p));
        }
    }

    /// Mirror side: the origin's tracks changed, its publisher connected,
    /// or this worker was attached (again).
    #[allow(clippy::too_many_arguments)] // The fields of one message.
    fn mirror_source(
        &mut self,
        now: Instant,
        from: SinkId,
        stream: &str,
        generation: u64,
        tracks: Vec<TrackDescription>,
        fresh: bool,
        connected: bool,
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
                .is_some_and(|o| o.from == from && o.generation > generation)
            {
                return;
            }
        }
        let router_id = self.router_for(stream);
        let interval = self.config.keyframe_request_interval;
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let publishing = !tracks.is_empty();
        let since = match router.origin {
            Some(o) if o.generation == generation => o.since,
            _ => now,
        };
        let rebuild =
            publishing && (fresh || router.tracks.is_empty() || router.describe() != tracks);
        router.origin = Some(Origin {
            from,
            generation,
            publishing,
            live: publishing && connected,
            since,
        });
        if !publishing {
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

    /// Origin side: tells every sink of the stream what its publisher sends
    /// now (nothing: it went offline) and whether it is connected. `fresh`:
    /// a new publisher.
    pub(super) fn send_source(&mut self, router_id: RouterId, fresh: bool) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let tracks = if router.publisher.is_some() {
            router.describe()
        } else {
            Vec::new()
        };
        let live = router.live();
        for s in &router.sinks {
            self.out.push_back(Output::Sink {
                to: s.id,
                message: SinkMessage {
                    stream: router.name.clone(),
                    body: SinkBody::Source {
                        generation: s.generation,
                        tracks: tracks.clone(),
                        fresh,
                        live,
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
        self.out.push_back(Output::Sink {
            to: origin.from,
            message: SinkMessage {
                stream: router.name.clone(),
                body: SinkBody::Detach {
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

    /// Hands out the batches gathered during a fan-out.
    pub(super) fn flush_sinks(&mut self) {
        for (to, stream, packets) in self.sink_batches.drain(..) {
            self.out.push_back(Output::Sink {
                to,
                message: SinkMessage {
                    stream,
                    body: SinkBody::Packets(packets),
                },
            });
        }
    }
}

/// Queues a copy of a packet for a sink's next batch. A free function over
/// the fields it needs, so the caller can hold its Router meanwhile.
pub(super) fn copy_to_sink(
    batches: &mut Vec<(SinkId, String, Vec<MediaPacket>)>,
    metrics: &mut crate::Metrics,
    sink: SinkId,
    stream: &str,
    pkt: MediaPacket,
) {
    count_copies(metrics, sink, 1);
    match batches
        .iter_mut()
        .find(|(s, name, _)| *s == sink && name == stream)
    {
        Some((_, _, batch)) => batch.push(pkt),
        None => batches.push((sink, stream.to_string(), vec![pkt])),
    }
}

/// Whether layer `rid` of the track is made by `sink`: it already is, or
/// it is new and there is room for it, or the sink that made it detached
/// (then it is this one's). A layer the publisher sends, or another
/// attached sink makes, is not taken over.
fn make_layer(track: &mut TrackIn, rid: Option<Rid>, sink: SinkId, attached: &[SinkId]) -> bool {
    if let Some(l) = track.layers.iter_mut().find(|l| l.rid == rid) {
        return match l.made_by {
            Some(m) if m == sink => true,
            Some(m) if !attached.contains(&m) => {
                l.made_by = Some(sink);
                true
            }
            _ => false,
        };
    }
    // The publisher's own layer, before its first packet, would take the
    // first rid it sees: never let that be a sink's.
    if track.layers.iter().all(|l| l.ssrc.is_none()) {
        return false;
    }
    match track.layer_index(rid) {
        Some(i) => {
            track.layers[i].made_by = Some(sink);
            true
        }
        None => false,
    }
}

/// Counts packets handed to a sink, under the counter of its kind.
fn count_copies(metrics: &mut crate::Metrics, sink: SinkId, n: u64) {
    match sink {
        SinkId::Worker(_) => metrics.rtp_mirrored += n,
        SinkId::External(_) => metrics.rtp_to_sinks += n,
    }
}
