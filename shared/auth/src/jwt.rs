//! OIDC access-token verification: RS256 and ES256 signatures by a key of the issuer's JWKS, `iss`,
//! `aud` (or Cognito's `client_id`), `exp` and `nbf` with [`LEEWAY_SECS`] of leeway, and `sub` as the
//! principal id.
//!
//! Keys are parsed once and kept. A token naming a `kid` the set does not hold makes the verifier read
//! the key set again, at most once per [`REFRESH_INTERVAL`] (every [`EMPTY_REFRESH_INTERVAL`] while
//! no key could be read yet), so a flood of made-up `kid`s never turns into a flood of fetches. A token
//! that verified is remembered (by its SHA-256) until it expires, in a bounded cache, so a client
//! sending the same token again costs a hash, not a signature check.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AuthError;
use crate::principal::{Authentication, Principal, PrincipalId, Scopes};

/// The longest token accepted, in bytes (API Gateway's own header limit is 10 KiB).
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;
/// Most keys kept from one key set; the rest are ignored.
pub const MAX_KEYS: usize = 32;
/// Least time between two reads of the key set prompted by unknown `kid`s.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between two reads while no key could be read yet.
pub const EMPTY_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// The largest key set read, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

const CACHE_SHARDS: usize = 16;
const CACHE_SHARD_CAPACITY: usize = 4096;

/// What a token must say to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The exact `iss`.
    pub issuer: String,
    /// What `aud` must contain (or, for tokens without `aud`, what `client_id` must be).
    pub audience: String,
}

/// A future yielding a key set's JSON text.
pub type KeysFuture<'a> = Pin<Box<dyn Future<Output = Result<String, AuthError>> + Send + 'a>>;

/// Where the issuer's key set (JWKS) is read from.
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// Reads the key set's JSON text.
    fn fetch(&self) -> KeysFuture<'_>;
}

/// A key set in a local file (`AUTH_JWKS_FILE`), read again on each refresh.
#[derive(Debug, Clone)]
pub struct FileKeys(pub PathBuf);

impl KeySource for FileKeys {
    fn fetch(&self) -> KeysFuture<'_> {
        Box::pin(async move {
            let path = self.0.clone();
            let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
            let bytes = match read {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return Err(AuthError::KeysUnavailable(format!("{}: {e}", self.0.display()))),
                Err(e) => return Err(AuthError::KeysUnavailable(e.to_string())),
            };
            if bytes.len() > MAX_JWKS_BYTES {
                return Err(AuthError::KeysUnavailable(format!("{} is too large", self.0.display())));
            }
            String::from_utf8(bytes)
                .map_err(|_| AuthError::KeysUnavailable("the key set is not UTF-8".to_owned()))
        })
    }
}

/// A key set held in memory.
#[derive(Debug, Clone)]
pub struct StaticKeys(pub String);

impl KeySource for StaticKeys {
    fn fetch(&self) -> KeysFuture<'_> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// A verification key and the one algorithm it verifies.
struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

type KeyMap = HashMap<String, Arc<VerifyingKey>>;

/// The RS256 or ES256 signing keys of a JWKS, by `kid`. Keys without a `kid`, of another type or
/// curve, marked for encryption or naming another algorithm are skipped, as are keys past
/// [`MAX_KEYS`].
fn parse_key_set(text: &str) -> Result<KeyMap, AuthError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_str(text)
        .map_err(|e| AuthError::KeysUnavailable(format!("the key set is not a JWKS: {e}")))?;
    let mut keys = KeyMap::new();
    for value in set.keys {
        if keys.len() >= MAX_KEYS {
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => continue,
        };
        let named = match jwk.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
            Some(_) => false,
        };
        if !named {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        keys.insert(kid, Arc::new(VerifyingKey { algorithm, key }));
    }
    if keys.is_empty() {
        return Err(AuthError::KeysUnavailable("the key set holds no RS256 or ES256 signing key".to_owned()));
    }
    Ok(keys)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
    /// Required and checked by the library; read here for how long to remember the token.
    #[serde(default)]
    exp: Option<u64>,
}

/// A verified token's principal and `exp`, by the token's SHA-256.
type CacheShard = Mutex<HashMap<[u8; 32], (Principal, u64)>>;

/// Principals of tokens that verified, until the token expires.
struct TokenCache {
    shards: Vec<CacheShard>,
}

