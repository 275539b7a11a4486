//! Listening sockets and accept loops.
//!
//! Every shard listens twice: on the main address, with `SO_REUSEPORT` so that the kernel
//! spreads new connections over the shards, and on its own port (main port + 1 + shard id),
//! without `SO_REUSEPORT`, so that shard-aware clients reach the owner of their keys directly
//! and a second server on the same ports fails to start instead of silently sharing them.
//!
//! Every listener sets `SO_REUSEADDR`, as Redis, nginx and Seastar do: after a crash or a stop
//! the old connections linger in `TIME_WAIT`/`FIN_WAIT_2` for up to a minute, and without it a
//! restarted server could not bind its ports until they are gone. `SO_REUSEADDR` never lets a
//! second server bind a port that a live one listens on (Linux refuses a bind onto a listening
//! socket unless both set `SO_REUSEPORT`, which only the shards' shared main port does).

pub mod conn_state;
pub mod connection;
pub mod frames;
pub mod order;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures::future::{Either, select};
use glommio::net::TcpListener;

use crate::counters;
use crate::error::Error;
use crate::shard::Shard;

/// Pause after an accept error (for example out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Binds shard `shard`'s two listeners. Must run on the shard's executor.
pub fn bind(
    shard: usize,
    main: SocketAddr,
    own: SocketAddr,
) -> Result<(TcpListener, TcpListener), Error> {
    let bind_err = |addr| {
        move |source| Error::Bind {
            shard,
            addr,
            source,
        }
    };
    let main_listener = listen_shared(main).map_err(bind_err(main))?;
    let own_listener = listen_exclusive(own).map_err(bind_err(own))?;
    Ok((main_listener, own_listener))
}

/// Connections the kernel queues for a listener before `accept` takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket on `addr` with `SO_REUSEADDR` (a restart binds at once, whatever
/// connections of the previous process still linger) and, if `shared_port`, `SO_REUSEPORT`.
pub fn listen_socket(
    addr: SocketAddr,
    shared_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if shared_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A glommio listener on `addr` that every shard binds (`SO_REUSEPORT`: the kernel spreads new
/// connections over them).
fn listen_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    Ok(into_glommio(listen_socket(addr, true)?))
}

/// A glommio listener on `addr` bound without `SO_REUSEPORT` (glommio's own `bind` sets it,
/// which would let another process share a port that is taken): fails if the port is in use.
pub fn listen_exclusive(addr: SocketAddr) -> std::io::Result<TcpListener> {
    Ok(into_glommio(listen_socket(addr, false)?))
}

/// A glommio listener over `listener`, which must already listen (glommio only accepts on it).
pub fn into_glommio(listener: std::net::TcpListener) -> TcpListener {
    // SAFETY: `into_raw_fd` hands over the socket, which nothing else owns from then on; the
    // glommio listener takes ownership and closes it when dropped.
    unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) }
}

/// Accepts connections until the shard stops, serving each in its own task.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, grace: Duration) {
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
                counters::incr(&shard.counters.connections_accepted_total);
                if shard.counters.connections_open.get() as usize
                    >= shard.limits.shard_connections_max
                {
                    counters::incr(&shard.counters.connections_rejected_total);
                    tracing::warn!(
                        shard = shard.id,
                        max = shard.limits.shard_connections_max,
                        "refusing a connection: the shard has the most connections it accepts"
                    );
                    drop(stream);
                    continue;
                }
                glommio::spawn_local(connection::serve(Rc::clone(&shard), stream, grace)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
