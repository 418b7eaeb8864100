//! The configuration's unit tests: values, errors, and secrets kept out of every printed form.

use super::*;

fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    Config::from_lookup("orders", |k| map.get(k).cloned())
}

#[test]
fn defaults_are_durable_and_local() {
    let c = from(&[]).unwrap();
    assert_eq!(c.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(c.profile, Profile::Production);
    assert!(!c.allow_weak_durability);
    assert_eq!(c.instance_id, None);
    let c = from(&[("BACKBONE_INSTANCE_ID", "orders-0")]).unwrap();
    assert_eq!(c.instance_id.as_deref(), Some("orders-0"));
}

#[test]
fn every_bad_value_names_its_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("KAFKA_BOOTSTRAP_SERVERS", "localhost")],
            "KAFKA_BOOTSTRAP_SERVERS=\"localhost\" is invalid: expected a comma-separated list of host:port",
        ),
        (&[("BACKBONE_PROFILE", "prod")], "BACKBONE_PROFILE=\"prod\" is invalid"),
        (
            &[("BACKBONE_DELIVERY_TIMEOUT_MS", "soon")],
            "BACKBONE_DELIVERY_TIMEOUT_MS=\"soon\" is invalid: expected a whole number",
        ),
        (&[("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")], "KAFKA_SASL_PASSWORD is not set"),
        (&[("SCHEMA_REGISTRY_URL", "registry:8081")], "SCHEMA_REGISTRY_URL"),
        (&[("BACKBONE_INSTANCE_ID", "orders 0")], "BACKBONE_INSTANCE_ID=\"orders 0\" is invalid"),
    ];
    for (vars, expected) in cases {
        let err = from(vars).unwrap_err().to_string();
        assert!(err.contains(expected), "`{err}` should contain `{expected}`");
    }
}

/// PEM files for the TLS variables (their content is only checked to be PEM here).
fn pem_files() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, kind: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("-----BEGIN {kind}-----\nAAAA\n-----END {kind}-----\n")).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.pem", "CERTIFICATE"),
        write("client.pem", "CERTIFICATE"),
        write("client.key", "PRIVATE KEY"),
    );
    (dir, ca, cert, key)
}

