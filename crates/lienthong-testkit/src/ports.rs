//! Listening sockets the kit holds for a component's whole life, so a restarted node or
//! registry gets the very socket it had. A port released and bound again could be taken by any
//! other process in between; a held one never is. Each start gets a duplicate of the socket;
//! connections made while the component is stopped wait in the backlog for the next start, or
//! are closed at once by a [`Refuser`] where a stop must be seen as one.

use std::io;
use std::net::{SocketAddr, TcpListener};

use lienthong_node::{Listeners, NodeConfig};
use tokio::task::JoinHandle;

/// One held listening socket.
#[derive(Debug)]
pub(crate) struct HeldPort(TcpListener);

impl HeldPort {
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        TcpListener::bind(addr).map(Self)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("a bound socket has an address")
    }

    /// A duplicate of the socket for one run of a component.
    pub(crate) fn std(&self) -> io::Result<TcpListener> {
        let l = self.0.try_clone()?;
        l.set_nonblocking(true)?;
        Ok(l)
    }

    pub(crate) fn tokio(&self) -> io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::from_std(self.std()?)
    }
}

/// A node's held sockets: the consumer's HTTP and HTTPS listeners and the peer listener.
#[derive(Debug)]
pub(crate) struct NodePorts {
    http: Option<HeldPort>,
    https: Option<HeldPort>,
    peer: HeldPort,
}

impl NodePorts {
    pub(crate) fn bind(config: &NodeConfig) -> io::Result<Self> {
        let mut ports = Self { http: None, https: None, peer: HeldPort::bind(config.peer.listen)? };
        ports.follow(config)?;
        Ok(ports)
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer.addr()
    }

    /// Duplicates of the sockets for a start with `config`. A consumer listener `config` added
    /// since (e.g. HTTPS through `Topology::reconfigure`) is bound now; one it dropped is closed.
    pub(crate) fn listeners(&mut self, config: &NodeConfig) -> io::Result<Listeners> {
        self.follow(config)?;
        let dup = |p: &Option<HeldPort>| p.as_ref().map(HeldPort::std).transpose();
        Listeners::from_std(dup(&self.http)?, dup(&self.https)?, self.peer.std()?)
    }

    fn follow(&mut self, config: &NodeConfig) -> io::Result<()> {
        follow(&mut self.http, config.consumer.http)?;
        follow(&mut self.https, config.consumer.https)
    }
}

/// Keeps `held` as is where `wanted` names it (or any port), binds it where it is new or moved.
fn follow(held: &mut Option<HeldPort>, wanted: Option<SocketAddr>) -> io::Result<()> {
    match (held.as_ref(), wanted) {
        (_, None) => *held = None,
        (Some(p), Some(a)) if a.port() == 0 || a == p.addr() => {}
        (_, Some(a)) => *held = Some(HeldPort::bind(a)?),
    }
    Ok(())
}

/// Closes every connection made to a stopped component's held sockets at once, unanswered (a
/// closed port would refuse them), until [`Refuser::stop`].
#[derive(Debug)]
pub(crate) struct Refuser(Vec<JoinHandle<()>>);

impl Refuser {
    pub(crate) fn start(ports: &[&HeldPort]) -> io::Result<Self> {
        let mut tasks = Vec::new();
        for port in ports {
            let listener = port.tokio()?;
            tasks.push(tokio::spawn(async move {
                // Dropped unanswered: the client sees the connection closed before any reply.
                while let Ok((tcp, _)) = listener.accept().await {
                    drop(tcp);
                }
            }));
        }
        Ok(Self(tasks))
    }

    /// Ends the accept loops and waits until their duplicates of the sockets are closed.
    pub(crate) async fn stop(self) {
        for task in self.0 {
            task.abort();
            let _ = task.await;
        }
    }
}
