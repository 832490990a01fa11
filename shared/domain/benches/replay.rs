//! Cost of rebuilding an account from its stream, and of deciding one command.
//!
//! The stream is 10 000 events: one `AccountCreated` and 9 999 alternating deposits and withdrawals, all
//! produced by `decide` so every `balanceAfterMinorUnits` is real. Three ways to load it are measured:
//! folding decoded events, decoding each payload of an already-parsed envelope first, and parsing each
//! envelope from its stored JSON text first (what a load from the event store or the bus really does).
//!
//! Run with `cargo bench -p corebank-domain --bench replay` (add `-- --quick` for a short run).

use std::hint::black_box;

use corebank_domain::account::{ACCOUNT_EVENT_SCHEMA_VERSION, decide, evolve, replay};
use corebank_domain::{
    AccountCommand, AccountEvent, AccountId, AccountState, Amount, Currency, EventEnvelope, EventMetadata,
    OwnerId, TransactionId,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const STREAM_LEN: usize = 10_000;

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("benchmark fixture: {e}"))
}

fn usd() -> Currency {
    ok(Currency::parse("USD"))
}

fn deposit(n: usize, minor: i64) -> AccountCommand {
    AccountCommand::Deposit {
        amount: ok(Amount::from_minor(minor)),
        currency: usd(),
        transaction_id: ok(TransactionId::parse(&format!("tx-{n}"))),
    }
}

fn withdraw(n: usize, minor: i64) -> AccountCommand {
    AccountCommand::Withdraw {
        amount: ok(Amount::from_minor(minor)),
        currency: usd(),
        transaction_id: ok(TransactionId::parse(&format!("tx-{n}"))),
    }
}

/// Builds the stream through `decide` and `evolve`, as the command side would have written it.
fn stream() -> Vec<AccountEvent> {
    let mut state = AccountState::default();
    let mut events = Vec::with_capacity(STREAM_LEN);
    let create = AccountCommand::Create {
        account_id: ok(AccountId::parse("acc-bench-1")),
        owner_id: ok(OwnerId::parse("owner-bench-1")),
        currency: usd(),
    };
    let mut commands = vec![create];
    commands.extend((1..STREAM_LEN).map(|n| if n % 2 == 1 { deposit(n, 1_000) } else { withdraw(n, 400) }));
    for command in &commands {
        for event in ok(decide(&state, command)) {
            state = evolve(state, &event);
            events.push(event);
        }
    }
    assert_eq!(events.len(), STREAM_LEN);
    events
}

/// One second apart, from a fixed instant: the fixture never reads the clock.
fn occurred_at(version: u64) -> chrono::DateTime<chrono::Utc> {
    let seconds = 1_700_000_000 + i64::try_from(version).unwrap_or(0);
    chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// The stored envelope of each event, with the metadata a real command writes.
fn envelopes(events: &[AccountEvent]) -> Vec<EventEnvelope> {
    events
        .iter()
        .zip(1_u64..)
        .map(|(event, version)| EventEnvelope {
            event_id: uuid::Uuid::from_u128(u128::from(version)),
            stream_id: "account-acc-bench-1".to_owned(),
            version,
            event_type: event.event_type().to_owned(),
            schema_version: ACCOUNT_EVENT_SCHEMA_VERSION,
            occurred_at: occurred_at(version),
            payload: event.payload(),
            metadata: EventMetadata {
                correlation_id: Some(format!("req-{version}")),
                causation_id: Some(format!("req-{version}")),
                command_id: Some(format!("idem-{version}")),
                transaction_id: event.transaction_id().map(|t| t.as_str().to_owned()),
                actor: None,
                requested_actor: None,
                trace_id: None,
            },
        })
        .collect()
}

fn decode(envelope: &EventEnvelope) -> AccountEvent {
    ok(AccountEvent::decode(&envelope.event_type, envelope.schema_version, &envelope.payload))
}

/// Loads from envelopes whose JSON is already parsed (a `jsonb` column, a deserialised batch).
fn load_envelopes(stored: &[EventEnvelope]) -> AccountState {
    stored.iter().fold(AccountState::default(), |state, envelope| evolve(state, &decode(envelope)))
}

/// Loads from the stored JSON text of each envelope (a bus message value, a text column).
fn load_json(texts: &[String]) -> AccountState {
    texts.iter().fold(AccountState::default(), |state, text| {
        let envelope: EventEnvelope = ok(serde_json::from_str(text));
        evolve(state, &decode(&envelope))
    })
}

fn bench_replay(c: &mut Criterion) {
    let events = stream();
    let stored = envelopes(&events);
    let texts: Vec<String> = stored.iter().map(|e| ok(serde_json::to_string(e))).collect();
    let full = replay(AccountState::default(), &events);
    // Every load path must agree before any of them is timed.
    assert_eq!(load_envelopes(&stored), full);
    assert_eq!(load_json(&texts), full);
    assert_eq!(full.version, 10_000);

    let mut group = c.benchmark_group("replay_10k_events");
    group.throughput(Throughput::Elements(u64::try_from(STREAM_LEN).unwrap_or(u64::MAX)));
    group.bench_function("decoded_events", |b| {
        b.iter(|| replay(AccountState::default(), black_box(&events)));
    });
    group.bench_function("decode_payload_from_envelope", |b| {
        b.iter(|| load_envelopes(black_box(&stored)));
    });
    group.bench_function("parse_envelope_json_then_decode", |b| {
        b.iter(|| load_json(black_box(&texts)));
    });
    group.finish();

    let command = deposit(STREAM_LEN, 1_025);
    c.bench_function("decide_one_deposit", |b| {
        b.iter(|| decide(black_box(&full), black_box(&command)));
    });
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
