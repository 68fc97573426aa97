//! Binding a media socket: non-blocking, with buffers large enough for a
//! keyframe burst to many viewers.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Socket buffers of a media worker. The kernel default (~200 KiB) drops
/// datagrams when a keyframe burst for many viewers meets a busy worker; the
/// kernel caps the request at `net.core.{r,w}mem_max` silently.
pub const MEDIA_SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Binds a non-blocking UDP socket on `addr` with [`MEDIA_SOCKET_BUFFER`]
/// for sending and receiving (best effort: a smaller buffer still works).
/// Must be called inside a tokio runtime.
pub fn bind_media_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
