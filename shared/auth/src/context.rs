//! How a principal travels from the edge to the function in API Gateway's request context.
//!
//! The authorizer answers with `principalId` and a context holding [`SCOPE_KEY`]; API Gateway hands
//! both to the function as `requestContext.authorizer.principalId` and
//! `requestContext.authorizer.scope`. With IAM (SigV4) instead, API Gateway names the caller in
//! `requestContext.identity.userArn`. Nothing else about the caller is believed: no header, no body
//! field.

use std::collections::HashMap;

use serde_json::Value;

use crate::principal::{Authentication, Principal, PrincipalId, Scope, Scopes};

/// The authorizer context key that carries the space-separated scopes.
pub const SCOPE_KEY: &str = "scope";
/// Where API Gateway puts the authorizer's `principalId` in the request context.
pub const PRINCIPAL_ID_KEY: &str = "principalId";
/// The scopes of a caller API Gateway authenticated with IAM: a service acting as an operator (its
/// IAM policy, `execute-api:Invoke` on the routes it needs, is what narrows it).
pub const IAM_SCOPES: &[Scope] = &[Scope::Operator];

/// The authorizer context for a principal: only strings, as API Gateway requires.
pub fn authorizer_context(principal: &Principal) -> HashMap<String, Value> {
    HashMap::from([(SCOPE_KEY.to_owned(), Value::String(principal.scopes.to_claim()))])
}

/// The principal an authorizer established, from the request context's authorizer fields.
pub fn from_authorizer(fields: &HashMap<String, Value>) -> Option<Principal> {
    let id = fields.get(PRINCIPAL_ID_KEY)?.as_str()?;
    let id = PrincipalId::parse(id).ok()?;
    let scopes = fields.get(SCOPE_KEY).and_then(Value::as_str).map_or(Scopes::NONE, Scopes::parse);
    Some(Principal { id, scopes, via: Authentication::Token })
}

/// The principal of an IAM-signed call, from the request context's `identity.userArn`.
pub fn from_iam(user_arn: &str) -> Option<Principal> {
    let id = PrincipalId::parse(user_arn).ok()?;
    Some(Principal { id, scopes: Scopes::of(IAM_SCOPES), via: Authentication::Iam })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_survives_the_trip_through_the_authorizer_context() {
        let principal = Principal {
            id: PrincipalId::parse("user-1").unwrap_or_else(|e| panic!("{e}")),
            scopes: Scopes::of(&[Scope::Customer]),
            via: Authentication::Token,
        };
        let mut fields = authorizer_context(&principal);
        fields.insert(PRINCIPAL_ID_KEY.to_owned(), Value::String("user-1".to_owned()));
        fields.insert("integrationLatency".to_owned(), Value::from(12));
        assert_eq!(from_authorizer(&fields), Some(principal));
    }

    #[test]
    fn no_principal_id_no_principal() {
        assert_eq!(from_authorizer(&authorizer_context(&Principal::local_operator())), None);
        let fields = HashMap::from([(PRINCIPAL_ID_KEY.to_owned(), Value::from(7))]);
        assert_eq!(from_authorizer(&fields), None);
    }

    #[test]
    fn iam_callers_are_operators_named_by_their_arn() {
        let p = from_iam("arn:aws:sts::123456789012:assumed-role/payments/s-1").unwrap_or_else(|| panic!());
        assert!(p.has(Scope::Operator));
        assert!(!p.has(Scope::Admin));
        assert_eq!(p.via, Authentication::Iam);
    }
}
