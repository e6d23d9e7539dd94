//! A TCP proxy for fault tests: forwards connections to a target until told to refuse new ones,
//! stall them (accept and never forward), or cut every open connection.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward to the target.
    Pass,
    /// Close new connections at once (and cut the open ones), like a server that went away.
    Refuse,
    /// Accept new connections and hold them open without forwarding a byte, like a hung server.
    Stall,
}

pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    cut: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(ProxyMode::Pass);
        let cut = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(listener, target, mode_rx, cut.clone()));
        Ok(Self {
            addr,
            mode,
            cut,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        let _ = self.mode.send(mode);
        if mode != ProxyMode::Pass {
            self.cut_connections();
        }
    }

    /// Closes every connection open now; new ones are handled by the mode.
    pub fn cut_connections(&self) {
        self.cut.notify_waiters();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut_connections();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    cut: Arc<Notify>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let current = *mode.borrow();
        let cut = cut.clone();
        match current {
            ProxyMode::Refuse => drop(inbound),
            ProxyMode::Stall => {
                tokio::spawn(async move {
                    cut.notified().await;
                    drop(inbound);
                });
            }
            ProxyMode::Pass => {
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        }
    }
}
