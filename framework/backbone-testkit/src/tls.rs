//! Certificates made per run, as PEM files: a CA ([`CertificateAuthority`]), a broker certificate for
//! `127.0.0.1`/`localhost`, and client certificates whose subject is `CN=<name>` (what mutual TLS
//! maps to the principal `User:<name>`). Keys are EC P-256, PKCS#8, unencrypted; what Kafka's `PEM`
//! key store and librdkafka both read.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

use crate::error::{Result, TestkitError};

/// A CA made for one run, which signs the broker's and the clients' certificates.
pub struct CertificateAuthority {
    key: PKey<Private>,
    cert: X509,
    ca_file: PathBuf,
    dir: PathBuf,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("ca_file", &self.ca_file).finish_non_exhaustive()
    }
}

/// A client certificate and its key, as PEM files (`KAFKA_SSL_CERTIFICATE_LOCATION`,
/// `KAFKA_SSL_KEY_LOCATION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate (subject `CN=<name>`).
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl CertificateAuthority {
    /// A new CA named `CN=<name>`, its certificate written to `<dir>/<name>.pem`.
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        let failed = |e: ErrorStack| openssl_error(&format!("making the CA {name}"), e);
        let key = new_key().map_err(failed)?;
        let mut b = builder(name, &key).map_err(failed)?;
        let issuer = subject(name).map_err(failed)?;
        b.set_issuer_name(&issuer).map_err(failed)?;
        b.append_extension(BasicConstraints::new().critical().ca().build().map_err(failed)?)
            .map_err(failed)?;
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().map_err(failed)?)
            .map_err(failed)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).map_err(failed)?;
        b.append_extension(ski).map_err(failed)?;
        b.sign(&key, MessageDigest::sha256()).map_err(failed)?;
        let cert = b.build();
        let ca_file = dir.join(format!("{name}.pem"));
        write(&ca_file, &cert.to_pem().map_err(failed)?)?;
        Ok(Self { key, cert, ca_file, dir: dir.to_owned() })
    }

    /// The CA's certificate (`KAFKA_SSL_CA_LOCATION`, a broker's trust store).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A broker certificate for `127.0.0.1` and `localhost`, written with its key as one PEM file
    /// (`<dir>/<name>.pem`, key first), the form Kafka's `ssl.keystore.type=PEM` reads.
    pub fn broker_keystore(&self, name: &str) -> Result<PathBuf> {
        let failed = |e: ErrorStack| openssl_error(&format!("making the broker certificate {name}"), e);
        let (key, cert) = self
            .issue(name, |b| {
                let san = SubjectAlternativeName::new()
                    .ip(&IpAddr::from([127, 0, 0, 1]).to_string())
                    .dns("localhost")
                    .build(&b.x509v3_context(Some(&self.cert), None))?;
                b.append_extension(san)?;
                b.append_extension(ExtendedKeyUsage::new().server_auth().client_auth().build()?)
            })
            .map_err(failed)?;
        let mut pem = key.private_key_to_pem_pkcs8().map_err(failed)?;
        pem.extend(cert.to_pem().map_err(failed)?);
        pem.extend(self.cert.to_pem().map_err(failed)?);
        let path = self.dir.join(format!("{name}.pem"));
        write(&path, &pem)?;
        Ok(path)
    }

    /// A client certificate with subject `CN=<name>` and its key, as `<dir>/<name>.crt.pem` and
    /// `<dir>/<name>.key.pem`.
    pub fn client_certificate(&self, name: &str) -> Result<ClientCertificate> {
        let failed = |e: ErrorStack| openssl_error(&format!("making the client certificate {name}"), e);
        let (key, cert) = self
            .issue(name, |b| b.append_extension(ExtendedKeyUsage::new().client_auth().build()?))
            .map_err(failed)?;
        let certificate = self.dir.join(format!("{name}.crt.pem"));
        let key_file = self.dir.join(format!("{name}.key.pem"));
        write(&certificate, &cert.to_pem().map_err(failed)?)?;
        write(&key_file, &key.private_key_to_pem_pkcs8().map_err(failed)?)?;
        Ok(ClientCertificate { certificate, key: key_file })
    }

    fn issue(
        &self,
        name: &str,
        extend: impl FnOnce(&mut X509Builder) -> std::result::Result<(), ErrorStack>,
    ) -> std::result::Result<(PKey<Private>, X509), ErrorStack> {
        let key = new_key()?;
        let mut b = builder(name, &key)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().key_agreement().build()?)?;
        let aki =
            AuthorityKeyIdentifier::new().keyid(false).build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        extend(&mut b)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok((key, b.build()))
    }
}

fn new_key() -> std::result::Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn subject(name: &str) -> std::result::Result<openssl::x509::X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_nid(Nid::COMMONNAME, name)?;
    Ok(n.build())
}

/// A version 3 certificate for `CN=<name>` with `key`, a random serial, valid from yesterday for 30 days.
fn builder(name: &str, key: &PKey<Private>) -> std::result::Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    let name = subject(name)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    let yesterday = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(86_400);
    let not_before = Asn1Time::from_unix(i64::try_from(yesterday).unwrap_or(0))?;
    b.set_not_before(&not_before)?;
    let not_after = Asn1Time::days_from_now(30)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

fn write(path: &Path, pem: &[u8]) -> Result<()> {
    std::fs::write(path, pem).map_err(TestkitError::io("writing a PEM file"))
}

fn openssl_error(what: &str, e: ErrorStack) -> TestkitError {
    TestkitError::Command { what: what.to_owned(), detail: e.to_string() }
}
