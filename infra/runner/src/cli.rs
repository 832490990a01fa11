//! One-shot commands of the runner binary, for operators:
//!
//! - `corebank-runner migrate`: applies pending Postgres migrations (`DATABASE_URL` or `PG*`) and
//!   exits;
//! - `corebank-runner rebuild account <id>`: rebuilds one account's read rows from the event store;
//! - `corebank-runner rebuild all`: rebuilds every account as a recorded rebuild job;
//! - `corebank-runner republish --from <RFC3339> --to <RFC3339> [--stream-prefix <prefix>] [--dry-run]
//!   [--segments <n>] [--page-items <n>]`: publishes the DynamoDB `events` table's events whose
//!   `occurred_at` is in `[from, to)` to their Kafka topics again, as the `outbox-publisher` does
//!   (see [`corebank_delivery::republish`]); it reads the environment of `STORE_KIND=dynamodb
//!   PIPELINE=kafka` (`AWS_ENDPOINT_URL` and the AWS credentials, `TABLE_PREFIX` or `EVENTS_TABLE`,
//!   `KAFKA_BOOTSTRAP` and the other `KAFKA_*` settings, the topic variables), creates nothing, logs a
//!   progress line every 5 s and exits non-zero when any event was not published;
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
     republish --from <RFC3339> --to <RFC3339> [--stream-prefix <prefix>] [--dry-run] [--segments <n>] \
     [--page-items <n>] | auth dev-keys <dir> | auth token <signing-key.pem> <sub> <scope>...]\n\
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
        ["republish", flags @ ..] => republish(&RepublishArgs::parse(flags)?).await?,
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

/// The arguments of `republish`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepublishArgs {
    /// `--from`, inclusive.
    pub from: chrono::DateTime<chrono::Utc>,
    /// `--to`, exclusive.
    pub to: chrono::DateTime<chrono::Utc>,
    /// `--stream-prefix`.
    pub stream_prefix: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--segments` (parallel scan segments).
    pub segments: Option<u32>,
    /// `--page-items` (items per scan request).
    pub page_items: Option<u32>,
}

impl RepublishArgs {
    /// Parses the flags after `republish`; `--from` and `--to` are required.
    pub fn parse(flags: &[&str]) -> Result<Self, RunnerError> {
        let bad = |what: String| RunnerError::Mode(format!("republish: {what}\n{USAGE}"));
        let time = |flag: &str, value: &str| {
            chrono::DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| bad(format!("{flag} {value:?} is not an RFC 3339 time: {e}")))
        };
        let number = |flag: &str, value: &str| {
            value.parse::<u32>().map_err(|e| bad(format!("{flag} {value:?} is not a number: {e}")))
        };
        let (mut from, mut to, mut stream_prefix, mut dry_run, mut segments, mut page_items) =
            (None, None, None, false, None, None);
        let mut rest = flags.iter();
        while let Some(flag) = rest.next() {
            if *flag == "--dry-run" {
                dry_run = true;
                continue;
            }
            let Some(value) = rest.next() else { return Err(bad(format!("{flag} needs a value"))) };
            match *flag {
                "--from" => from = Some(time(flag, value)?),
                "--to" => to = Some(time(flag, value)?),
                "--stream-prefix" => stream_prefix = Some((*value).to_owned()),
                "--segments" => segments = Some(number(flag, value)?),
                "--page-items" => page_items = Some(number(flag, value)?),
                other => return Err(bad(format!("unknown flag {other:?}"))),
            }
        }
        let (Some(from), Some(to)) = (from, to) else {
            return Err(bad("--from and --to are required".to_owned()));
        };
        Ok(Self { from, to, stream_prefix, dry_run, segments, page_items })
    }
}

async fn republish(args: &RepublishArgs) -> Result<serde_json::Value, RunnerError> {
    republish_with(&crate::modes::dynamodb::Settings::from_env()?, args).await
}

/// `republish` with the DynamoDB mode's settings given: the summary as printed, or an error when an
/// event was not published (after printing the summary).
pub async fn republish_with(
    settings: &crate::modes::dynamodb::Settings,
    args: &RepublishArgs,
) -> Result<serde_json::Value, RunnerError> {
    use corebank_delivery::republish::{RepublishOptions, Window, republish};
    use corebank_messaging::KafkaPublisher;
    let window = Window::new(args.from, args.to).map_err(|e| failed("republish")(e.to_string()))?;
    let mut options = RepublishOptions::new(window);
    options.stream_prefix = args.stream_prefix.clone();
    options.dry_run = args.dry_run;
    options.segments = args.segments.unwrap_or(options.segments);
    options.page_items = args.page_items.unwrap_or(options.page_items);
    let sdk = corebank_wiring::dynamodb::sdk_config_from_env().await;
    let client = corebank_wiring::dynamodb::client(&sdk);
    let publisher = KafkaPublisher::new(&settings.kafka, settings.topics.clone())
        .map_err(|e| failed("creating the Kafka producer")(e.to_string()))?;
    let started = Instant::now();
    let summary = republish(&client, &settings.tables.events, &settings.topics, &publisher, &options)
        .await
        .map_err(|e| failed("republish")(e.to_string()))?;
    let mut body = serde_json::to_value(&summary).map_err(|e| failed("republish")(e.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.insert("from".to_owned(), json!(args.from.to_rfc3339()));
        fields.insert("to".to_owned(), json!(args.to.to_rfc3339()));
        fields.insert("table".to_owned(), json!(settings.tables.events));
        fields.insert("streamPrefix".to_owned(), json!(args.stream_prefix));
        fields.insert(
            "elapsedMs".to_owned(),
            json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        );
    }
    if summary.failed > 0 || summary.undecodable > 0 {
        print(&body)?;
        return Err(RunnerError::Mode(format!(
            "republish: {} events not published and {} items undecodable (the log names each); running the same window again is safe",
            summary.failed, summary.undecodable
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn republish_flags_parse_and_from_and_to_are_required() {
        let args = RepublishArgs::parse(&[
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-02T00:00:00+01:00",
            "--stream-prefix",
            "account-",
            "--dry-run",
            "--segments",
            "8",
        ])
        .unwrap();
        assert_eq!(args.from.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(args.to.to_rfc3339(), "2026-01-01T23:00:00+00:00");
        assert_eq!(args.stream_prefix.as_deref(), Some("account-"));
        assert!(args.dry_run);
        assert_eq!((args.segments, args.page_items), (Some(8), None));

        for bad in [
            &["--from", "2026-01-01T00:00:00Z"][..],
            &["--from", "yesterday", "--to", "2026-01-01T00:00:00Z"],
            &["--from", "2026-01-01T00:00:00Z", "--to"],
            &["--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z", "--segments", "many"],
            &["--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z", "--all"],
        ] {
            assert!(RepublishArgs::parse(bad).is_err(), "{bad:?}");
        }
    }
}
