//! TLS and mTLS over real sockets on 127.0.0.1: handshakes with and without client
//! certificates, reloads, and start-up errors that name the bad file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::routing::get;
use batchgate_net::certs::DevCertFiles;
use batchgate_net::{
    client_config, install_crypto_provider, serve, ClientTlsFiles, DevCerts, ServerTls, TlsError,
    TlsFiles,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn certs(dir: &Path) -> DevCertFiles {
    DevCerts::generate(&[], "test-client")
        .expect("generate")
        .write(dir)
        .expect("write")
}

/// The server side of `files`, requiring client certificates from their CA if asked.
fn server_tls(files: &DevCertFiles, require_client_certificates: bool) -> ServerTls {
    ServerTls::load(TlsFiles {
        cert: files.server_cert.clone(),
        key: files.server_key.clone(),
        client_ca: require_client_certificates.then(|| files.ca_cert.clone()),
    })
    .expect("load")
}

async fn start(tls: ServerTls) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let router = axum::Router::new().route("/hello", get(|| async { "hello" }));
    tokio::spawn(serve(listener, router, Some(tls), stop.clone()));
    (addr, stop)
}

fn client(files: &ClientTlsFiles) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(files).expect("client config"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn hello(client: &reqwest::Client, addr: SocketAddr) -> Result<String, reqwest::Error> {
    client
        .get(format!("https://127.0.0.1:{}/hello", addr.port()))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

fn trusting(ca: &Path) -> ClientTlsFiles {
    ClientTlsFiles {
        ca: Some(ca.to_owned()),
        ..ClientTlsFiles::default()
    }
}

#[tokio::test]
async fn https_works_for_a_client_that_trusts_the_ca_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = certs(dir.path());
    let other = certs(&dir.path().join("other"));
    let tls = server_tls(&files, false);
    let (addr, stop) = start(tls).await;

    assert_eq!(
        hello(&client(&trusting(&files.ca_cert)), addr)
            .await
            .expect("https"),
        "hello"
    );
    let error = hello(&client(&trusting(&other.ca_cert)), addr)
        .await
        .expect_err("a client trusting another CA must refuse the server");
    assert!(error.is_connect(), "{error:?}");
    // Plain HTTP to a TLS port gets no answer.
    install_crypto_provider();
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(plain
        .get(format!("http://127.0.0.1:{}/hello", addr.port()))
        .send()
        .await
        .is_err());
    stop.cancel();
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_from_it_get_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = certs(dir.path());
    let other = certs(&dir.path().join("other"));
    let tls = server_tls(&files, true);
    let (addr, stop) = start(tls).await;

    let with_cert = ClientTlsFiles {
        ca: Some(files.ca_cert.clone()),
        cert: Some(files.client_cert.clone()),
        key: Some(files.client_key.clone()),
    };
    assert_eq!(
        hello(&client(&with_cert), addr).await.expect("mTLS"),
        "hello"
    );

    let without_cert = trusting(&files.ca_cert);
    assert!(
        hello(&client(&without_cert), addr).await.is_err(),
        "no client certificate must be refused"
    );
    let foreign_cert = ClientTlsFiles {
        ca: Some(files.ca_cert.clone()),
        cert: Some(other.client_cert.clone()),
        key: Some(other.client_key.clone()),
    };
    assert!(
        hello(&client(&foreign_cert), addr).await.is_err(),
        "a certificate from another CA must be refused"
    );
    stop.cancel();
}

#[tokio::test]
async fn new_files_are_picked_up_by_reload_and_by_the_watcher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = certs(dir.path());
    let tls = server_tls(&files, false);
    let (addr, stop) = start(tls.clone()).await;
    let old_ca = dir.path().join("old-ca.pem");
    std::fs::copy(&files.ca_cert, &old_ca).expect("copy");
    let old_client = client(&trusting(&old_ca));
    assert!(hello(&old_client, addr).await.is_ok());

    // New certificates from a new CA, written over the old files.
    certs(dir.path());
    tls.reload().expect("reload");
    let new_client = client(&trusting(&files.ca_cert));
    assert_eq!(hello(&new_client, addr).await.expect("new cert"), "hello");
    assert!(
        hello(&client(&trusting(&old_ca)), addr).await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file is refused and the configuration in use stays.
    std::fs::write(&files.server_cert, "not a certificate").expect("write");
    assert!(matches!(tls.reload(), Err(TlsError::Pem { .. })));
    assert!(hello(&client(&trusting(&files.ca_cert)), addr)
        .await
        .is_ok());

    // The watcher notices a change on disk by itself: poll (bounded) until the newest CA works.
    let reloader = tls.spawn_reloader(stop.clone());
    certs(dir.path());
    let newest = client(&trusting(&files.ca_cert));
    let mut served = false;
    for _ in 0..100 {
        if hello(&newest, addr).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the watcher reloads within {:?}",
        batchgate_net::server_tls::RELOAD_POLL * 5
    );
    stop.cancel();
    reloader.await.expect("reloader stops");
}

#[test]
fn bad_files_are_named_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = certs(dir.path());
    let missing = dir.path().join("missing.pem");
    let load = |cert: &Path, key: &Path, ca: Option<&Path>| {
        ServerTls::load(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: ca.map(Path::to_owned),
        })
    };
    let error = load(&missing, &files.server_key, None).expect_err("missing cert");
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").expect("write");
    assert!(matches!(
        load(&garbage, &files.server_key, None),
        Err(TlsError::Pem { .. })
    ));
    assert!(matches!(
        load(&files.server_cert, &garbage, None),
        Err(TlsError::Pem { .. })
    ));
    // The client's key does not belong to the server's certificate.
    assert!(matches!(
        load(&files.server_cert, &files.client_key, None),
        Err(TlsError::Rustls(_))
    ));
    assert!(load(&files.server_cert, &files.server_key, Some(&garbage)).is_err());
    // Client side: a certificate without its key, or no CA at all.
    assert!(client_config(&ClientTlsFiles {
        ca: Some(files.ca_cert.clone()),
        cert: Some(files.client_cert),
        key: None,
    })
    .is_err());
    assert!(client_config(&ClientTlsFiles::default()).is_err());
}
