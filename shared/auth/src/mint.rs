//! Signing keys and tokens, for tests, the load tool and trying `AUTH_MODE=jwt` locally. A deployed
//! bank never signs: its issuer does.

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

/// Why a key could not be made or read, or a token not signed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Key generation failed.
    #[error("key generation failed")]
    Generate,
    /// Not a PEM RSA private key (PKCS#1 or PKCS#8) nor a PEM P-256 private key (PKCS#8).
    #[error("not an RSA or P-256 private key in PEM: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A private key that signs tokens, with the `kid` its public half is published under.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
    pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new P-256 key (ES256).
    pub fn generate_ec(kid: &str) -> Result<Self, MintError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| MintError::Generate)?;
        let der = pair.to_pkcs8v1().map_err(|_| MintError::Generate)?;
        Self::from_pem(&pem("PRIVATE KEY", der.as_ref()), kid)
    }

    /// A new 2048-bit RSA key (RS256).
    pub fn generate_rsa(kid: &str) -> Result<Self, MintError> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::{KeyPair, KeySize};
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| MintError::Generate)?;
        let der = pair.as_der().map_err(|_| MintError::Generate)?;
        Self::from_pem(&pem("PRIVATE KEY", der.as_ref()), kid)
    }

    /// Reads a PEM private key: RSA signs RS256, P-256 signs ES256.
    pub fn from_pem(text: &str, kid: &str) -> Result<Self, MintError> {
        let (algorithm, key) = match EncodingKey::from_rsa_pem(text.as_bytes()) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(text.as_bytes()).map_err(|e| MintError::Key(e.to_string()))?,
            ),
        };
        let this = Self { kid: kid.to_owned(), algorithm, key, pem: text.to_owned() };
        // A key that cannot describe its public half (a P-384 key, say) is refused here.
        this.jwk()?;
        Ok(this)
    }

    /// The `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// RS256 or ES256.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The private key as PEM.
    pub fn private_pem(&self) -> &str {
        &self.pem
    }

    /// The public key as a JWK, with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self) -> Result<serde_json::Value, MintError> {
        let mut jwk =
            Jwk::from_encoding_key(&self.key, self.algorithm).map_err(|e| MintError::Key(e.to_string()))?;
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm =
            Some(if self.algorithm == Algorithm::RS256 { KeyAlgorithm::RS256 } else { KeyAlgorithm::ES256 });
        serde_json::to_value(&jwk).map_err(|e| MintError::Key(e.to_string()))
    }

    /// Signs `claims` with a header naming this key.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, MintError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        self.sign_with(&header, claims)
    }

    /// Signs `claims` under the given header (tests forge odd headers with it).
    pub fn sign_with(&self, header: &Header, claims: &serde_json::Value) -> Result<String, MintError> {
        encode(header, claims, &self.key).map_err(|e| MintError::Sign(e.to_string()))
    }
}

/// A JWKS document publishing the keys' public halves.
pub fn key_set(keys: &[&SigningKey]) -> Result<String, MintError> {
    let keys = keys.iter().map(|k| k.jwk()).collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({ "keys": keys }).to_string())
}

/// The claims of an access token: issuer, audience, subject, scopes, valid from now for `lifetime_secs`.
pub fn access_claims(
    issuer: &str,
    audience: &str,
    subject: &str,
    scope: &str,
    lifetime_secs: u64,
) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp();
    serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
    })
}
