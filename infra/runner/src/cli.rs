//! One-shot commands of the runner binary, for operators:
//!
//! - `corebank-runner migrate`: applies pending Postgres migrations (`DATABASE_URL` or `PG*`) and
//!   exits;
//! - `corebank-runner rebuild account <id>`: rebuilds one account's read rows from the event store;
//! - `corebank-runner rebuild all`: rebuilds every account as a recorded rebuild job;
//! - `corebank-runner auth dev-keys <dir>`: makes a P-256 signing key (`signing-key.pem`) and its key
//!   set (`jwks.json`) in `<dir>`, for trying `AUTH_MODE=jwt` locally;
//! - `corebank-runner auth token <signing-key.pem> <sub> <scope...>`: signs an access token for
//!   `AUTH_ISSUER`/`AUTH_AUDIENCE` (defaults `http://127.0.0.1/dev-issuer`, `corebank`), valid one hour.
//!
//! Rebuilds use the store named by `STORE_KIND` (`sqlite`, on the file in `DATA_DIR`:
//! best run while the runner that owns the file is stopped; `postgres`, with pending migrations
//! applied first unless `RUN_MIGRATIONS=false`; or `dynamodb`). Each command prints one JSON document
//! on stdout and exits non-zero on failure.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use corebank_app::{App, AppConfig, SystemClock};
use corebank_domain::AccountId;
use corebank_store::RebuildStatus;
use corebank_wiring::postgres::PgSettings;
use serde_json::json;

use crate::RunnerError;
use crate::modes::StoreKind;

/// How to call the commands.
pub const USAGE: &str = "usage: corebank-runner [migrate | rebuild account <accountId> | rebuild all | \
     auth dev-keys <dir> | auth token <signing-key.pem> <sub> <scope>...]\n\
     Without arguments the runner serves the API (see README.md).";

/// The issuer and audience `auth token` signs for when `AUTH_ISSUER`/`AUTH_AUDIENCE` are unset.
pub const DEV_ISSUER: &str = "http://127.0.0.1/dev-issuer";
/// See [`DEV_ISSUER`].
pub const DEV_AUDIENCE: &str = "corebank";
/// The `kid` of the key `auth dev-keys` makes.
pub const DEV_KID: &str = "dev-1";

/// Runs the command in `args` (the process arguments without the program name).
pub async fn run(args: &[String]) -> Result<(), RunnerError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = match args.as_slice() {
        ["migrate"] => migrate().await?,
        ["rebuild", "account", id] => rebuild_account(id).await?,
        ["rebuild", "all"] => rebuild_all().await?,
        ["auth", "dev-keys", dir] => dev_keys(dir)?,
        ["auth", "token", key, sub, scopes @ ..] => token(key, sub, &scopes.join(" "))?,
        ["help" | "--help" | "-h"] => {
            print(&json!({"usage": USAGE}))?;
            return Ok(());
        }
        _ => return Err(RunnerError::Mode(USAGE.to_owned())),
    };
    print(&output)
}

fn print(value: &serde_json::Value) -> Result<(), RunnerError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    Ok(())
}

fn failed(what: &str) -> impl FnOnce(String) -> RunnerError + '_ {
    move |e| RunnerError::Mode(format!("{what}: {e}"))
}

async fn migrate() -> Result<serde_json::Value, RunnerError> {
    let settings = PgSettings::from_env(true).map_err(|e| failed("postgres")(e.to_string()))?;
    let pool = settings.pool().map_err(|e| failed("postgres")(e.to_string()))?;
    let report =
        corebank_store::postgres::migrate(&pool).await.map_err(|e| failed("migrate")(e.to_string()))?;
    Ok(json!({"applied": report.applied, "alreadyApplied": report.already_applied}))
}

