//! TLS on eventide: rustls (through `futures-rustls`, the `ring`
//! provider) over the loop's TCP, its I/O through `task::net::AsyncStream`
//! (`futures-io`), with a certificate made here by `rcgen`. On every
//! backend: the handshake, an echo of several messages (one of 100 KB,
//! several TLS records), `close_notify` both ways, and a peer that is
//! not TLS, or does not trust the certificate, getting an error rather
//! than a hang.

mod util;

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventide::Loop;
use eventide::net::ListenOptions;
use eventide::task::net;
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};

const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// block_on, bounded: a watchdog (unreferenced) fails a test that would
/// otherwise wait forever (a handshake that hangs must fail).
fn run<T: 'static>(lp: &mut Loop, f: impl std::future::Future<Output = T> + 'static) -> T {
    let watchdog = lp.set_timeout(Duration::from_secs(20), |_| {
        panic!("the test was still running after its time limit")
    });
    lp.unref_timer(watchdog);
    let out = lp.block_on(f).expect("block_on");
    lp.clear_timer(watchdog);
    out
}

/// A self-signed certificate for `localhost`: the server's config, and a
/// client config trusting it.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    // ring, named (not the process default: another crate of the build
    // may enable aws-lc too). rustls deprecates ring's provider only
    // because it lacks post-quantum key exchange, which this test does
    // not need.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

async fn write_all(w: &mut (impl AsyncWrite + Unpin), mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
}

async fn read_some(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, buf)).await
}

