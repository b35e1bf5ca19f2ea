//! Serving a simulator on loopback, over HTTP or over HTTPS with a simulator's own CA.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use std::net::SocketAddr;

/// A running simulator server.
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    tls: bool,
    handle: ServerHandle,
}

impl Served {
    /// Binds `127.0.0.1:0` and serves `configure`'s routes on a background task, over TLS when
    /// `tls` is given.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start<F>(configure: F, tls: Option<rustls::ServerConfig>) -> std::io::Result<Self>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let server = HttpServer::new(move || App::new().configure(configure.clone()))
            .workers(1)
            // Without it Nagle holds the tail of a large answer until the client's delayed ACK
            // (about 40 ms).
            .tcp_nodelay(true)
            .disable_signals()
            .shutdown_timeout(1);
        let is_tls = tls.is_some();
        let server = match tls {
            Some(config) => server.bind_rustls_0_23(("127.0.0.1", 0), config)?,
            None => server.bind(("127.0.0.1", 0))?,
        };
        let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no address bound"))?;
        let running = server.run();
        let handle = running.handle();
        tokio::spawn(running);
        Ok(Self { addr, tls: is_tls, handle })
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// The bound address.
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}