impl TokenCache {
    fn new() -> Self {
        Self { shards: (0..CACHE_SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, digest: &[u8; 32]) -> &CacheShard {
        &self.shards[usize::from(digest[0]) % CACHE_SHARDS]
    }

    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let mut shard = self.shard(digest).lock().ok()?;
        match shard.get(digest) {
            Some((principal, exp)) if exp.saturating_add(LEEWAY_SECS) >= now => Some(principal.clone()),
            Some(_) => {
                shard.remove(digest);
                None
            }
            None => None,
        }
    }

    fn put(&self, digest: [u8; 32], principal: Principal, exp: u64, now: u64) {
        let Ok(mut shard) = self.shard(&digest).lock() else { return };
        if shard.len() >= CACHE_SHARD_CAPACITY {
            shard.retain(|_, (_, exp)| exp.saturating_add(LEEWAY_SECS) >= now);
            if shard.len() >= CACHE_SHARD_CAPACITY {
                shard.clear();
            }
        }
        shard.insert(digest, (principal, exp));
    }
}

/// Verifies access tokens of one issuer for one audience.
pub struct Verifier {
    config: VerifierConfig,
    source: Arc<dyn KeySource>,
    keys: RwLock<Arc<KeyMap>>,
    last_read: tokio::sync::Mutex<Option<Instant>>,
    rs256: Validation,
    es256: Validation,
    cache: TokenCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn validation(algorithm: Algorithm, issuer: &str) -> Validation {
    let mut v = Validation::new(algorithm);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    // The audience is checked here (aud, else Cognito's client_id), not by the library.
    v.validate_aud = false;
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iss"]);
    v
}

fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::Expired,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Algorithm
        }
        _ => AuthError::Malformed,
    }
}

/// The token of an `Authorization` header value: `Bearer <token>` (the scheme in any case).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Verifier {
    /// A verifier reading keys from `source` (nothing is read until [`Verifier::load`] or the first
    /// token).
    pub fn new(config: VerifierConfig, source: Arc<dyn KeySource>) -> Self {
        Self {
            rs256: validation(Algorithm::RS256, &config.issuer),
            es256: validation(Algorithm::ES256, &config.issuer),
            config,
            source,
            keys: RwLock::new(Arc::new(KeyMap::new())),
            last_read: tokio::sync::Mutex::new(None),
            cache: TokenCache::new(),
        }
    }

    /// What tokens must say.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Reads the key set now; returns how many signing keys it holds. The keys in use stay as they
    /// are when the read fails.
    pub async fn load(&self) -> Result<usize, AuthError> {
        let mut last = self.last_read.lock().await;
        let result = self.read_keys().await;
        *last = Some(Instant::now());
        result
    }

    async fn read_keys(&self) -> Result<usize, AuthError> {
        let text = self.source.fetch().await?;
        let keys = parse_key_set(&text)?;
        let count = keys.len();
        if let Ok(mut current) = self.keys.write() {
            *current = Arc::new(keys);
        }
        Ok(count)
    }

    fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    fn has_keys(&self) -> bool {
        self.keys.read().is_ok_and(|k| !k.is_empty())
    }

    /// Reads the key set again for a `kid` it did not hold, unless it was read too recently.
    async fn refresh_for(&self, kid: &str) -> Result<(), AuthError> {
        let mut last = self.last_read.lock().await;
        if self.key(kid).is_some() {
            return Ok(());
        }
        let interval = if self.has_keys() { REFRESH_INTERVAL } else { EMPTY_REFRESH_INTERVAL };
        if last.is_some_and(|t| t.elapsed() < interval) {
            return if self.has_keys() {
                Ok(())
            } else {
                Err(AuthError::KeysUnavailable("no signing key could be read yet".to_owned()))
            };
        }
        let result = self.read_keys().await;
        *last = Some(Instant::now());
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "reading the issuer's key set failed");
                if self.has_keys() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Verifies a compact JWS access token and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        if token.split('.').count() != 3 {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(principal) = self.cache.get(&digest, now) {
            return Ok(principal);
        }
        let header = decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let validation = match header.alg {
            Algorithm::RS256 => &self.rs256,
            Algorithm::ES256 => &self.es256,
            _ => return Err(AuthError::Algorithm),
        };
        let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
        let key = match self.key(kid) {
            Some(key) => key,
            None => {
                self.refresh_for(kid).await?;
                self.key(kid).ok_or(AuthError::UnknownKey)?
            }
        };
        if key.algorithm != header.alg {
            return Err(AuthError::Algorithm);
        }
        let claims = decode::<Claims>(token, &key.key, validation).map_err(|e| refusal(e.kind()))?.claims;
        let audience_ok = match &claims.aud {
            Some(Audience::One(aud)) => *aud == self.config.audience,
            Some(Audience::Many(auds)) => auds.contains(&self.config.audience),
            None => claims.client_id.as_deref() == Some(self.config.audience.as_str()),
        };
        if !audience_ok {
            return Err(AuthError::Audience);
        }
        let id = claims.sub.as_deref().and_then(PrincipalId::subject).ok_or(AuthError::Subject)?;
        let scopes = Scopes::parse(claims.scope.as_deref().unwrap_or_default());
        let principal = Principal { id, scopes, via: Authentication::Token };
        self.cache.put(digest, principal.clone(), claims.exp.unwrap_or(now), now);
        Ok(principal)
    }
}
