//! Receiving with UDP generic receive offload: a socket with `UDP_GRO` on
//! may hand over a train of datagrams from one sender (same size, the last
//! possibly shorter) in one read, with the segment size in a control
//! message. A server that sends with `UDP_SEGMENT` over loopback then costs
//! the generator one read per train instead of one per packet, and the
//! kernel does not cut the train into packets on the server's account.
//! What a viewer sees is the same datagrams: [`segments`] cuts them apart.

use std::io::{ErrorKind, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};

/// A read buffer big enough for any train (64 KiB, an IP datagram's limit).
pub const TRAIN_BUF: usize = 65_536;

/// Asks the kernel for trains on this socket, and for the time each read's
/// first datagram reached the socket (`SO_TIMESTAMPNS`, the wall clock);
/// returns whether it agreed to trains (kernels before 5.0 do not know
/// `UDP_GRO`: then every read is one datagram, which [`recv`] handles the
/// same way).
pub fn enable(socket: &impl AsFd) -> bool {
    let _ = setsockopt(socket, sockopt::ReceiveTimestampns, &true);
    setsockopt(socket, sockopt::UdpGroSegment, &true).is_ok()
}

/// One read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// Bytes read.
    pub len: usize,
    /// Who sent them.
    pub source: SocketAddr,
    /// The segment size when the kernel coalesced several datagrams.
    pub segment: Option<usize>,
    /// When the kernel received them, µs since the Unix epoch (`None`
    /// without `SO_TIMESTAMPNS`): the arrival at the viewer's host, before
    /// any queueing in this process.
    pub arrived_us: Option<u64>,
}

/// One read from `socket` into `buf`, with room for the control messages in
/// `cmsg` (from [`cmsg_buffer`]). A non-blocking socket with nothing queued
/// gives `ErrorKind::WouldBlock`.
pub fn recv(socket: &impl AsFd, buf: &mut [u8], cmsg: &mut [u8]) -> std::io::Result<Read> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_fd().as_raw_fd();
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(cmsg), MsgFlags::empty())
        .map_err(std::io::Error::from)?;
    let len = msg.bytes;
    let mut segment = None;
    let mut arrived_us = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::UdpGroSegments(size) if size > 0 => {
                    segment = Some(size as usize);
                }
                ControlMessageOwned::ScmTimestampns(t) => {
                    let us = t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1_000;
                    arrived_us = u64::try_from(us).ok();
                }
                _ => {}
            }
        }
    }
    let source = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "no source address"))?;
    Ok(Read {
        len,
        source,
        segment,
        arrived_us,
    })
}

/// Room for the `UDP_GRO` and `SO_TIMESTAMPNS` control messages.
pub fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(i32, nix::sys::time::TimeSpec)
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(SocketAddr::from((v6.ip(), v6.port())));
    }
    None
}

/// The datagrams of one read: cut at `segment` bytes when the kernel
/// coalesced a train, else the whole read.
pub fn segments(data: &[u8], segment: Option<usize>) -> impl Iterator<Item = &[u8]> {
    let size = segment.filter(|s| *s > 0).unwrap_or(data.len().max(1));
    data.chunks(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros_since_epoch() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    #[test]
    fn a_train_is_cut_into_its_datagrams() {
        let data: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = segments(&data, Some(4)).collect();
        assert_eq!(parts, [&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        let whole: Vec<&[u8]> = segments(&data, None).collect();
        assert_eq!(whole, [&data[..]]);
        assert_eq!(segments(&[], None).count(), 0);
    }

    /// A GSO train sent over loopback arrives as the datagrams it was made
    /// of, in order, whether or not the kernel coalesces it.
    #[test]
    fn loopback_trains_arrive_as_datagrams() {
        use nix::sys::socket::{ControlMessage, sendmsg};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = SockaddrStorage::from(rx.local_addr().unwrap());
        let mut payload = Vec::new();
        for i in 0..5u8 {
            payload.extend(std::iter::repeat_n(i, if i == 4 { 300 } else { 1000 }));
        }
        let seg: u16 = 1000;
        let before_us = micros_since_epoch();
        let sent = sendmsg(
            tx.as_raw_fd(),
            &[IoSlice::new(&payload)],
            &[ControlMessage::UdpGsoSegments(&seg)],
            MsgFlags::empty(),
            Some(&to),
        );
        if sent.is_err() {
            // No GSO in this kernel: nothing to check.
            eprintln!("UDP_SEGMENT refused: {sent:?}");
            return;
        }
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut buf = vec![0u8; TRAIN_BUF];
        let mut cmsg = cmsg_buffer();
        while got.len() < 5 {
            let r = recv(&rx, &mut buf, &mut cmsg).unwrap();
            assert_eq!(r.source, tx.local_addr().unwrap());
            // The kernel's receive time: after the send began, before
            // this read returned.
            let arrived = r.arrived_us.expect("SO_TIMESTAMPNS on loopback");
            assert!(
                (before_us..=micros_since_epoch()).contains(&arrived),
                "arrival {arrived} µs outside {before_us}..now"
            );
            got.extend(segments(&buf[..r.len], r.segment).map(<[u8]>::to_vec));
        }
        assert_eq!(got.len(), 5);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), if i == 4 { 300 } else { 1000 });
            assert!(d.iter().all(|b| *b == i as u8));
        }
    }
}
