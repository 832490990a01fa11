//! The canonical request hash, built in one place for the API's handlers and the saga's leg commands.
//!
//! A request is fingerprinted as SHA-256 over the operation name, a zero byte, the path's id (the
//! account id, the transfer id for `POST /transfers`, the leg's account for a leg command, empty for
//! `POST /accounts`), a zero byte, and the JSON body with object keys sorted and no whitespace. So key
//! order and formatting never matter, but every field counts.
//!
//! The hashes are stored in idempotency records and compared with later requests under the same key:
//! the bytes hashed must never change.

use corebank_domain::transfer::{Leg, LegCommand};
use corebank_domain::{AccountCommand, Amount};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::command::{Operation, transaction_id_of};

/// What a request's hash is taken over: its operation, its path id and its canonical body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFingerprint {
    operation: Operation,
    path_id: Option<String>,
    body: Value,
}

impl RequestFingerprint {
    /// A client's request: the operation, the id its path names (none for `POST /accounts`) and the
    /// JSON body as sent.
    pub fn new(operation: Operation, path_id: Option<&str>, body: Value) -> Self {
        Self { operation, path_id: path_id.map(str::to_owned), body }
    }

    /// The body's `amount` seen as its exact minor units (`"minor:<n>"`), so that `1000`, `1000.0` and
    /// `1000.00` are the same request, as they are the same money.
    #[must_use]
    pub fn exact_amount(self, amount: Amount) -> Self {
        self.with_field("amount", format!("minor:{}", amount.minor()))
    }

    /// The body's `name` set to `value`: a field the request names implicitly (the transfer id derived
    /// from the Idempotency-Key) hashes like the same field given explicitly. A body that is not a JSON
    /// object is left as it is.
    #[must_use]
    pub fn with_field(mut self, name: &str, value: impl Into<Value>) -> Self {
        if let Some(object) = self.body.as_object_mut() {
            object.insert(name.to_owned(), value.into());
        }
        self
    }

    /// A transfer leg's account command. It has no client body, so the body is built from the leg:
    /// its `transactionId`, plus `amountMinorUnits` and `currency` for the hold and the credit, and
    /// `transferId` for the hold.
    pub fn of_leg(leg: &LegCommand) -> Self {
        let operation = match leg.leg {
            Leg::Hold => Operation::TransferHold,
            Leg::Credit => Operation::TransferCredit,
            Leg::Capture => Operation::TransferCapture,
            Leg::Release => Operation::TransferRelease,
        };
        let txid = transaction_id_of(&leg.command).unwrap_or_default();
        let body = match &leg.command {
            AccountCommand::PlaceHold { transfer_id, amount, currency, .. } => serde_json::json!({
                "transactionId": txid, "transferId": transfer_id.as_str(),
                "amountMinorUnits": amount.minor().to_string(), "currency": currency.code(),
            }),
            AccountCommand::Deposit { amount, currency, .. } => serde_json::json!({
                "transactionId": txid, "amountMinorUnits": amount.minor().to_string(), "currency": currency.code(),
            }),
            _ => serde_json::json!({ "transactionId": txid }),
        };
        Self::new(operation, Some(leg.account_id.as_str()), body)
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The canonical request hash, lower-case hex.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.operation.as_str().as_bytes());
        h.update([0]);
        h.update(self.path_id.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        // serde_json's map is ordered by key (no `preserve_order`), so this text is canonical.
        h.update(self.body.to_string().as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use corebank_domain::{AccountId, Currency, TransactionId, TransferId};
    use serde_json::json;

    use super::*;

    // The expected values were computed from the hashing as first released: stored records compare
    // them, so they must never change.

    #[test]
    fn a_client_request_hashes_its_exact_amount_whatever_the_key_order_or_number_form() {
        let eur = Currency::parse("EUR").unwrap();
        let amount = Amount::parse_major("10.50", eur).unwrap();
        let a = json!({"transactionId": "tx-1", "currency": "EUR", "amount": 10.5});
        let b =
            serde_json::from_str(r#"{"amount": 10.50, "currency": "EUR", "transactionId": "tx-1"}"#).unwrap();
        let a = RequestFingerprint::new(Operation::Deposit, Some("acc-1"), a).exact_amount(amount);
        let b = RequestFingerprint::new(Operation::Deposit, Some("acc-1"), b).exact_amount(amount);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash(), "9f0fb02a56fd1ff23a04a4897e9475439ab6279d15fafd84392cb0e4867dccad");
        let other = RequestFingerprint::new(Operation::Withdraw, Some("acc-1"), json!({})).hash();
        assert_ne!(a.hash(), other);
    }

    #[test]
    fn a_request_without_a_path_id_hashes_an_empty_one() {
        let body = json!({"accountId": "acc-1", "ownerId": "owner-1", "currency": "EUR"});
        let hash = RequestFingerprint::new(Operation::CreateAccount, None, body).hash();
        assert_eq!(hash, "bfdde99a99e1a806f427bfc7c84a0e5c17c47cb34965695ee17b709091948256");
    }

    #[test]
    fn a_hold_leg_hashes_the_body_built_from_it() {
        let eur = Currency::parse("EUR").unwrap();
        let transfer_id = TransferId::parse("t-1").unwrap();
        let leg = LegCommand {
            leg: Leg::Hold,
            account_id: AccountId::parse("acc-src").unwrap(),
            command: AccountCommand::PlaceHold {
                transfer_id,
                amount: Amount::parse_major("10.50", eur).unwrap(),
                currency: eur,
                transaction_id: TransactionId::parse("xfer-t-1-hold").unwrap(),
            },
        };
        let fingerprint = RequestFingerprint::of_leg(&leg);
        assert_eq!(fingerprint.operation(), Operation::TransferHold);
        assert_eq!(fingerprint.hash(), "b7034132f12f3aae0b3925f7f9972e1ebfb980bd4a4fc3cf25ba53d298168d70");
    }
}
