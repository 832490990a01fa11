//! One command through the command service on the memory adapter: idempotency claim, transaction
//! check, load (cache + tail), decide, atomic append with guards.
#![allow(clippy::expect_used, reason = "benchmark set-up fails loudly on a broken fixture")]

use std::hint::black_box;
use std::sync::Arc;

use corebank_app::command::{
    Accepted, CommandContext, KeyScope, Operation, ResponseRenderer, TransferAccepted,
};
use corebank_app::{App, AppConfig, AppError, SystemClock};
use corebank_domain::{AccountCommand, AccountId, Amount, Currency, OwnerId, TransactionId};
use corebank_store::StoredResponse;
use criterion::{Criterion, criterion_group, criterion_main};

#[derive(Debug)]
struct Plain;

impl ResponseRenderer for Plain {
    fn accepted(&self, a: &Accepted) -> StoredResponse {
        StoredResponse { status: 201, body: format!("{{\"version\":{}}}", a.version), code: None }
    }
    fn transfer_accepted(&self, t: &TransferAccepted) -> StoredResponse {
        StoredResponse { status: 202, body: format!("{{\"transferId\":\"{}\"}}", t.transfer_id), code: None }
    }
    fn rejected(&self, e: &AppError) -> StoredResponse {
        StoredResponse {
            status: 400,
            body: format!("{{\"message\":\"{e}\"}}"),
            code: Some("REJECTED".to_owned()),
        }
    }
}

fn ctx(n: u64, operation: Operation) -> CommandContext {
    CommandContext {
        idempotency_key: format!("key-{n}"),
        request_hash: format!("hash-{n}"),
        operation,
        request_id: format!("req-{n}"),
        principal: "bench-client".to_owned(),
        requested_actor: None,
        key_scope: KeyScope::Principal,
        trace_id: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (stores, _feed) = corebank_store::memory::stores();
    let app = App::new(AppConfig::default(), stores, Arc::new(Plain), Arc::new(SystemClock));
    let usd = Currency::parse("USD").expect("usd");
    let accounts: Vec<AccountId> =
        (0..100).map(|i| AccountId::parse(&format!("bench-{i}")).expect("id")).collect();
    rt.block_on(async {
        for (i, id) in accounts.iter().enumerate() {
            let create = AccountCommand::Create {
                account_id: id.clone(),
                owner_id: OwnerId::parse("owner-1").expect("owner"),
                currency: usd,
            };
            let r = app.commands.execute(&ctx(i as u64, Operation::CreateAccount), id, &create).await;
            assert_eq!(r.expect("create").status, 201);
        }
    });
    let mut n: u64 = 1_000_000;
    let mut group = c.benchmark_group("command_service_memory");
    group.bench_function("deposit_hot_account", |b| {
        b.iter(|| {
            n += 1;
            let cmd = AccountCommand::Deposit {
                amount: Amount::from_minor(100).expect("amount"),
                currency: usd,
                transaction_id: TransactionId::parse(&format!("tx-{n}")).expect("tx"),
            };
            let r = rt.block_on(app.commands.execute(&ctx(n, Operation::Deposit), &accounts[0], &cmd));
            black_box(r.expect("deposit"));
        });
    });
    group.bench_function("deposit_round_robin_100_accounts", |b| {
        b.iter(|| {
            n += 1;
            let cmd = AccountCommand::Deposit {
                amount: Amount::from_minor(100).expect("amount"),
                currency: usd,
                transaction_id: TransactionId::parse(&format!("tx-{n}")).expect("tx"),
            };
            let account = &accounts[(n % 100) as usize];
            let r = rt.block_on(app.commands.execute(&ctx(n, Operation::Deposit), account, &cmd));
            black_box(r.expect("deposit"));
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