async fn app() -> Result<App, RunnerError> {
    let config = AppConfig::from_env()?;
    let store: StoreKind = corebank_app::config::env_parse("STORE_KIND", crate::modes::DEFAULT_STORE_KIND)?;
    let stores = match store {
        StoreKind::Memory => {
            return Err(RunnerError::Mode(
                "rebuild needs a persistent store: STORE_KIND=sqlite, postgres or dynamodb".to_owned(),
            ));
        }
        StoreKind::Sqlite => {
            corebank_wiring::stores_from_env().await.map_err(|e| failed("sqlite")(e.to_string()))?
        }
        StoreKind::Postgres => {
            let settings = PgSettings::from_env(true).map_err(|e| failed("postgres")(e.to_string()))?;
            corebank_wiring::postgres::connect(settings)
                .await
                .map_err(|e| failed("postgres")(e.to_string()))?
                .stores
                .stores()
        }
        StoreKind::Dynamodb => {
            corebank_wiring::stores_from_env().await.map_err(|e| failed("dynamodb")(e.to_string()))?
        }
    };
    Ok(App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock)))
}

async fn rebuild_account(id: &str) -> Result<serde_json::Value, RunnerError> {
    let account = AccountId::parse(id).map_err(|e| failed("accountId")(e.to_string()))?;
    let app = app().await?;
    let started = Instant::now();
    let version =
        app.rebuilder.rebuild_account(&account).await.map_err(|e| failed("rebuild")(e.to_string()))?;
    Ok(json!({
        "accountId": id,
        "version": version,
        "elapsedMs": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

async fn rebuild_all() -> Result<serde_json::Value, RunnerError> {
    let app = app().await?;
    let job = app.rebuilder.create_job().await.map_err(|e| failed("rebuild")(e.to_string()))?;
    let started = Instant::now();
    let job = app.rebuilder.run_job(job).await;
    let elapsed = started.elapsed();
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let rate = job.events_replayed.saturating_mul(1_000).checked_div(ms.max(1)).unwrap_or(0);
    let mut body = serde_json::to_value(&job).map_err(|e| failed("rebuild")(e.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.insert("elapsedMs".to_owned(), json!(ms));
        fields.insert("eventsPerSecond".to_owned(), json!(rate));
    }
    if job.status == RebuildStatus::Failed {
        print(&body)?;
        return Err(RunnerError::Mode(format!(
            "rebuild {} failed: {}",
            job.rebuild_id,
            job.error.unwrap_or_default()
        )));
    }
    Ok(body)
}

fn dev_keys(dir: &str) -> Result<serde_json::Value, RunnerError> {
    use corebank_auth::mint::{SigningKey, key_set};
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let key = SigningKey::generate_ec(DEV_KID).map_err(|e| failed("auth")(e.to_string()))?;
    let (key_path, jwks_path) = (dir.join("signing-key.pem"), dir.join("jwks.json"));
    write_private(&key_path, key.private_pem())?;
    std::fs::write(&jwks_path, key_set(&[&key]).map_err(|e| failed("auth")(e.to_string()))?)?;
    Ok(json!({
        "signingKey": key_path.display().to_string(),
        "jwks": jwks_path.display().to_string(),
        "serve": format!(
            "AUTH_MODE=jwt AUTH_JWKS_FILE={} AUTH_ISSUER={DEV_ISSUER} AUTH_AUDIENCE={DEV_AUDIENCE} corebank-runner",
            jwks_path.display()
        ),
    }))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), RunnerError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn token(key: &str, sub: &str, scope: &str) -> Result<serde_json::Value, RunnerError> {
    use corebank_auth::mint::{SigningKey, access_claims};
    let pem = std::fs::read_to_string(key)?;
    let key = SigningKey::from_pem(&pem, DEV_KID).map_err(|e| failed("auth")(e.to_string()))?;
    let var = |name: &str, default: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
    };
    let claims =
        access_claims(&var("AUTH_ISSUER", DEV_ISSUER), &var("AUTH_AUDIENCE", DEV_AUDIENCE), sub, scope, 3600);
    let token = key.sign(&claims).map_err(|e| failed("auth")(e.to_string()))?;
    Ok(json!({"token": token, "sub": sub, "scope": scope, "expiresInSeconds": 3600}))
}
