//! TLS and credentials against the TLS-only PostgreSQL of `infra/scripts/with-services.sh`
//! (`DATABASE_TLS_URL`): what each `sslmode` accepts and refuses, and a pool that keeps working when
//! the password is rotated under it. Its certificate names `localhost` and `127.0.0.1` only.

#![cfg(test)]

mod pg_tls;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use corebank_store::postgres::{
    self, CREDENTIAL_REREAD_INTERVAL_MIN, CredentialError, CredentialSource, Credentials, PgConnector,
    RootCert, SslMode, TlsSettings, error_chain, is_auth_failure, is_tls_failure,
};
use deadpool_postgres::PoolError;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Builder, X509NameBuilder};
use secrecy::SecretString;
use uuid::Uuid;

/// The server's settings with `mode` and `root` instead of the URL's.
fn with_mode(mode: SslMode, root: Option<RootCert>) -> (tokio_postgres::Config, Arc<PgConnector>) {
    let url = pg_tls::server();
    let tls = TlsSettings::new(mode, root).unwrap();
    (pg_tls::config(&url, &tls), pg_tls::connector(&tls))
}

/// The server's CA, from the URL.
fn server_ca() -> RootCert {
    pg_tls::server().root_cert.expect("DATABASE_TLS_URL names its CA in sslrootcert")
}

/// The same server under a host name its certificate does not carry (the TCP connection still goes
/// to 127.0.0.1: `hostaddr`).
fn wrong_host_name(config: &mut tokio_postgres::Config) {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut renamed = tokio_postgres::Config::new();
    renamed.host("db.wrong-name.invalid").hostaddr([127, 0, 0, 1].into()).port(port);
    renamed.user(config.get_user().unwrap_or("postgres")).dbname(config.get_dbname().unwrap_or("postgres"));
    renamed.ssl_mode(config.get_ssl_mode());
    *config = renamed;
}

/// Whether the session behind `client` is encrypted.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    let row =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    row.get("ssl")
}

/// A self-signed CA that signed nothing the server has, written to a file of its own.
fn unrelated_ca() -> PathBuf {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "unrelated test CA").unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    builder.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    builder.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    let path = std::env::temp_dir().join(format!("corebank-unrelated-ca-{}.pem", Uuid::new_v4().simple()));
    std::fs::write(&path, builder.build().to_pem().unwrap()).unwrap();
    path
}

