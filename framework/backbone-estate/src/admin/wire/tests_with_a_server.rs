//! The connection against local servers: TLS with a server that answers `ApiVersions` as a broker
//! would (certificates made per run: a CA and a server certificate for `localhost`; the CA file
//! honoured, a server whose certificate another CA signed refused at once), and the bounds on what
//! a server may make the client read or wait for.

use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Connection, Settings};
use crate::admin::AdminError;

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `cn`, signed by `issuer` (self-signed when `None`), a CA when `ca`.
fn certificate(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>, ca: bool) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(fastrand_serial()).unwrap().to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name())).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
    } else {
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None));
        b.append_extension(san.unwrap()).unwrap();
    }
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256()).unwrap();
    b.build()
}

fn fastrand_serial() -> u32 {
    let mut raw = [0u8; 4];
    openssl::rand::rand_bytes(&mut raw).unwrap();
    u32::from_be_bytes(raw) >> 1
}

/// An `ApiVersions` v3 answer to request `correlation`: no error, DescribeClientQuotas v0–1.
fn api_versions_answer(correlation: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&correlation.to_be_bytes()); // response header v0
    body.extend_from_slice(&0i16.to_be_bytes()); // error_code
    body.push(2); // compact array of 1
    body.extend_from_slice(&48i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(0); // the key's tagged fields
    body.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    body.push(0); // tagged fields
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// A TLS server on a free port with `cert`, answering one `ApiVersions`; returns its port.
async fn server(cert: &X509, key: &PKey<Private>, chain: &X509) -> u16 {
    let mut pem = cert.to_pem().unwrap();
    pem.extend_from_slice(&chain.to_pem().unwrap());
    let identity = native_tls::Identity::from_pkcs8(&pem, &key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let acceptor = tokio_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
        let size = tls.read_i32().await.unwrap();
        let mut request = vec![0u8; size as usize];
        tls.read_exact(&mut request).await.unwrap();
        let correlation = i32::from_be_bytes(request[4..8].try_into().unwrap());
        tls.write_all(&api_versions_answer(correlation)).await.unwrap();
        tls.flush().await.unwrap();
    });
    port
}

fn settings(port: u16, ca_file: &std::path::Path) -> Settings {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", format!("localhost:{port}"))
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", ca_file.display().to_string());
    Settings::from_client_config(&c, Duration::from_secs(10)).unwrap()
}

#[tokio::test]
async fn tls_with_the_ca_file_connects_and_an_untrusted_certificate_fails_fast() {
    let (ca_key, leaf_key, other_key) = (key(), key(), key());
    let ca = certificate("test CA", &ca_key, None, true);
    let leaf = certificate("localhost", &leaf_key, Some((&ca, &ca_key)), false);
    let other_ca = certificate("another CA", &other_key, None, true);
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, ca.to_pem().unwrap()).unwrap();
    std::fs::write(&other_file, other_ca.to_pem().unwrap()).unwrap();

    let port = server(&leaf, &leaf_key, &ca).await;
    let conn = Connection::open(&settings(port, &ca_file)).await.expect("trusted through the CA file");
    assert_eq!(conn.versions.get(&48), Some(&(0, 1)), "the broker's versions were read over TLS");

    let port = server(&leaf, &leaf_key, &ca).await;
    let started = Instant::now();
    let err = Connection::open(&settings(port, &other_file))
        .await
        .err()
        .expect("another CA's certificate is refused");
    assert!(matches!(&err, AdminError::Authentication { mechanism, .. } if mechanism == "TLS"), "{err:?}");
    assert!(!err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast: {:?}", started.elapsed());
}

fn plaintext(port: u16, timeout: Duration) -> Settings {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"));
    Settings::from_client_config(&c, timeout).unwrap()
}

/// A plaintext server that reads one request and answers with `answer` (never, for `None`).
async fn plain_server(answer: Option<Vec<u8>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let size = tcp.read_i32().await.unwrap();
        let mut request = vec![0u8; size as usize];
        tcp.read_exact(&mut request).await.unwrap();
        match answer {
            Some(a) => tcp.write_all(&a).await.unwrap(),
            None => std::future::pending().await,
        }
    });
    port
}

#[tokio::test]
async fn an_oversized_answer_is_refused_before_it_is_read() {
    let port = plain_server(Some(i32::MAX.to_be_bytes().to_vec())).await;
    let err = Connection::open(&plaintext(port, Duration::from_secs(10))).await.err().expect("refused");
    assert!(matches!(&err, AdminError::Protocol(m) if m.contains("at most")), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_retriable_timeout() {
    let port = plain_server(None).await;
    let started = Instant::now();
    let err = Connection::open(&plaintext(port, Duration::from_millis(300))).await.err().expect("times out");
    assert!(matches!(err, AdminError::Timeout { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(5));
}
