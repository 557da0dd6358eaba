//! The peer exchange over real HTTP on loopback: payloads fetched from whichever peer holds a
//! good copy, corrupted data refused and counted, nothing accepted from peers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use demeter_trainer::exchange::serve::{Exchange, ExchangeMetrics, serve};
use demeter_trainer::exchange::{PeerClient, ResultStore, router};
use prometheus::Registry;
use sha2::{Digest, Sha256};

/// The peers' header time-out here (clients use `HEADER_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

struct Peer {
    address: SocketAddr,
    exchange: Arc<Exchange>,
}

async fn peer() -> Peer {
    let registry = Registry::new();
    let metrics = ExchangeMetrics::register(&registry).unwrap();
    let exchange = Arc::new(Exchange {
        store: Arc::new(ResultStore::default()),
        registry,
        metrics,
        snapshot: Default::default(),
    });
    // A peer of a run at step 3: it keeps payloads of steps 0 to 4.
    exchange.store.follow(3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(exchange.clone());
    tokio::spawn(serve(listener, app, HEADER_TIMEOUT));
    Peer { address, exchange }
}

fn client() -> (PeerClient, ExchangeMetrics) {
    let metrics = ExchangeMetrics::register(&Registry::new()).unwrap();
    let client = PeerClient::new(metrics.clone(), Duration::from_secs(5)).unwrap();
    (client, metrics)
}

/// Bytes with a valid SHA-256 trailer, as a payload has.
fn payload(content: &[u8]) -> (Bytes, [u8; 32]) {
    let hash: [u8; 32] = Sha256::digest(content).into();
    ([content, &hash].concat().into(), hash)
}

/// Peers take nothing from each other: which payloads exist is the coordinator's to say (each
/// participant commits its hash there), so the exchange has no route that accepts a body. The
/// signed-commitment routes of earlier versions are gone, and a stranger's POSTs store nothing.
#[tokio::test]
async fn peers_accept_no_writes() {
    let peer = peer().await;
    let (bytes, hash) = payload(b"a result nobody committed");
    let http = reqwest::Client::new();
    for path in [
        "/v1/commitments".to_owned(),
        "/v1/commitments/5".to_owned(),
        format!("/v1/payloads/{}", hex::encode(hash)),
        "/v1/model".to_owned(),
    ] {
        let status = http
            .post(format!("http://{}{path}", peer.address))
            .body(bytes.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(matches!(status, 404 | 405), "POST {path}: {status}");
    }
    assert!(peer.exchange.store.payload(&hash).is_none());
}

#[tokio::test]
async fn payloads_come_from_any_peer_with_a_good_copy() {
    let (empty, corrupt, holder) = (peer().await, peer().await, peer().await);
    let (bytes, hash) = payload(b"a DeMo result");
    holder.exchange.store.insert_payload(3, hash, bytes.clone());
    let mut damaged = bytes.to_vec();
    damaged[0] ^= 1;
    corrupt
        .exchange
        .store
        .insert_payload(3, hash, damaged.into());

    let (client, metrics) = client();
    let fetched = client
        .fetch(
            &hash,
            &[empty.address, corrupt.address, holder.address],
            1024,
        )
        .await
        .unwrap();
    assert_eq!(fetched, bytes);
    let failed = |reason: &str| metrics.downloads_failed.with_label_values(&[reason]).get();
    assert_eq!((failed("status"), failed("hash_mismatch")), (1, 1));
    assert_eq!(metrics.bytes_down.get(), bytes.len() as u64);
    assert_eq!(holder.exchange.metrics.bytes_up.get(), bytes.len() as u64);

    // Only the corrupt copy, or more bytes than a payload may have: no payload, never a bad one.
    assert!(client.fetch(&hash, &[corrupt.address], 1024).await.is_err());
    assert!(client.fetch(&hash, &[holder.address], 8).await.is_err());
    assert!(failed("too_large") >= 1);
}

#[tokio::test]
async fn payloads_serve_single_ranges_and_metrics_are_text() {
    let holder = peer().await;
    let (bytes, hash) = payload(b"0123456789");
    holder.exchange.store.insert_payload(1, hash, bytes.clone());
    let url = format!(
        "http://{}/v1/payloads/{}",
        holder.address,
        hex::encode(hash)
    );
    let http = reqwest::Client::new();
    let response = http
        .get(&url)
        .header("Range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 2-5/{}", bytes.len())
    );
    assert_eq!(response.bytes().await.unwrap(), bytes.slice(2..=5));
    let response = http
        .get(&url)
        .header("Range", "bytes=999-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 416);
    let response = http
        .get(format!("http://{}/v1/payloads/not-hex", holder.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let text = http
        .get(format!("http://{}/metrics", holder.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("demeter_payloads_served_total 2"), "{text}");
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let peer = peer().await;
    let mut slow = tokio::net::TcpStream::connect(peer.address).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: peer\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open 10 s after its last byte");
    // Everyone else is still served.
    let metrics = reqwest::get(format!("http://{}/metrics", peer.address))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
}
