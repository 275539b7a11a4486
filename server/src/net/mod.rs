//! Listening sockets and accept loops.
//!
//! Every shard listens twice: on the main address, with `SO_REUSEPORT` so that the kernel
//! spreads new connections over the shards, and on its own port (main port + 1 + shard id),
//! without `SO_REUSEPORT`, so that shard-aware clients reach the owner of their keys directly
//! and a second server on the same ports fails to start instead of silently sharing them.

pub mod connection;

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
    let main_listener = TcpListener::bind(main).map_err(|e| bind_err(main)(e.into()))?;
    let own_listener = listen_exclusive(own).map_err(bind_err(own))?;
    Ok((main_listener, own_listener))
}

/// A glommio listener on `addr` bound without `SO_REUSEPORT` (glommio's own `bind` sets it,
/// which would let another process share a port that is taken): fails if the port is in use.
pub fn listen_exclusive(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: `into_raw_fd` hands over a bound, listening socket that nothing else owns; the
    // glommio listener takes ownership and closes it when dropped.
    Ok(unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) })
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