#[test]
fn item_7_debug_and_serialized_config_carry_no_secret() {
    let (_dir, ca, cert, key) = pem_files();
    let c = from(&[
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("KAFKA_SASL_PASSWORD", "kafka-s3cret"),
        ("KAFKA_SSL_CA_LOCATION", &ca),
        ("KAFKA_SSL_CERTIFICATE_LOCATION", &cert),
        ("KAFKA_SSL_KEY_LOCATION", &key),
        ("KAFKA_SSL_KEY_PASSWORD", "key-s3cret"),
        ("SCHEMA_REGISTRY_URL", "https://svc:registry-s3cret@registry.example:8081/apis/ccompat/v7"),
        ("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "svc:basic-s3cret"),
        ("SCHEMA_REGISTRY_CA_LOCATION", &ca),
    ])
    .unwrap();
    // The values are there for the clients ...
    assert_eq!(c.security.password.as_ref().map(Secret::expose), Some("kafka-s3cret"));
    assert_eq!(c.security.key_password.as_ref().map(Secret::expose), Some("key-s3cret"));
    assert_eq!(c.registry_security.basic_auth.as_ref().map(Secret::expose), Some("svc:basic-s3cret"));
    assert!(c.schema_registry_url.contains("registry-s3cret"));
    let client = c.client_config("orders");
    assert_eq!(client.get("sasl.password"), Some("kafka-s3cret"));
    assert_eq!(client.get("ssl.key.password"), Some("key-s3cret"));
    assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(client.get("ssl.ca.location"), Some(ca.as_str()));
    assert_eq!(client.get("ssl.certificate.location"), Some(cert.as_str()));
    assert_eq!(client.get("ssl.key.location"), Some(key.as_str()));
    // ... and in no printed or serialized form.
    let printed = [
        format!("{c:?}"),
        format!("{c:#?}"),
        format!("{:?}", c.security),
        format!("{:?}", c.registry_security),
        serde_json::to_string(&c).unwrap(),
        serde_json::to_string(&c.security).unwrap(),
        c.security.principal(),
    ];
    for text in &printed {
        assert!(!text.contains("s3cret"), "a secret in `{text}`");
    }
    assert!(printed[0].contains("https://svc:***@registry.example:8081/apis/ccompat/v7"), "{}", printed[0]);
    assert!(printed[0].contains("password: Some(***)"), "{}", printed[0]);
    assert!(printed[0].contains("key_password: Some(***)"), "{}", printed[0]);
    assert!(printed[0].contains("basic_auth: Some(***)"), "{}", printed[0]);
    assert!(printed[4].contains(r#""password":"***""#), "{}", printed[4]);
    assert!(printed[4].contains(r#""basic_auth":"***""#), "{}", printed[4]);
    assert_eq!(c.security.principal(), "User:orders (SASL SCRAM-SHA-512)");
    // A refused URL is quoted redacted in the error too, and so is a refused basic-auth value.
    let err = from(&[("SCHEMA_REGISTRY_URL", "ftp://svc:registry-s3cret@host/")]).unwrap_err().to_string();
    assert!(!err.contains("s3cret") && err.contains("ftp://svc:***@host/"), "{err}");
    let err = from(&[("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "no-colon-s3cret")]).unwrap_err().to_string();
    assert!(!err.contains("s3cret") && err.contains("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"), "{err}");
}

#[test]
fn secured_cluster_settings_are_checked_when_read() {
    let (dir, ca, cert, key) = pem_files();
    let absent = dir.path().join("absent.pem").display().to_string();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "TLS")],
            "KAFKA_SECURITY_PROTOCOL=\"TLS\" is invalid: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL".into(),
        ),
        (
            vec![("KAFKA_SASL_MECHANISM", "GSSAPI")],
            "KAFKA_SASL_MECHANISM=\"GSSAPI\" is invalid: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".into(),
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "SSL"), ("KAFKA_SSL_CA_LOCATION", &absent)],
            format!("KAFKA_SSL_CA_LOCATION={absent}: No such file or directory"),
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "SSL"), ("KAFKA_SSL_CA_LOCATION", &not_pem)],
            format!("KAFKA_SSL_CA_LOCATION={not_pem}: not a PEM file"),
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "SSL"), ("KAFKA_SSL_CERTIFICATE_LOCATION", &cert)],
            "KAFKA_SSL_KEY_LOCATION is not set: expected it goes with KAFKA_SSL_CERTIFICATE_LOCATION".into(),
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "SSL"), ("KAFKA_SSL_KEY_LOCATION", &key)],
            "KAFKA_SSL_CERTIFICATE_LOCATION is not set".into(),
        ),
        (
            vec![("KAFKA_SSL_CA_LOCATION", &ca)],
            "KAFKA_SECURITY_PROTOCOL=\"PLAINTEXT\" is invalid: expected SSL or SASL_SSL, since KAFKA_SSL_CA_LOCATION is set".into(),
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "SSL"), ("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "maybe")],
            "KAFKA_SSL_ENDPOINT_IDENTIFICATION=\"maybe\" is invalid".into(),
        ),
        (vec![("SCHEMA_REGISTRY_CA_LOCATION", &absent)], format!("SCHEMA_REGISTRY_CA_LOCATION={absent}")),
    ];
    for (vars, expected) in &cases {
        let err = from(vars).unwrap_err();
        assert!(!err.is_retriable());
        let err = err.to_string();
        assert!(err.contains(expected.as_str()), "`{err}` should contain `{expected}`");
    }
    // Mutual TLS: the files reach librdkafka, and without SASL nobody is named but the certificate.
    let c = from(&[
        ("KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("KAFKA_SSL_CA_LOCATION", &ca),
        ("KAFKA_SSL_CERTIFICATE_LOCATION", &cert),
        ("KAFKA_SSL_KEY_LOCATION", &key),
        ("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "none"),
    ])
    .unwrap();
    let client = c.client_config("orders");
    assert_eq!(client.get("security.protocol"), Some("SSL"));
    assert_eq!(client.get("sasl.mechanism"), None);
    assert_eq!(client.get("ssl.endpoint.identification.algorithm"), Some("none"));
    assert!(
        c.security.principal().contains(&format!("client certificate {cert}")),
        "{}",
        c.security.principal()
    );
    assert_eq!(from(&[]).unwrap().security.principal(), "ANONYMOUS (no client credentials over PLAINTEXT)");
}

#[test]
fn item_7_urls_lose_their_passwords_wherever_they_are_quoted() {
    let cases = [
        ("http://127.0.0.1:8081/apis/ccompat/v7", "http://127.0.0.1:8081/apis/ccompat/v7"),
        ("http://user:pa:ss@host:1/x?q=a@b", "http://user:***@host:1/x?q=a@b"),
        ("https://p@ss:w@rd@host", "https://p@ss:***@host"),
        ("http://token@host/a", "http://***@host/a"),
        (
            "error sending request for url (http://u:secret@10.0.0.1:8081/schemas/ids/7): refused",
            "error sending request for url (http://u:***@10.0.0.1:8081/schemas/ids/7): refused",
        ),
        ("a http://u:s@h) and https://v:t@k", "a http://u:***@h) and https://v:***@k"),
        ("no url @ all", "no url @ all"),
    ];
    for (text, expected) in cases {
        assert_eq!(redact_url(text), expected, "{text}");
    }
}

#[test]
fn sasl_principal_defaults_to_the_service_name() {
    let c = from(&[("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"), ("KAFKA_SASL_PASSWORD", "s")]).unwrap();
    assert_eq!(c.security.username.as_deref(), Some("orders"));
}
