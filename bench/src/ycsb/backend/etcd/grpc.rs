//! gRPC unary calls over HTTP/2 ([`h2`]) on a glommio TCP stream, enough for etcd's `KV`
//! service.
//!
//! A call is one HTTP/2 stream, so any number of calls share a connection:
//!
//! ```text
//! request   HEADERS  :method POST, :scheme http, :path /etcdserverpb.KV/Put,
//!                    :authority HOST:PORT, content-type application/grpc, te trailers
//!           DATA     one length-prefixed message, END_STREAM
//! answer    HEADERS  :status 200, content-type application/grpc
//!           DATA     one length-prefixed message (in one or more DATA frames)
//!           HEADERS  (trailers) grpc-status 0, or a code and grpc-message; END_STREAM
//!   or, for an error without a message ("Trailers-Only"):
//!           HEADERS  :status 200, grpc-status, grpc-message; END_STREAM
//! ```
//!
//! A length-prefixed message:
//!
//! ```text
//! +------------------+--------------------------+-----------------+
//! | u8 compressed: 0 | u32 big-endian length N  | N message bytes |
//! +------------------+--------------------------+-----------------+
//! ```
//!
//! No compression is asked for (no `grpc-accept-encoding`), so a compressed answer is refused.
//! h2 needs tokio's I/O traits only, not its runtime: the socket is glommio's, adapted with
//! `tokio-util`'s `compat`, and the connection's future runs as a glommio local task.

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, HeaderMap, TE};
use http::{Method, Request, StatusCode, Uri};

/// Bytes before a message: the compressed flag and the length.
pub const FRAME_HEADER_BYTES: usize = 5;
/// Largest answer message accepted (64 MiB): far above what a scan of etcd's largest records
/// returns (etcd refuses requests over 1.5 MiB by default), and a bound on what one answer may
/// make the driver allocate.
pub const RESPONSE_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The HTTP/2 connection or stream failed.
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
    /// The server answered with a gRPC error.
    #[error("gRPC status {code} ({}): {message}", status_name(*.code))]
    Status {
        /// `grpc-status`.
        code: u32,
        /// `grpc-message`, percent-decoded.
        message: String,
    },
    /// The answer's message framing is wrong.
    #[error("gRPC answer: {0}")]
    Frame(#[from] FrameError),
    /// The answer is not gRPC (wrong HTTP status, content type, missing status).
    #[error("not a gRPC answer: {0}")]
    NotGrpc(String),
    /// The request is too large to frame (over 4 GiB).
    #[error("request message of {len} bytes does not fit gRPC's 32-bit length")]
    RequestTooLarge {
        /// Its length.
        len: usize,
    },
}

impl CallError {
    /// Whether the connection cannot carry further calls (as opposed to one call failing).
    pub fn is_connection_lost(&self) -> bool {
        match self {
            CallError::Http2(e) => e.is_io() || e.is_go_away(),
            _ => false,
        }
    }
}

/// gRPC's name of a status code.
pub fn status_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown code")
}

/// A length-prefixed message that is not what a unary answer must carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The compressed flag is set, but no compression was asked for.
    #[error("compressed message (flag {flag}), but the driver asked for none")]
    Compressed {
        /// The flag byte.
        flag: u8,
    },
    /// The declared length is over the limit.
    #[error("message of {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// [`RESPONSE_MESSAGE_BYTES_MAX`].
        max: usize,
    },
    /// Bytes after the message: a unary answer holds exactly one.
    #[error("{extra} bytes after the message (a unary answer holds one)")]
    Trailing {
        /// How many, at least.
        extra: usize,
    },
    /// The stream ended inside the prefix or the message.
    #[error("answer ended after {have} of {want} bytes")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes the prefix announced (or the prefix's 5).
        want: usize,
    },
    /// The stream ended without any message.
    #[error("no message in the answer")]
    Missing,
}

/// Appends one length-prefixed message, written by `encode`, to a new buffer.
pub fn encode_message(encode: impl FnOnce(&mut Vec<u8>)) -> Result<Bytes, CallError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    encode(&mut out);
    let len = out.len() - FRAME_HEADER_BYTES;
    let len32 = u32::try_from(len).map_err(|_| CallError::RequestTooLarge { len })?;
    out[1..FRAME_HEADER_BYTES].copy_from_slice(&len32.to_be_bytes());
    Ok(Bytes::from(out))
}

