//! A fault-injecting TCP proxy for one direction of a peer link: a cluster node dials the
//! proxy (`--debug-peer-dial`), the proxy forwards to the peer. [`Proxy::set`] passes bytes,
//! or blackholes them (connections stay open, bytes vanish both ways: a partition the sender
//! cannot see), at once for the connections already open.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::Duration;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward them.
    Pass = 0,
    /// Read and drop them, in both directions.
    Blackhole = 1,
}

/// A running proxy; stops (and closes its connections) when dropped.
pub struct Proxy {
    /// Where to connect to reach the target through the proxy.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let addr = listener.local_addr().expect("the proxy's address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&stop));
        thread::spawn(move || accept_loop(listener, target, m, s));
        Proxy { addr, mode, stop }
    }

    /// Changes what the proxy does, for open and future connections.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                    // The target is down: the dialer sees a closed connection, as it would.
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (m, s) = (Arc::clone(&mode), Arc::clone(&stop));
                    thread::spawn(move || pump(from, to, m, s));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies `from` to `to` while passing; drops what it reads while blackholing.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<AtomicU8>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if mode.load(Ordering::SeqCst) == Mode::Pass as u8
                    && to.write_all(&buf[..n]).is_err()
                {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
