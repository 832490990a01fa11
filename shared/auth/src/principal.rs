//! Who is calling: a principal id, the scopes it holds and how it was established.

use std::fmt;

/// The longest principal id: an IAM role session ARN fits.
pub const PRINCIPAL_ID_MAX_CHARS: usize = 256;

/// The longest token subject (`sub`), in characters of the id alphabet.
pub const SUBJECT_MAX_CHARS: usize = 128;

/// The principal of the local runner's open mode.
pub const LOCAL_OPERATOR: &str = "local-operator";

/// Why a text is not a principal id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a principal id is 1 to {PRINCIPAL_ID_MAX_CHARS} visible ASCII characters other than '#'")]
pub struct InvalidPrincipalId;

/// The id a principal acts under: a token's `sub`, an IAM caller's ARN, or `local-operator`.
///
/// Visible ASCII without `#` (1..=256), so it can key idempotency records on every store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(String);

impl PrincipalId {
    /// Checks a principal id.
    pub fn parse(raw: &str) -> Result<Self, InvalidPrincipalId> {
        let ok = !raw.is_empty()
            && raw.len() <= PRINCIPAL_ID_MAX_CHARS
            && raw.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if ok { Ok(Self(raw.to_owned())) } else { Err(InvalidPrincipalId) }
    }

    /// A token subject: 1..=128 characters of the id alphabet (`[A-Za-z0-9._:-]`).
    pub fn subject(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= SUBJECT_MAX_CHARS
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Self(raw.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A permission a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `ledger:customer`: its own accounts and the transfers it started.
    Customer,
    /// `ledger:operator`: every account and transfer operation on every account.
    Operator,
    /// `ledger:admin`: the admin routes.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Customer, Scope::Operator, Scope::Admin];

    /// The scope's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "ledger:customer",
            Self::Operator => "ledger:operator",
            Self::Admin => "ledger:admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Customer => 1,
            Self::Operator => 2,
            Self::Admin => 4,
        }
    }

    /// Reads one scope token: `ledger:<name>`, or `ledger/<name>` as issuers with resource servers
    /// (Amazon Cognito) write a resource server's scopes. Anything else is not a ledger scope.
    pub fn parse(token: &str) -> Option<Self> {
        let name = token.strip_prefix("ledger:").or_else(|| token.strip_prefix("ledger/"))?;
        match name {
            "customer" => Some(Self::Customer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The set of scopes a principal holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope.
    pub const NONE: Scopes = Scopes(0);

    /// These scopes.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// The ledger scopes of a space-separated `scope` claim; other scopes are ignored.
    pub fn parse(claim: &str) -> Self {
        Self(claim.split_ascii_whitespace().filter_map(Scope::parse).fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether the set holds `scope`.
    pub fn has(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set as a `scope` claim (space-separated, in a fixed order).
    pub fn to_claim(self) -> String {
        Scope::ALL.iter().filter(|s| self.has(**s)).map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({})", self.to_claim())
    }
}

/// How a principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// The local runner's open mode: nobody was asked for anything.
    Open,
    /// A verified OIDC access token (the authorizer's, or the runner's own verification).
    Token,
    /// An IAM (SigV4) signature checked by API Gateway.
    Iam,
}

/// The caller a request acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Its id: what events record as the actor and what idempotency keys are scoped by.
    pub id: PrincipalId,
    /// What it may do.
    pub scopes: Scopes,
    /// How it was established.
    pub via: Authentication,
}

impl Principal {
    /// The open mode's principal: `local-operator` with the customer and operator scopes.
    pub fn local_operator() -> Self {
        Self {
            id: PrincipalId(LOCAL_OPERATOR.to_owned()),
            scopes: Scopes::of(&[Scope::Customer, Scope::Operator]),
            via: Authentication::Open,
        }
    }

    /// Whether the principal holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.has(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_claims_keep_ledger_scopes_in_either_spelling_and_drop_the_rest() {
        let scopes = Scopes::parse("openid ledger:customer  ledger/admin email ledger:nope ledgercustomer");
        assert!(scopes.has(Scope::Customer));
        assert!(scopes.has(Scope::Admin));
        assert!(!scopes.has(Scope::Operator));
        assert_eq!(scopes.to_claim(), "ledger:customer ledger:admin");
        assert_eq!(Scopes::parse(""), Scopes::NONE);
    }

    #[test]
    fn subjects_use_the_id_alphabet_and_principal_ids_any_visible_ascii_but_hash() {
        assert!(PrincipalId::subject("user-1.a_b:c").is_some());
        assert!(PrincipalId::subject("").is_none());
        assert!(PrincipalId::subject("a b").is_none());
        assert!(PrincipalId::subject("a/b").is_none());
        assert!(PrincipalId::subject(&"x".repeat(129)).is_none());
        assert!(PrincipalId::parse("arn:aws:sts::123456789012:assumed-role/svc/session").is_ok());
        assert!(PrincipalId::parse("a#b").is_err());
        assert!(PrincipalId::parse("").is_err());
        assert!(PrincipalId::parse("tab\there").is_err());
        assert!(PrincipalId::parse(&"x".repeat(257)).is_err());
    }
}
