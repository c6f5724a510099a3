//! The clsact qdisc that netlink mode attaches its filters to.
//!
//! aya adds a clsact qdisc but can neither list the filters on it nor delete
//! it, so these two requests are made here over rtnetlink, with the
//! rust-netlink crates building and parsing the messages.
//!
//! connbal deletes the qdisc only when it created it and no filter at all
//! (ours or anyone's) is left on either side; the caller also holds the
//! interface's lock exclusively, so no other connbal is about to attach.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;

/// Replies are read until the kernel's DONE or ACK; this bounds a confused
/// exchange all the same.
const MAX_REPLY_DATAGRAMS: usize = 1024;

/// Whether any filter is attached to the clsact qdisc of interface `index`,
/// on ingress or egress (`tc filter show dev X ingress|egress`).
pub fn has_filters(index: u32) -> io::Result<bool> {
    for minor in [TcHandle::MIN_INGRESS, TcHandle::MIN_EGRESS] {
        let mut message = TcMessage::with_index(index_i32(index)?);
        message.header.parent = TcHandle {
            major: TcHandle::CLSACT.major,
            minor,
        };
        let mut filters = 0usize;
        exchange(
            RouteNetlinkMessage::GetTrafficFilter(message),
            NLM_F_REQUEST | NLM_F_DUMP,
            |reply| {
                if let RouteNetlinkMessage::NewTrafficFilter(_) = reply {
                    filters += 1;
                }
            },
        )?;
        if filters > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes the clsact qdisc of interface `index` (`tc qdisc del dev X
/// clsact`). Its filters, if any, go with it: check [`has_filters`] first.
pub fn delete(index: u32) -> io::Result<()> {
    let mut message = TcMessage::with_index(index_i32(index)?);
    message.header.parent = TcHandle::CLSACT;
    message.header.handle = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: 0,
    };
    message.attributes.push(TcAttribute::Kind("clsact".into()));
    exchange(
        RouteNetlinkMessage::DelQueueDiscipline(message),
        NLM_F_REQUEST | NLM_F_ACK,
        |_| {},
    )
}

fn index_i32(index: u32) -> io::Result<i32> {
    i32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Sends one request and hands each reply message to `on_reply`, until the
/// dump's DONE or the request's ACK; a NACK becomes its errno.
fn exchange(
    request: RouteNetlinkMessage,
    flags: u16,
    mut on_reply: impl FnMut(RouteNetlinkMessage),
) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut buffer = vec![0; message.buffer_len()];
    message.serialize(&mut buffer);
    socket.send(&buffer, 0)?;

    for _ in 0..MAX_REPLY_DATAGRAMS {
        let (datagram, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < datagram.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(error) => {
                    return match error.code {
                        None => Ok(()),
                        Some(_) => Err(error.to_io()),
                    };
                }
                NetlinkPayload::InnerMessage(inner) => on_reply(inner),
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length.next_multiple_of(4);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "rtnetlink: no end to the reply",
    ))
}
