//! The client side of SCRAM (RFC 5802, with SHA-256 per RFC 7677 or SHA-512), as Kafka speaks it:
//! no channel binding (`n,,`), no authorization id. Cryptography from OpenSSL (`openssl`), which
//! the workspace already links for TLS; no maintained, openly licensed crate offers just the client
//! exchange.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use super::ScramMechanism;

/// Most PBKDF2 iterations accepted from a server (Kafka allows at most 16384): a hostile server
/// cannot make the client spin.
const MAX_ITERATIONS: u32 = 100_000;

/// One SCRAM exchange: [`client_first`](Self::client_first), then
/// [`client_final`](Self::client_final) with the server's first message, then
/// [`verify_server_final`](Self::verify_server_final).
pub(crate) struct ScramClient {
    digest: MessageDigest,
    username: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    /// What the server's final message must carry.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// An exchange for `username` with a fresh random nonce.
    pub(crate) fn new(mechanism: ScramMechanism, username: &str, password: &str) -> Self {
        let mut raw = [0u8; 24];
        openssl::rand::rand_bytes(&mut raw).expect("OpenSSL's random generator");
        Self::with_nonce(mechanism, username, password, &B64.encode(raw))
    }

    fn with_nonce(mechanism: ScramMechanism, username: &str, password: &str, nonce: &str) -> Self {
        let digest = match mechanism {
            ScramMechanism::Sha256 => MessageDigest::sha256(),
            ScramMechanism::Sha512 => MessageDigest::sha512(),
        };
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            digest,
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={name},r={nonce}"),
            server_signature: None,
        }
    }

    /// The client's first message.
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client's final message (with its proof), from the server's first message.
    pub(crate) fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| "the server's first SCRAM message is not UTF-8")?;
        let field = |name: char| {
            server_first.split(',').find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('=')))
        };
        if let Some(e) = field('e') {
            return Err(format!("the server refused {}: {e}", self.username));
        }
        let nonce = field('r').ok_or("no nonce in the server's first SCRAM message")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend the client's".into());
        }
        let salt = B64
            .decode(field('s').ok_or("no salt in the server's first SCRAM message")?)
            .map_err(|e| e.to_string())?;
        let iterations: u32 = field('i')
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| format!("iterations missing or over {MAX_ITERATIONS}"))?;

        let mut salted = vec![0u8; self.digest.size()];
        openssl::pkcs5::pbkdf2_hmac(
            self.password.as_bytes(),
            &salt,
            iterations as usize,
            self.digest,
            &mut salted,
        )
        .map_err(|e| e.to_string())?;
        let client_key = self.hmac(&salted, b"Client Key")?;
        let stored_key = openssl::hash::hash(self.digest, &client_key).map_err(|e| e.to_string())?;
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = self.hmac(&stored_key, auth_message.as_bytes())?;
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.hmac(&salted, b"Server Key")?;
        self.server_signature = Some(self.hmac(&server_key, auth_message.as_bytes())?);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message: it proves the server knows the credential.
    pub(crate) fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| "the server's final SCRAM message is not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused {}: {e}", self.username));
        }
        let v = text.split(',').find_map(|f| f.strip_prefix("v=")).ok_or("no verifier from the server")?;
        let v = B64.decode(v).map_err(|e| e.to_string())?;
        let expected = self.server_signature.as_deref().ok_or("the exchange is out of order")?;
        if v.len() == expected.len() && openssl::memcmp::eq(&v, expected) {
            Ok(())
        } else {
            Err("the server's signature is wrong: it does not know the credential".into())
        }
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        let key = PKey::hmac(key).map_err(|e| e.to_string())?;
        let mut signer = Signer::new(self.digest, &key).map_err(|e| e.to_string())?;
        signer.sign_oneshot_to_vec(data).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc_7677_test_vector() {
        let mut c = ScramClient::with_nonce(ScramMechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert!(c.verify_server_final(b"v=AAAA").is_err(), "a wrong server signature is refused");
    }

    #[test]
    fn a_server_that_does_not_extend_the_nonce_or_asks_too_many_iterations_is_refused() {
        let mut c = ScramClient::with_nonce(ScramMechanism::Sha512, "a,b=c", "p", "abc");
        assert_eq!(c.client_first(), b"n,,n=a=2Cb=3Dc,r=abc");
        assert!(c.client_final(b"r=xyz1,s=AAAA,i=4096").is_err());
        assert!(c.client_final(b"r=abc1,s=AAAA,i=100000000").is_err());
        assert!(c.client_final(b"e=invalid-user").is_err());
    }
}
