//! The adapter contract suite against the Postgres adapters, on a fresh database per test.
//!
//! Needs `DATABASE_URL` (a server where the user may `CREATE DATABASE`); without it every test fails.
//! `SERVICES=postgres infra/scripts/with-services.sh cargo test -p corebank-store --features postgres`
//! starts a throw-away server and sets it.

mod contract;
mod pg;

contract_suite!(async { corebank_store::postgres::stores(pg::migrated_database().await.pool) });
