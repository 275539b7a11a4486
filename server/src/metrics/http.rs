//! The `/metrics` endpoint: a minimal HTTP/1.1 server on shard 0's executor.
//!
//! One request per connection (`Connection: close`): read the request head (at most
//! [`REQUEST_HEAD_BYTES_MAX`], within [`REQUEST_TIMEOUT`]), answer `GET /metrics` (any query
//! string) with every shard's snapshot rendered by [`super::exposition`], `404` for
//! other paths, `405` for other methods, `400` for anything that is not HTTP. At most
//! [`SCRAPES_IN_FLIGHT_MAX`] connections are served at once; more are answered `503`. The
//! request path of the key-value service is untouched: a scrape costs the shards one message
//! each on the cross-shard channels.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{Either, select};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::exposition;
use crate::shard::Shard;

/// Largest request head read.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// How long a client has to send its request head, and to take the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape connections served at once.
pub const SCRAPES_IN_FLIGHT_MAX: usize = 8;

/// Accepts scrape connections on `listener` until the shard stops.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let in_flight = Rc::new(Cell::new(0usize));
    loop {
        let accepted = {
            let accept = listener.accept();
            let stop = shard.stopping.wait();
            futures::pin_mut!(accept);
            match select(accept, stop).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(_) => return,
            }
        };
        match accepted {
            Ok(stream) => {
                let busy = in_flight.get() >= SCRAPES_IN_FLIGHT_MAX;
                in_flight.set(in_flight.get() + 1);
                let shard = Rc::clone(&shard);
                let in_flight = Rc::clone(&in_flight);
                glommio::spawn_local(async move {
                    let served = handle(&shard, stream, busy);
                    let timeout = glommio::timer::sleep(REQUEST_TIMEOUT);
                    futures::pin_mut!(served, timeout);
                    if let Either::Right(_) = select(served, timeout).await {
                        tracing::debug!("metrics: a scrape connection timed out");
                    }
                    in_flight.set(in_flight.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics`
    Metrics,
    /// A GET of another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request line.
    Bad,
}

/// Parses the request line of `head`.
pub fn parse(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

async fn handle(shard: &Rc<Shard>, mut stream: TcpStream, busy: bool) {
    let (status, content_type, body) = if busy {
        (
            "503 Service Unavailable",
            "text/plain",
            "too many scrapes at once\n".to_string(),
        )
    } else {
        match read_head(&mut stream).await {
            None => return,
            Some(head) => match parse(&head) {
                Request::Metrics => (
                    "200 OK",
                    exposition::CONTENT_TYPE,
                    exposition::render(&shard.gather_metrics().await),
                ),
                Request::NotFound => (
                    "404 Not Found",
                    "text/plain",
                    "corekv serves Prometheus metrics at /metrics\n".to_string(),
                ),
                Request::MethodNotAllowed => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET is served\n".to_string(),
                ),
                Request::Bad => ("400 Bad Request", "text/plain", "not HTTP\n".to_string()),
            },
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.flush().await?;
        stream.close().await
    };
    if let Err(e) = write.await {
        tracing::debug!(error = %e, "metrics: writing a reply failed");
    }
}

/// Reads until the blank line ending the request head; `None` if the client closed, sent too
/// much, or failed.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return (!head.is_empty()).then_some(head);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_classified() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse(b"\x00\x01garbage"), Request::Bad);
        assert_eq!(parse(b"GET /metrics SPDY/3\r\n\r\n"), Request::Bad);
    }
}
