//! RESP2, the Redis protocol, written by hand: commands are arrays of bulk strings
//! (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per argument); replies are one of
//!
//! ```text
//! +<text>\r\n            simple string       -<text>\r\n        error
//! :<integer>\r\n         integer             $<len>\r\n<bytes>\r\n   bulk ($-1\r\n: null)
//! *<n>\r\n<n replies>    array (*-1\r\n: null)
//! ```

use std::io::Write;

/// Largest bulk string or array accepted in a reply (512 MiB is Redis's own bulk limit).
pub const REPLY_BULK_BYTES_MAX: usize = 512 << 20;
/// Deepest nesting of arrays accepted in a reply.
const REPLY_DEPTH_MAX: usize = 8;

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(Vec<u8>),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Integer(i64),
    /// `$3 abc`, or `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`, or `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

/// Appends the command `args` to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A reply that breaks the protocol; the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Parses one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`, `Ok(None)` if
/// `buf` holds only part of a reply.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn parse_int(bytes: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(bytes))))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > REPLY_DEPTH_MAX {
        return Err(ProtocolError("arrays nested too deep".into()));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let line = &buf[at + 1..end];
    let next = end + 2;
    match tag {
        b'+' => Ok(Some((Reply::Simple(line.to_vec()), next - at))),
        b'-' => Ok(Some((
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            next - at,
        ))),
        b':' => Ok(Some((Reply::Integer(parse_int(line)?), next - at))),
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next - at)));
            }
            let len = len as usize;
            if len > REPLY_BULK_BYTES_MAX {
                return Err(ProtocolError(format!("bulk string of {len} bytes")));
            }
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            if &buf[next + len..next + len + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not followed by CRLF".into()));
            }
            Ok(Some((
                Reply::Bulk(Some(buf[next..next + len].to_vec())),
                next + len + 2 - at,
            )))
        }
        b'*' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next - at)));
            }
            let n = n as usize;
            if n > REPLY_BULK_BYTES_MAX {
                return Err(ProtocolError(format!("array of {n} elements")));
            }
            let mut items = Vec::with_capacity(n.min(1024));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((item, used)) => {
                        items.push(item);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos - at)))
        }
        other => Err(ProtocolError(format!(
            "unknown reply type byte {other:#04x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"HSET", b"user1", b"field0", b""]);
        assert_eq!(
            out,
            b"*4\r\n$4\r\nHSET\r\n$5\r\nuser1\r\n$6\r\nfield0\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn parses_every_reply_type() {
        let cases: Vec<(&[u8], Reply)> = vec![
            (b"+OK\r\n", Reply::Simple(b"OK".to_vec())),
            (b"-ERR wrong\r\n", Reply::Error("ERR wrong".into())),
            (b":-42\r\n", Reply::Integer(-42)),
            (b"$5\r\nab\r\nc\r\n", Reply::Bulk(Some(b"ab\r\nc".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (b"*0\r\n", Reply::Array(Some(vec![]))),
            (
                b"*2\r\n$1\r\na\r\n*1\r\n:7\r\n",
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"a".to_vec())),
                    Reply::Array(Some(vec![Reply::Integer(7)])),
                ])),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_reply(bytes).unwrap(),
                Some((want.clone(), bytes.len()))
            );
            // Every strict prefix is incomplete, never an error or a wrong reply.
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse_reply(&bytes[..cut]).unwrap(),
                    None,
                    "{want:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn parses_back_to_back_replies() {
        let buf = b":1\r\n+OK\r\n$-1\r\n";
        let (a, n1) = parse_reply(buf).unwrap().unwrap();
        let (b, n2) = parse_reply(&buf[n1..]).unwrap().unwrap();
        let (c, n3) = parse_reply(&buf[n1 + n2..]).unwrap().unwrap();
        assert_eq!(
            (a, b, c),
            (
                Reply::Integer(1),
                Reply::Simple(b"OK".to_vec()),
                Reply::Bulk(None)
            )
        );
        assert_eq!(n1 + n2 + n3, buf.len());
    }

    #[test]
    fn rejects_protocol_violations() {
        for bad in [&b"?x\r\n"[..], b":abc\r\n", b"$3\r\nabcXY", b"*x\r\n"] {
            assert!(
                parse_reply(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
