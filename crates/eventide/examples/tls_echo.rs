//! A TLS echo on the loop: rustls (through `futures-rustls`, the `ring`
//! provider) over `task::net::AsyncStream`, server and client as two tasks
//! of one loop, with a self-signed certificate for `localhost` made at
//! start by `rcgen`.
//!
//! ```text
//! cargo run --release --example tls_echo
//! tls echo on 127.0.0.1:40423 (uring), TLSv1_3, TLS13_AES_256_GCM_SHA384
//! echoed "hello over TLS"
//! echoed 100000 bytes
//! the server echoed 100014 bytes, then close_notify both ways
//! ```
//!
//! rustls and rcgen are dev-dependencies of eventide: the library itself
//! does not depend on them.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use eventide::net::ListenOptions;
use eventide::task::net::{self, AsyncStream};
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};

async fn write_all(w: &mut (impl AsyncWrite + Unpin), mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, data)).await?;
        data = &data[n..];
    }
    poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
}

async fn read_some(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, buf)).await
}

async fn close(w: &mut (impl AsyncWrite + Unpin)) -> io::Result<()> {
    poll_fn(|cx| Pin::new(&mut *w).poll_close(cx)).await
}

/// The server's config and a client config trusting its certificate.
fn configs() -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), Box<dyn std::error::Error>> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    // ring, named: rustls deprecates its provider only for the lack of
    // post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    let mut roots = RootCertStore::empty();
    roots.add(cert)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server_config, client_config) = configs()?;
    let mut lp = eventide::Loop::new()?;
    let backend = lp.backend();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut incoming = net::tcp_listen(&mut lp, any, ListenOptions::default())?;
    let addr = incoming.local_addr().ok_or("no address")?;

    // The server: one connection, echoed until the client's close_notify.
    let server = lp.spawn_local(async move {
        let tcp = incoming.accept().await?;
        drop(incoming); // one connection: stop listening
        let mut tls = TlsAcceptor::from(server_config)
            .accept(AsyncStream::new(tcp))
            .await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut echoed = 0;
        loop {
            let n = read_some(&mut tls, &mut buf).await?;
            if n == 0 {
                break; // close_notify
            }
            write_all(&mut tls, &buf[..n]).await?;
            echoed += n;
        }
        close(&mut tls).await?;
        Ok::<usize, io::Error>(echoed)
    });

    lp.block_on(async move {
        let tcp = net::tcp_connect(addr).await?;
        let domain = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let mut tls = TlsConnector::from(client_config)
            .connect(domain, AsyncStream::new(tcp))
            .await?;
        let (_, session) = tls.get_ref();
        println!(
            "tls echo on {addr} ({backend}), {:?}, {:?}",
            session.protocol_version().ok_or("no protocol")?,
            session
                .negotiated_cipher_suite()
                .ok_or("no cipher suite")?
                .suite()
        );
        let big: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
        for message in [b"hello over TLS".to_vec(), big] {
            write_all(&mut tls, &message).await?;
            let mut back = vec![0u8; message.len()];
            let mut got = 0;
            while got < back.len() {
                let n = read_some(&mut tls, &mut back[got..]).await?;
                if n == 0 {
                    return Err("the server ended early".into());
                }
                got += n;
            }
            if back != message {
                return Err("the echo differs".into());
            }
            if message.len() < 100 {
                println!("echoed {:?}", String::from_utf8_lossy(&back));
            } else {
                println!("echoed {} bytes", back.len());
            }
        }
        close(&mut tls).await?;
        // The server's close_notify: a clean end of the TLS stream.
        let mut rest = [0u8; 64];
        if read_some(&mut tls, &mut rest).await? != 0 {
            return Err("bytes after the echo".into());
        }
        let echoed = server.await??;
        println!("the server echoed {echoed} bytes, then close_notify both ways");
        Ok::<(), Box<dyn std::error::Error>>(())
    })??;
    Ok(())
}