#[tokio::test]
async fn verify_full_against_the_servers_ca_connects_encrypted() {
    let (config, connector) = with_mode(SslMode::VerifyFull, Some(server_ca()));
    let client = pg_tls::client(&connector, &config).await;
    assert!(encrypted(&client).await);
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host_name_where_verify_ca_accepts_it() {
    let (mut config, connector) = with_mode(SslMode::VerifyFull, Some(server_ca()));
    wrong_host_name(&mut config);
    let err = connector.connect(&config).await.err().expect("the host name is not in the certificate");
    assert!(is_tls_failure(&err), "{err}");
    let message = error_chain(&err);
    assert!(message.contains("invalid peer certificate"), "{message}");

    let (mut config, connector) = with_mode(SslMode::VerifyCa, Some(server_ca()));
    wrong_host_name(&mut config);
    let client = pg_tls::client(&connector, &config).await;
    assert!(encrypted(&client).await, "verify-ca checks the chain only");

    let (mut config, connector) = with_mode(SslMode::Require, None);
    wrong_host_name(&mut config);
    let client = pg_tls::client(&connector, &config).await;
    assert!(encrypted(&client).await, "require without a root certificate encrypts without checking");
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_is_refused_by_every_verifying_mode() {
    let unrelated = unrelated_ca();
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
        let (config, connector) = with_mode(mode, Some(RootCert::File(unrelated.clone())));
        let err =
            connector.connect(&config).await.err().unwrap_or_else(|| panic!("{mode} accepted a foreign CA"));
        assert!(is_tls_failure(&err), "{mode}: {err}");
    }
    std::fs::remove_file(unrelated).ok();
}

#[tokio::test]
async fn sslmode_disable_against_a_server_that_requires_tls_fails_clearly() {
    let (config, connector) = with_mode(SslMode::Disable, None);
    let err = connector.connect(&config).await.err().expect("the server refuses plaintext");
    let message = error_chain(&err);
    assert!(is_auth_failure(&err), "refused at authentication (SQLSTATE 28000): {message}");
    assert!(message.contains("no encryption"), "{message}");
}

/// A secret store whose value the test changes.
#[derive(Debug)]
struct RotatingSecret {
    user: String,
    password: Mutex<String>,
}

impl RotatingSecret {
    fn set(&self, password: &str) {
        *self.password.lock().unwrap() = password.to_owned();
    }
}

#[async_trait]
impl CredentialSource for RotatingSecret {
    async fn fetch(&self) -> Result<Credentials, CredentialError> {
        let password = self.password.lock().unwrap().clone();
        Ok(Credentials { user: self.user.clone(), password: SecretString::from(password) })
    }
}

async fn current_user(pool: &postgres::Pool) -> Result<String, PoolError> {
    let client = pool.get().await?;
    Ok(client.query_one("SELECT current_user::text AS u", &[]).await.unwrap().get("u"))
}

#[tokio::test]
async fn the_pool_recovers_from_a_password_rotation_once_the_secret_has_the_new_password() {
    let url = pg_tls::server();
    let tls = pg_tls::tls(&url);
    let config = pg_tls::config(&url, &tls);
    let admin = pg_tls::client(&pg_tls::connector(&tls), &config).await;
    // Members of corebank_password_auth log in with a password (the server's pg_hba.conf).
    let role = format!("rotating_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'first-password' IN ROLE corebank_password_auth"
        ))
        .await
        .unwrap();

    let secret =
        Arc::new(RotatingSecret { user: role.clone(), password: Mutex::new("first-password".to_owned()) });
    let connector = PgConnector::with_credentials(tls.connector().unwrap(), secret.clone());
    connector.load_credentials().await.unwrap();
    let pool = postgres::pool(config.clone(), Arc::new(connector), pg_tls::LIMITS).unwrap();
    assert_eq!(current_user(&pool).await.unwrap(), role, "the secret's user, not the URL's");

    // The password changes on the server first; the secret still has the old one.
    admin.batch_execute(&format!("ALTER ROLE {role} PASSWORD 'second-password'")).await.unwrap();
    pool.retain(|_, _| false);
    let err = current_user(&pool).await.expect_err("the old password is refused");
    assert!(matches!(&err, PoolError::Backend(e) if is_auth_failure(e)), "{err}");

    // Then the secret gets the new one: the next connection re-reads it and logs in.
    secret.set("second-password");
    tokio::time::sleep(CREDENTIAL_REREAD_INTERVAL_MIN).await;
    assert_eq!(current_user(&pool).await.unwrap(), role);
    pool.retain(|_, _| false);
    assert_eq!(current_user(&pool).await.unwrap(), role, "the new password is kept for later connections");
}

#[tokio::test]
async fn a_password_login_over_tls_is_bound_to_the_servers_certificate() {
    let url = pg_tls::server();
    let tls = pg_tls::tls(&url);
    let config = pg_tls::config(&url, &tls);
    let connector = pg_tls::connector(&tls);
    let admin = pg_tls::client(&connector, &config).await;
    let role = format!("bound_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'bound-password' IN ROLE corebank_password_auth"
        ))
        .await
        .unwrap();

    // SCRAM-SHA-256-PLUS or nothing: the login fails unless the connector offers tls-server-end-point
    // and it matches the hash the server computes of its own certificate.
    let mut bound = config.clone();
    bound.user(&role).password("bound-password");
    bound.channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let client = pg_tls::client(&connector, &bound).await;
    let user: String = client.query_one("SELECT current_user::text AS u", &[]).await.unwrap().get("u");
    assert_eq!(user, role);
}
