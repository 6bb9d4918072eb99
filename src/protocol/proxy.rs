//! The PROXY protocol header (v1 text and v2 binary, as HAProxy specifies it), sent by load
//! balancers ahead of the client's bytes to say who the client really is. Pure: it looks at
//! buffered bytes and says "need more", "here is the header", or "not a valid header".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
/// Largest v2 payload accepted (addresses plus a little TLV room).
const V2_MAX_PAYLOAD: usize = 1024;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's real address.
    Client(SocketAddr),
    /// The balancer's own connection (health check) or an unknown family: use the TCP peer.
    Local,
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header")]
    Malformed,
}

/// Parses a header at the start of `buf`: `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Source)>, ProxyError> {
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    let common = buf.len().min(12);
    if buf[..common] == V2_SIGNATURE[..common] {
        return parse_v2(buf);
    }
    if b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
        return Ok(None);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(usize, Source)>, ProxyError> {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX { Err(ProxyError::Malformed) } else { Ok(None) };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed)?;
    let line = line.strip_suffix('\r').ok_or(ProxyError::Malformed)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Source::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyError::Malformed)?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed);
            }
            let port: u16 = sport.parse().map_err(|_| ProxyError::Malformed)?;
            Source::Client(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Malformed),
    };
    Ok(Some((end + 1, source)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(usize, Source)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version != 2 || command > 1 || len > V2_MAX_PAYLOAD {
        return Err(ProxyError::Malformed);
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let payload = &buf[16..16 + len];
    let total = 16 + len;
    if command == 0 {
        return Ok(Some((total, Source::Local)));
    }
    let source = match buf[13] >> 4 {
        // AF_INET: src addr, dst addr, src port, dst port.
        1 if payload.len() >= 12 => {
            let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            Source::Client(SocketAddr::new(ip.into(), u16::from_be_bytes([payload[8], payload[9]])))
        }
        2 if payload.len() >= 36 => {
            let octets: [u8; 16] = payload[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([payload[32], payload[33]]);
            Source::Client(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        1 | 2 => return Err(ProxyError::Malformed),
        // AF_UNSPEC or AF_UNIX: nothing usable about the client.
        _ => Source::Local,
    };
    Ok(Some((total, source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &[u8], chunk: usize) -> Result<(usize, Source), ProxyError> {
        let mut buf = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            if let Some(found) = parse(&buf)? {
                return Ok(found);
            }
        }
        Err(ProxyError::Missing)
    }

    #[test]
    fn v1_in_any_chunking() {
        let header = b"PROXY TCP4 203.0.113.9 192.0.2.1 51234 110\r\nUSER x\r\n";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(feed(header, chunk), Ok((44, Source::Client("203.0.113.9:51234".parse().unwrap()))));
        }
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 995\r\n";
        assert_eq!(feed(v6, 5), Ok((v6.len(), Source::Client("[2001:db8::1]:4000".parse().unwrap()))));
        assert_eq!(feed(b"PROXY UNKNOWN\r\n", 3), Ok((15, Source::Local)));
    }

    #[test]
    fn v2_in_any_chunking() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 7, 192, 0, 2, 1, 0x1f, 0x90, 0, 110]);
        header.extend_from_slice(b"\x16\x03\x01 tls hello follows");
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(feed(&header, chunk), Ok((28, Source::Client("198.51.100.7:8080".parse().unwrap()))));
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(feed(&local, 1), Ok((16, Source::Local)));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in
            [&b"USER alice\r\n"[..], b"\x16\x03\x01\x02\x00", b"PROXY TCP4 1.2.3.4\r\n", b"PROXY TCP4 ::1 ::1 1 2\r\n"]
        {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&[b'P'; 200][..]).is_err());
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert_eq!(parse(&v3), Err(ProxyError::Malformed));
        assert_eq!(parse(b"PROX"), Ok(None));
    }
}