/// Gathers the one message of a unary answer from its DATA frames, however they are cut.
/// It allocates the message's declared length once, after checking it against the limit.
#[derive(Debug)]
pub struct MessageReader {
    prefix: [u8; FRAME_HEADER_BYTES],
    prefix_len: usize,
    message_len: usize,
    message: Vec<u8>,
    max_bytes: usize,
}

impl MessageReader {
    /// A reader refusing messages over `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        MessageReader {
            prefix: [0; FRAME_HEADER_BYTES],
            prefix_len: 0,
            message_len: 0,
            message: Vec::new(),
            max_bytes,
        }
    }

    /// Takes the next bytes of the answer.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), FrameError> {
        if self.prefix_len < FRAME_HEADER_BYTES {
            let n = chunk.len().min(FRAME_HEADER_BYTES - self.prefix_len);
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[..n]);
            self.prefix_len += n;
            chunk = &chunk[n..];
            if self.prefix_len < FRAME_HEADER_BYTES {
                return Ok(());
            }
            let flag = self.prefix[0];
            if flag != 0 {
                return Err(FrameError::Compressed { flag });
            }
            let mut len = [0u8; 4];
            len.copy_from_slice(&self.prefix[1..]);
            let len = u32::from_be_bytes(len) as usize;
            if len > self.max_bytes {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_bytes,
                });
            }
            self.message_len = len;
            self.message = Vec::with_capacity(len);
        }
        let room = self.message_len - self.message.len();
        if chunk.len() > room {
            return Err(FrameError::Trailing {
                extra: chunk.len() - room,
            });
        }
        self.message.extend_from_slice(chunk);
        Ok(())
    }

    /// The message, once the answer has ended.
    pub fn finish(self) -> Result<Vec<u8>, FrameError> {
        if self.prefix_len == 0 {
            return Err(FrameError::Missing);
        }
        if self.prefix_len < FRAME_HEADER_BYTES {
            return Err(FrameError::Truncated {
                have: self.prefix_len,
                want: FRAME_HEADER_BYTES,
            });
        }
        if self.message.len() < self.message_len {
            return Err(FrameError::Truncated {
                have: FRAME_HEADER_BYTES + self.message.len(),
                want: FRAME_HEADER_BYTES + self.message_len,
            });
        }
        Ok(self.message)
    }
}

