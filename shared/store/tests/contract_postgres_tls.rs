//! The adapter contract suite against the Postgres adapters over TLS with `sslmode=verify-full`, as
//! deployed on RDS: the TLS-only server of `infra/scripts/with-services.sh` (`DATABASE_TLS_URL`), a
//! fresh database per test. Without that server every test fails.

mod contract;
mod pg_tls;

contract_suite!(async { corebank_store::postgres::stores(pg_tls::migrated_database().await.pool) });
