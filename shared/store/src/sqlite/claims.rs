//! Idempotency claims held in the process, not in the file.
//!
//! A claim only says "a request of this process is deciding under this key right now": it protects
//! against a second copy of the request running at the same time, and its lease lets a retry take over
//! from a holder that stalled. The file holds one process ([`super::open`] takes an exclusive lock), so
//! such a claim needs no commit of its own: it lives in [`Claims`], and only the completed response is
//! written, in the same commit as the events it answers for. That saves every guarded command one trip
//! through the writer and one row written twice.
//!
//! The rules are the other adapters' (the contract suite runs on every store):
//! - a key is taken when nobody holds it and the file has no live record of it; a record or a hold
//!   past its TTL counts as absent, and a hold past its lease may be taken over by the same request
//!   (same request hash);
//! - a completion succeeds while the key is held under its token or not held at all, and the file has
//!   no completed record of it (the SQL of the completion keeps that second rule);
//! - a release drops the hold if the token matches.
//!
//! A crash loses the holds, which is right: no request of a dead process is still running. Holds left
//! in the file by a version that kept them there are deleted when the file is opened, for the same
//! reason.

use std::collections::HashMap;
use std::sync::MutexGuard;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::shards::Shards;
use crate::{IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencyState};

/// One request's hold on a key.
#[derive(Debug, Clone)]
struct Hold {
    operation: String,
    request_hash: String,
    claim_token: Uuid,
    lease_expires_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// What [`Claims::take`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The claim holds the key now; the caller must still look for a live record in the file.
    Held,
    /// Another request holds it: this is its record.
    HeldByAnother(IdempotencyRecord),
}

/// One shard's holds, by (scope, key).
type Shard = HashMap<(String, String), Hold>;

/// The holds of this process, by key.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    shards: Shards<Shard>,
}

impl Claims {
    fn shard(&self, scope: &str, key: &str) -> MutexGuard<'_, Shard> {
        self.shards.lock(&(scope, key))
    }

    /// Takes the key for `claim` unless another request holds it under rules that keep it.
    pub(crate) fn take(&self, claim: &IdempotencyClaim) -> Taken {
        let mut shard = self.shard(&claim.key.scope, &claim.key.key);
        let id = (claim.key.scope.clone(), claim.key.key.clone());
        if let Some(hold) = shard.get(&id) {
            let expired = hold.expires_at <= claim.now;
            let taken_over = hold.lease_expires_at <= claim.now && hold.request_hash == claim.request_hash;
            if !expired && !taken_over {
                return Taken::HeldByAnother(record(&claim.key, hold));
            }
        }
        shard.insert(
            id,
            Hold {
                operation: claim.operation.clone(),
                request_hash: claim.request_hash.clone(),
                claim_token: claim.claim_token,
                lease_expires_at: claim.lease_expires_at,
                expires_at: claim.expires_at,
            },
        );
        Taken::Held
    }

    /// Whether a completion under `token` may be written: the key is held under it, or not held.
    pub(crate) fn may_complete(&self, key: &IdempotencyKey, token: Uuid) -> bool {
        self.shard(&key.scope, &key.key)
            .get(&(key.scope.clone(), key.key.clone()))
            .is_none_or(|hold| hold.claim_token == token)
    }

    /// Drops the hold on `key` if `token` holds it.
    pub(crate) fn drop_hold(&self, key: &IdempotencyKey, token: Uuid) {
        let mut shard = self.shard(&key.scope, &key.key);
        let id = (key.scope.clone(), key.key.clone());
        if shard.get(&id).is_some_and(|hold| hold.claim_token == token) {
            shard.remove(&id);
        }
    }
}

fn record(key: &IdempotencyKey, hold: &Hold) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.clone(),
        operation: hold.operation.clone(),
        request_hash: hold.request_hash.clone(),
        state: IdempotencyState::InProgress {
            claim_token: hold.claim_token,
            lease_expires_at: hold.lease_expires_at,
        },
        expires_at: hold.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn claim(key: &str, hash: &str, now: DateTime<Utc>) -> IdempotencyClaim {
        IdempotencyClaim {
            key: IdempotencyKey { scope: "accounts/p".to_owned(), key: key.to_owned() },
            operation: "deposit".to_owned(),
            request_hash: hash.to_owned(),
            claim_token: Uuid::new_v4(),
            lease_expires_at: now + Duration::seconds(30),
            expires_at: now + Duration::hours(24),
            now,
        }
    }

    #[test]
    fn a_held_key_is_refused_to_others_until_its_lease_ends_and_then_only_to_the_same_request() {
        let claims = Claims::default();
        let t0 = Utc::now();
        let first = claim("k", "a", t0);
        assert_eq!(claims.take(&first), Taken::Held);
        let Taken::HeldByAnother(seen) = claims.take(&claim("k", "a", t0)) else { panic!("taken twice") };
        assert_eq!(
            seen.state,
            IdempotencyState::InProgress {
                claim_token: first.claim_token,
                lease_expires_at: first.lease_expires_at
            }
        );
        let later = t0 + Duration::seconds(31);
        assert!(matches!(claims.take(&claim("k", "b", later)), Taken::HeldByAnother(_)));
        let retry = claim("k", "a", later);
        assert_eq!(claims.take(&retry), Taken::Held);
        assert!(!claims.may_complete(&first.key, first.claim_token));
        assert!(claims.may_complete(&retry.key, retry.claim_token));
    }

    #[test]
    fn only_the_holder_drops_its_hold_and_an_unheld_key_may_be_completed() {
        let claims = Claims::default();
        let t0 = Utc::now();
        let held = claim("k", "a", t0);
        assert_eq!(claims.take(&held), Taken::Held);
        claims.drop_hold(&held.key, Uuid::new_v4());
        assert!(matches!(claims.take(&claim("k", "b", t0)), Taken::HeldByAnother(_)));
        claims.drop_hold(&held.key, held.claim_token);
        assert!(claims.may_complete(&held.key, Uuid::new_v4()));
        assert_eq!(claims.take(&claim("k", "b", t0)), Taken::Held);
    }

    #[test]
    fn a_hold_past_its_ttl_is_taken_by_any_request() {
        let claims = Claims::default();
        let t0 = Utc::now();
        assert_eq!(claims.take(&claim("k", "a", t0)), Taken::Held);
        assert_eq!(claims.take(&claim("k", "b", t0 + Duration::hours(25))), Taken::Held);
    }
}