/// `%XX` escapes of `grpc-message` decoded (gRPC percent-encodes it); anything else as is.
fn percent_decode(text: &[u8]) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' && i + 2 < text.len() {
            if let (Some(hi), Some(lo)) = (hex(text[i + 1]), hex(text[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the `grpc-status` in `headers`: `Ok(true)` for OK, `Ok(false)` when there is none,
/// the error it reports otherwise.
fn grpc_status(headers: &HeaderMap) -> Result<bool, CallError> {
    let Some(status) = headers.get("grpc-status") else {
        return Ok(false);
    };
    let code = std::str::from_utf8(status.as_bytes())
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| {
            CallError::NotGrpc(format!(
                "grpc-status {:?} is not a number",
                String::from_utf8_lossy(status.as_bytes())
            ))
        })?;
    if code == 0 {
        return Ok(true);
    }
    let message = headers
        .get("grpc-message")
        .map_or_else(String::new, |m| percent_decode(m.as_bytes()));
    Err(CallError::Status { code, message })
}

/// The URI of method `path` (`/package.Service/Method`) on the server at `authority`.
pub fn method_uri(authority: &str, path: &str) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
}

/// Makes one unary call of `method` with the length-prefixed `request` and returns the answer's
/// message.
pub async fn unary(
    sender: &SendRequest<Bytes>,
    method: &Uri,
    request: Bytes,
) -> Result<Vec<u8>, CallError> {
    let mut sender = sender.clone().ready().await?;
    let head = Request::builder()
        .method(Method::POST)
        .uri(method.clone())
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .body(())
        .map_err(|e| CallError::NotGrpc(format!("cannot build the request: {e}")))?;
    let (answer, mut body_out) = sender.send_request(head, false)?;
    body_out.send_data(request, true)?;
    let (head, mut body) = answer.await?.into_parts();
    if head.status != StatusCode::OK {
        // A gRPC status may still say why.
        grpc_status(&head.headers)?;
        return Err(CallError::NotGrpc(format!("HTTP status {}", head.status)));
    }
    // Trailers-Only: the status is in the headers and there is no message.
    if grpc_status(&head.headers)? {
        return Err(FrameError::Missing.into());
    }
    let content_type = head.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    if !content_type.is_some_and(|t| t.starts_with(b"application/grpc")) {
        return Err(CallError::NotGrpc(format!(
            "content-type {:?}",
            content_type.map(String::from_utf8_lossy)
        )));
    }
    let mut reader = MessageReader::new(RESPONSE_MESSAGE_BYTES_MAX);
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        // Give the window back at once: the bytes are copied out below.
        body.flow_control().release_capacity(chunk.len())?;
        reader.push(&chunk)?;
    }
    match body.trailers().await? {
        Some(trailers) if grpc_status(&trailers)? => Ok(reader.finish()?),
        _ => Err(CallError::NotGrpc(
            "the answer ended without grpc-status".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_prefixed_with_flag_and_big_endian_length() {
        let framed = encode_message(|out| out.extend_from_slice(b"abc")).unwrap();
        assert_eq!(&framed[..], b"\x00\x00\x00\x00\x03abc");
        let framed = encode_message(|out| out.extend_from_slice(&[7; 300])).unwrap();
        assert_eq!(&framed[..5], b"\x00\x00\x00\x01\x2c");
        assert_eq!(framed.len(), 305);
        let empty = encode_message(|_| {}).unwrap();
        assert_eq!(&empty[..], b"\x00\x00\x00\x00\x00");
    }

    #[test]
    fn a_message_is_read_however_its_bytes_are_cut() {
        let framed = b"\x00\x00\x00\x00\x06abcdef";
        for cut1 in 0..=framed.len() {
            for cut2 in cut1..=framed.len() {
                let mut r = MessageReader::new(100);
                r.push(&framed[..cut1]).unwrap();
                r.push(&framed[cut1..cut2]).unwrap();
                r.push(&framed[cut2..]).unwrap();
                assert_eq!(r.finish().unwrap(), b"abcdef", "cuts {cut1} {cut2}");
            }
        }
        let mut r = MessageReader::new(0);
        r.push(b"\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(r.finish().unwrap(), b"");
    }

    #[test]
    fn bad_frames_are_refused() {
        let read = |chunks: &[&[u8]], max: usize| {
            let mut r = MessageReader::new(max);
            for c in chunks {
                r.push(c)?;
            }
            r.finish()
        };
        assert_eq!(read(&[], 10), Err(FrameError::Missing));
        assert_eq!(
            read(&[b"\x00\x00"], 10),
            Err(FrameError::Truncated { have: 2, want: 5 })
        );
        assert_eq!(
            read(&[b"\x00\x00\x00\x00\x04ab"], 10),
            Err(FrameError::Truncated { have: 7, want: 9 })
        );
        assert_eq!(
            read(&[b"\x01\x00\x00\x00\x01a"], 10),
            Err(FrameError::Compressed { flag: 1 })
        );
        // Refused from the prefix alone, before anything is allocated for it.
        assert_eq!(
            read(&[b"\x00\xff\xff\xff\xff"], RESPONSE_MESSAGE_BYTES_MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: RESPONSE_MESSAGE_BYTES_MAX
            })
        );
        assert_eq!(
            read(&[b"\x00\x00\x00\x00\x01ab"], 10),
            Err(FrameError::Trailing { extra: 1 })
        );
        // A second message: a unary answer has one.
        assert_eq!(
            read(&[b"\x00\x00\x00\x00\x01a", b"\x00\x00\x00\x00\x00"], 10),
            Err(FrameError::Trailing { extra: 5 })
        );
    }

    #[test]
    fn grpc_status_and_message_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert!(!grpc_status(&h).unwrap());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_status(&h).unwrap());
        h.insert("grpc-status", "3".parse().unwrap());
        h.insert(
            "grpc-message",
            "etcdserver: request is too large%0A100%25".parse().unwrap(),
        );
        match grpc_status(&h) {
            Err(CallError::Status { code, message }) => {
                assert_eq!(code, 3);
                assert_eq!(message, "etcdserver: request is too large\n100%");
            }
            other => panic!("{other:?}"),
        }
        let text = grpc_status(&h).unwrap_err().to_string();
        assert!(text.contains("INVALID_ARGUMENT"), "{text}");
        h.insert("grpc-status", "x".parse().unwrap());
        assert!(matches!(grpc_status(&h), Err(CallError::NotGrpc(_))));
        // A lone or bad escape stays as it is.
        assert_eq!(percent_decode(b"50% %zz %4"), "50% %zz %4");
    }

    #[test]
    fn method_uris_carry_scheme_authority_and_path() {
        let uri = method_uri("127.0.0.1:2379", "/etcdserverpb.KV/Range").unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:2379/etcdserverpb.KV/Range"
        );
        assert!(method_uri("bad host:1", "/etcdserverpb.KV/Range").is_err());
    }
}
