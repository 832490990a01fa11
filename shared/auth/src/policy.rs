//! The access policy: which operation a principal's scopes allow, and when it also takes owning the
//! account (or having started the transfer). Pure: the caller finds out ownership from the event-sourced
//! state and asks again.
//!
//! | operation | `ledger:customer` | `ledger:operator` | `ledger:admin` only |
//! | --- | --- | --- | --- |
//! | create an account | only with `ownerId` = its own id | yes | 403 |
//! | deposit, freeze, unfreeze | 403 | yes | 403 |
//! | withdraw, read an account | if it owns the account, else as unknown (404) | yes | 403 |
//! | start a transfer | if it owns the source, else as unknown (404) | yes | 403 |
//! | read a transfer | if it started it, else as unknown (404) | yes | 403 |
//! | admin routes | 403 | 403 | yes |
//!
//! A principal with no ledger scope is refused everything (403).

use crate::principal::{Scope, Scopes};

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /accounts`; `for_self` when `ownerId` is the caller's own id.
    CreateAccount {
        /// Whether the new account's owner is the caller.
        for_self: bool,
    },
    /// `POST /accounts/{id}/deposits`.
    Deposit,
    /// `POST /accounts/{id}/withdrawals`.
    Withdraw,
    /// `POST /accounts/{id}/freeze`.
    Freeze,
    /// `POST /accounts/{id}/unfreeze`.
    Unfreeze,
    /// `GET /accounts/{id}`, `/balance`, `/history`.
    ReadAccount,
    /// `POST /transfers`, by its source account.
    StartTransfer,
    /// `GET /transfers/{id}`.
    ReadTransfer,
    /// The admin routes.
    Admin,
}

impl Operation {
    /// Every operation (`CreateAccount` both ways), for tables.
    pub const ALL: [Operation; 10] = [
        Operation::CreateAccount { for_self: true },
        Operation::CreateAccount { for_self: false },
        Operation::Deposit,
        Operation::Withdraw,
        Operation::Freeze,
        Operation::Unfreeze,
        Operation::ReadAccount,
        Operation::StartTransfer,
        Operation::ReadTransfer,
        Operation::Admin,
    ];
}

/// What the scopes alone say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Allowed whoever owns what.
    Allowed,
    /// Allowed if the principal owns the account (or started the transfer); otherwise the resource is
    /// answered as unknown.
    IfOwner,
    /// Not allowed: 403.
    Forbidden,
}

/// The final answer once ownership is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403 `FORBIDDEN`.
    Forbid,
    /// Answer exactly as for a resource that does not exist (404).
    Conceal,
}

/// What `scopes` allow for `operation` before ownership is looked at.
pub fn check(scopes: Scopes, operation: Operation) -> Check {
    use Operation as O;
    if let O::Admin = operation {
        return if scopes.has(Scope::Admin) { Check::Allowed } else { Check::Forbidden };
    }
    if scopes.has(Scope::Operator) {
        return Check::Allowed;
    }
    if !scopes.has(Scope::Customer) {
        return Check::Forbidden;
    }
    match operation {
        O::CreateAccount { for_self: true } => Check::Allowed,
        O::CreateAccount { for_self: false } | O::Deposit | O::Freeze | O::Unfreeze => Check::Forbidden,
        O::Withdraw | O::ReadAccount | O::StartTransfer | O::ReadTransfer => Check::IfOwner,
        O::Admin => Check::Forbidden,
    }
}

/// The decision for `operation` when the principal `owns` the resource (or not; an unknown resource
/// is not owned).
pub fn decide(scopes: Scopes, operation: Operation, owns: bool) -> Decision {
    match check(scopes, operation) {
        Check::Allowed => Decision::Allow,
        Check::Forbidden => Decision::Forbid,
        Check::IfOwner if owns => Decision::Allow,
        Check::IfOwner => Decision::Conceal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Allow as A, Conceal as C, Forbid as F};
    use Operation as O;

    const CUSTOMER: &[Scope] = &[Scope::Customer];
    const OPERATOR: &[Scope] = &[Scope::Operator];
    const ADMIN: &[Scope] = &[Scope::Admin];
    const NONE: &[Scope] = &[];
    const ALL: &[Scope] = &[Scope::Customer, Scope::Operator, Scope::Admin];

    /// (scopes, operation, decision when owned, decision when not owned or unknown)
    const TABLE: &[(&[Scope], Operation, Decision, Decision)] = &[
        (CUSTOMER, O::CreateAccount { for_self: true }, A, A),
        (CUSTOMER, O::CreateAccount { for_self: false }, F, F),
        (CUSTOMER, O::Deposit, F, F),
        (CUSTOMER, O::Withdraw, A, C),
        (CUSTOMER, O::Freeze, F, F),
        (CUSTOMER, O::Unfreeze, F, F),
        (CUSTOMER, O::ReadAccount, A, C),
        (CUSTOMER, O::StartTransfer, A, C),
        (CUSTOMER, O::ReadTransfer, A, C),
        (CUSTOMER, O::Admin, F, F),
        (OPERATOR, O::CreateAccount { for_self: true }, A, A),
        (OPERATOR, O::CreateAccount { for_self: false }, A, A),
        (OPERATOR, O::Deposit, A, A),
        (OPERATOR, O::Withdraw, A, A),
        (OPERATOR, O::Freeze, A, A),
        (OPERATOR, O::Unfreeze, A, A),
        (OPERATOR, O::ReadAccount, A, A),
        (OPERATOR, O::StartTransfer, A, A),
        (OPERATOR, O::ReadTransfer, A, A),
        (OPERATOR, O::Admin, F, F),
        (ADMIN, O::CreateAccount { for_self: true }, F, F),
        (ADMIN, O::CreateAccount { for_self: false }, F, F),
        (ADMIN, O::Deposit, F, F),
        (ADMIN, O::Withdraw, F, F),
        (ADMIN, O::Freeze, F, F),
        (ADMIN, O::Unfreeze, F, F),
        (ADMIN, O::ReadAccount, F, F),
        (ADMIN, O::StartTransfer, F, F),
        (ADMIN, O::ReadTransfer, F, F),
        (ADMIN, O::Admin, A, A),
        (NONE, O::CreateAccount { for_self: true }, F, F),
        (NONE, O::CreateAccount { for_self: false }, F, F),
        (NONE, O::Deposit, F, F),
        (NONE, O::Withdraw, F, F),
        (NONE, O::Freeze, F, F),
        (NONE, O::Unfreeze, F, F),
        (NONE, O::ReadAccount, F, F),
        (NONE, O::StartTransfer, F, F),
        (NONE, O::ReadTransfer, F, F),
        (NONE, O::Admin, F, F),
        (ALL, O::CreateAccount { for_self: false }, A, A),
        (ALL, O::Deposit, A, A),
        (ALL, O::Withdraw, A, A),
        (ALL, O::ReadTransfer, A, A),
        (ALL, O::Admin, A, A),
    ];

    #[test]
    fn the_policy_table() {
        for (scopes, operation, owned, not_owned) in TABLE {
            let scopes = Scopes::of(scopes);
            assert_eq!(decide(scopes, *operation, true), *owned, "{scopes:?} {operation:?} owned");
            assert_eq!(decide(scopes, *operation, false), *not_owned, "{scopes:?} {operation:?} not owned");
        }
    }

    #[test]
    fn the_table_covers_every_operation_for_each_single_scope_and_none() {
        for scopes in [CUSTOMER, OPERATOR, ADMIN, NONE] {
            for operation in Operation::ALL {
                assert!(
                    TABLE.iter().any(|(s, o, _, _)| *s == scopes && *o == operation),
                    "{scopes:?} {operation:?} is missing from the table"
                );
            }
        }
    }

    #[test]
    fn a_customer_who_is_also_an_operator_acts_as_an_operator() {
        let both = Scopes::of(&[Scope::Customer, Scope::Operator]);
        for operation in Operation::ALL {
            let expected = if operation == O::Admin { F } else { A };
            assert_eq!(decide(both, operation, false), expected, "{operation:?}");
        }
    }
}