async fn read_exact(r: &mut (impl AsyncRead + Unpin), len: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = read_some(r, &mut out[at..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        at += n;
    }
    Ok(out)
}

async fn read_to_end(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = read_some(r, &mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

async fn close(w: &mut (impl AsyncWrite + Unpin)) -> io::Result<()> {
    poll_fn(|cx| Pin::new(&mut *w).poll_close(cx)).await
}

/// The messages of the echo: small ones, and one of 100 KB (a TLS
/// record carries at most 16 KiB of plaintext).
fn messages() -> Vec<Vec<u8>> {
    vec![
        b"hello".to_vec(),
        (0..100 * 1024).map(|i| (i * 31 % 251) as u8).collect(),
        vec![0x5a; 1],
        b"bye".to_vec(),
    ]
}

fn echo_handshake_and_close_notify(lp: &mut Loop) {
    let (server_config, client_config) = configs();
    let mut incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("addr");
    // The server: one connection; echo until the client's close_notify
    // (a read of 0: rustls reports a TCP end without close_notify as an
    // error), then its own close_notify and the end of the TCP stream.
    let server = lp.spawn_local(async move {
        let tcp = incoming.accept().await.expect("accept");
        let mut tls = TlsAcceptor::from(server_config)
            .accept(net::AsyncStream::new(tcp))
            .await
            .expect("server handshake");
        assert_eq!(
            tls.get_ref().1.server_name(),
            Some("localhost"),
            "the client's SNI"
        );
        let mut echoed = 0usize;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = read_some(&mut tls, &mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            write_all(&mut tls, &buf[..n]).await.expect("server write");
            echoed += n;
        }
        close(&mut tls).await.expect("server close_notify");
        echoed
    });
    let expected: usize = messages().iter().map(Vec::len).sum();
    let (sent, trailing) = run(lp, async move {
        let tcp = net::tcp_connect(addr).await.expect("connect");
        let domain = ServerName::try_from("localhost").expect("name");
        let mut tls = TlsConnector::from(client_config)
            .connect(domain, net::AsyncStream::new(tcp))
            .await
            .expect("client handshake");
        let protocol = tls.get_ref().1.protocol_version();
        assert_eq!(protocol, Some(rustls::ProtocolVersion::TLSv1_3));
        let mut sent = 0;
        for message in messages() {
            write_all(&mut tls, &message).await.expect("client write");
            let back = read_exact(&mut tls, message.len())
                .await
                .expect("client read");
            assert!(
                back == message,
                "the echo of {} bytes differs",
                message.len()
            );
            sent += message.len();
        }
        // close_notify: the server reads 0, answers with its own; the
        // client then reads 0 too (not UnexpectedEof: the end was TLS's).
        close(&mut tls).await.expect("client close_notify");
        let trailing = read_to_end(&mut tls).await.expect("a clean TLS end");
        (sent, trailing)
    });
    assert_eq!(sent, expected);
    assert!(
        trailing.is_empty(),
        "{} bytes after the echo",
        trailing.len()
    );
    let echoed = run(lp, server).expect("the server task");
    assert_eq!(echoed, expected);
    util::run_within(lp, Duration::from_secs(20));
}

/// A client that is not TLS: the server's handshake fails with a TLS
/// error (InvalidData), the client gets a fatal alert record (content
/// type 21) and the end of the stream; nothing waits forever.
fn garbage_from_the_client_is_a_tls_error(lp: &mut Loop) {
    let (server_config, _) = configs();
    let mut incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("addr");
    let server = lp.spawn_local(async move {
        let tcp = incoming.accept().await.expect("accept");
        TlsAcceptor::from(server_config)
            .accept(net::AsyncStream::new(tcp))
            .await
            .map(|_| ())
    });
    let answer = run(lp, async move {
        let tcp = net::tcp_connect(addr).await.expect("connect");
        let mut raw = net::AsyncStream::new(tcp);
        write_all(&mut raw, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        read_to_end(&mut raw).await
    });
    let error = run(lp, server)
        .expect("the server task")
        .expect_err("a handshake with an HTTP request");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    let answer = answer.expect("the client's read");
    assert!(
        answer.first() == Some(&21),
        "the client got {answer:?}, not an alert record"
    );
    util::run_within(lp, Duration::from_secs(20));
}

/// A server that is not TLS (it answers the ClientHello with text and
/// ends): the client's handshake fails with an error.
fn garbage_from_the_server_is_a_tls_error(lp: &mut Loop) {
    let (_, client_config) = configs();
    let mut incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("addr");
    let server = lp.spawn_local(async move {
        let tcp = incoming.accept().await.expect("accept");
        let mut raw = net::AsyncStream::new(tcp);
        let mut buf = [0u8; 1024];
        let n = read_some(&mut raw, &mut buf).await.expect("read");
        write_all(&mut raw, b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .expect("write");
        close(&mut raw).await.expect("end");
        buf[0] == 22 && n > 5 // a handshake record came
    });
    let result = run(lp, async move {
        let tcp = net::tcp_connect(addr).await.expect("connect");
        let domain = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(client_config)
            .connect(domain, net::AsyncStream::new(tcp))
            .await
            .map(|_| ())
    });
    let error = result.expect_err("a handshake with an HTTP server");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert!(run(lp, server).expect("the server task"), "no ClientHello");
    util::run_within(lp, Duration::from_secs(20));
}

/// A client that does not trust the server's certificate (another
/// self-signed one): its handshake fails with a certificate error, and
/// the server's fails too: with the client's alert, or, when the client's
/// ChangeCipherSpec was still queued in rustls, with the end of the
/// stream (futures-rustls makes one last-gasp write on a fatal error,
/// which then carries the ChangeCipherSpec and not the alert).
fn an_untrusted_certificate_fails_both_handshakes(lp: &mut Loop) {
    let (server_config, _) = configs();
    let (_, other_client) = configs();
    let mut incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("addr");
    let server = lp.spawn_local(async move {
        let tcp = incoming.accept().await.expect("accept");
        TlsAcceptor::from(server_config)
            .accept(net::AsyncStream::new(tcp))
            .await
            .map(|_| ())
    });
    let result = run(lp, async move {
        let tcp = net::tcp_connect(addr).await.expect("connect");
        let domain = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(other_client)
            .connect(domain, net::AsyncStream::new(tcp))
            .await
            .map(|_| ())
    });
    let error = result.expect_err("an unknown issuer");
    // Both certificates name the same subject, so rustls finds the
    // "issuer" and rejects its signature.
    assert!(
        error.to_string().starts_with("invalid peer certificate"),
        "the client's error: {error}"
    );
    let server_error = run(lp, server)
        .expect("the server task")
        .expect_err("the client's alert");
    let text = server_error.to_string();
    assert!(
        text.starts_with("received fatal alert")
            || server_error.kind() == io::ErrorKind::UnexpectedEof,
        "the server's error: {server_error}"
    );
    util::run_within(lp, Duration::from_secs(20));
}

on_every_backend!(
    echo_handshake_and_close_notify,
    garbage_from_the_client_is_a_tls_error,
    garbage_from_the_server_is_a_tls_error,
    an_untrusted_certificate_fails_both_handshakes,
);
