//! Command-line flags.
//!
//! The flag names and defaults are the seed's load runner's (`--duration=60 --workers=20 ...`); each flag may
//! be written `--flag=value` or `--flag value`. clap rejects unknown flags, repeated flags, stray arguments and
//! values out of range; [`parse_from`] then checks what clap cannot express (amount limits, weights that add
//! up to 0) and turns the flags into a [`Config`]. Every rejection exits with code 2.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, value_parser};
use http::Uri;
use serde::Serialize;

use crate::money;

/// Largest amount the API accepts, in minor units (docs/limits.md, "Amount": `1 ..= 10^15`).
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;
/// Upper bounds of the count-like flags: generous, but they keep timers and allocations sane.
const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;
const MAX_AUDIT_TIMEOUT_SECS: u64 = 24 * 3600;
const MAX_WORKERS: u64 = 10_000;
const MAX_ACCOUNTS: u64 = 10_000_000;
const MAX_RATE: u64 = 1_000_000;
const MAX_IN_FLIGHT: u64 = 100_000;

const LOAD: &str = "Load";
const WEIGHTS: &str = "Operation weights";
const AUTH: &str = "Authentication (a runner in AUTH_MODE=jwt, or a deployed API)";
const OUTPUT: &str = "Output and audit";

const AFTER_HELP: &str = "\
Closed model (the default): --workers loops, each sends its next request when the last one is answered.
Open model (--rate N): N requests a second on a fixed schedule whatever the replies; at most
--max-in-flight are outstanding, and a request due past that cap is not sent and is counted as missed.
SigV4 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for temporary credentials, AWS_SESSION_TOKEN.

Exit code: 0 when the audit is clean and no request got a 5xx, 1 otherwise, 2 for bad flags.";

/// The flags as clap reads them; [`parse_from`] validates them into a [`Config`].
#[derive(Debug, Parser)]
#[command(
    name = "corebank-loadtest",
    version,
    about = "Mixed-workload load test for the core bank HTTP API, with a report and a balance audit.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Test length in seconds
    #[arg(long, value_name = "SECS", default_value_t = 60, help_heading = LOAD,
          value_parser = value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,
    /// Concurrent request loops (closed model)
    #[arg(long, value_name = "N", default_value_t = 20, help_heading = LOAD,
          value_parser = value_parser!(u64).range(1..=MAX_WORKERS))]
    workers: u64,
    /// Requests a second on a fixed schedule (open model; replaces --workers)
    #[arg(long, value_name = "N", help_heading = LOAD, value_parser = value_parser!(u64).range(1..=MAX_RATE))]
    rate: Option<u64>,
    /// Open model: cap on outstanding requests; one due past it is counted as missed
    #[arg(long, value_name = "N", default_value_t = 1000, help_heading = LOAD, requires = "rate",
          value_parser = value_parser!(u64).range(1..=MAX_IN_FLIGHT))]
    max_in_flight: u64,
    /// Accounts seeded before the run
    #[arg(long, value_name = "N", default_value_t = 100, help_heading = LOAD,
          value_parser = value_parser!(u64).range(1..=MAX_ACCOUNTS))]
    accounts: u64,
    /// Concurrent requests while seeding
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = LOAD,
          value_parser = value_parser!(u64).range(1..=MAX_WORKERS))]
    seed_concurrency: u64,
    /// Opening deposit per seeded account (whole major units; 0 = none)
    #[arg(long, value_name = "MAJOR", default_value_t = 10_000, help_heading = LOAD)]
    initial_deposit: u64,
    /// Smallest deposit/withdrawal/transfer (whole major units)
    #[arg(long, value_name = "MAJOR", default_value_t = 100, help_heading = LOAD,
          value_parser = value_parser!(u64).range(1..))]
    min_amount: u64,
    /// Largest deposit/withdrawal/transfer (whole major units)
    #[arg(long, value_name = "MAJOR", default_value_t = 1_500, help_heading = LOAD,
          value_parser = value_parser!(u64).range(1..))]
    max_amount: u64,
    /// The API's base URL, http:// or https://
    #[arg(long, value_name = "URL", default_value = "http://localhost:3000/api", help_heading = LOAD,
          value_parser = base_url)]
    base_url: String,
    /// The first ceil(accounts * ratio) seeded accounts are hot
    #[arg(long, value_name = "0..1", default_value_t = 0.1, help_heading = LOAD, value_parser = fraction)]
    hot_account_ratio: f64,
    /// Chance that a request targets the hot slice
    #[arg(long, value_name = "0..1", default_value_t = 0.8, help_heading = LOAD, value_parser = fraction)]
    hot_selection_rate: f64,
    /// Currency of every account and amount (ISO 4217, upper case)
    #[arg(long, value_name = "CODE", default_value = "USD", help_heading = LOAD, value_parser = currency)]
    currency: String,
    /// Trust only the CAs in this PEM file for https:// (default: the system roots)
    #[arg(long, value_name = "PEM", help_heading = LOAD, value_parser = path)]
    ca_file: Option<PathBuf>,

    #[arg(long, value_name = "W", default_value_t = 35, help_heading = WEIGHTS)]
    deposit_weight: u32,
    #[arg(long, value_name = "W", default_value_t = 30, help_heading = WEIGHTS)]
    withdraw_weight: u32,
    #[arg(long, value_name = "W", default_value_t = 20, help_heading = WEIGHTS)]
    balance_weight: u32,
    #[arg(long, value_name = "W", default_value_t = 10, help_heading = WEIGHTS)]
    history_weight: u32,
    #[arg(long, value_name = "W", default_value_t = 5, help_heading = WEIGHTS)]
    create_weight: u32,
    #[arg(long, value_name = "W", default_value_t = 0, help_heading = WEIGHTS)]
    transfer_weight: u32,

    /// Send `Authorization: Bearer TOKEN` on every request
    #[arg(long, value_name = "TOKEN", help_heading = AUTH,
          conflicts_with_all = ["mint_key", "mint_issuer", "mint_audience", "mint_subject", "mint_scope", "mint_kid"])]
    bearer_token: Option<String>,
    /// Sign a token with this RSA or P-256 private key instead (RS256/ES256)
    #[arg(long, value_name = "PATH.pem", help_heading = AUTH, value_parser = path,
          requires_all = ["mint_issuer", "mint_audience"])]
    mint_key: Option<PathBuf>,
    /// The minted token's `iss` (required with --mint-key)
    #[arg(long, value_name = "URL", help_heading = AUTH, requires = "mint_key")]
    mint_issuer: Option<String>,
    /// The minted token's `aud` (required with --mint-key)
    #[arg(long, value_name = "AUD", help_heading = AUTH, requires = "mint_key")]
    mint_audience: Option<String>,
    /// The minted token's `sub` [default: loadtest]
    #[arg(long, value_name = "SUB", help_heading = AUTH, requires = "mint_key")]
    mint_subject: Option<String>,
    /// The minted token's `scope` [default: ledger:operator]
    #[arg(long, value_name = "SCOPE", help_heading = AUTH, requires = "mint_key")]
    mint_scope: Option<String>,
    /// The `kid` the minted token's public key is published under [default: loadtest]
    #[arg(long, value_name = "KID", help_heading = AUTH, requires = "mint_key")]
    mint_kid: Option<String>,
    /// Sign requests with AWS SigV4 for execute-api (keys from AWS_ACCESS_KEY_ID etc.)
    #[arg(long, help_heading = AUTH, conflicts_with_all = ["bearer_token", "mint_key"])]
    sigv4: bool,
    /// The region requests are signed for [default: AWS_REGION, then AWS_DEFAULT_REGION]
    #[arg(long, value_name = "REGION", help_heading = AUTH, requires = "sigv4")]
    sigv4_region: Option<String>,

    /// Also write the report as JSON
    #[arg(long, value_name = "PATH", help_heading = OUTPUT, value_parser = path)]
    json: Option<PathBuf>,
    /// Also write the ids of the run's accounts and transfers as JSON (for checks after the audit)
    #[arg(long, value_name = "PATH", help_heading = OUTPUT, value_parser = path)]
    ids: Option<PathBuf>,
    /// Also draw latency (p50/p99) and throughput per second as SVG
    #[arg(long, value_name = "PATH.svg", help_heading = OUTPUT, value_parser = path)]
    plot: Option<PathBuf>,
    /// Seed of the scenario RNG (operations, accounts, amounts)
    #[arg(long, value_name = "N", help_heading = OUTPUT)]
    seed: Option<u64>,
    /// Seconds after the load to wait for balances to converge
    #[arg(long, value_name = "SECS", default_value_t = 30, help_heading = OUTPUT,
          value_parser = value_parser!(u64).range(..=MAX_AUDIT_TIMEOUT_SECS))]
    audit_timeout: u64,
}

/// Relative weights of the operations a worker picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Weights {
    pub(crate) deposit: u32,
    pub(crate) withdraw: u32,
    pub(crate) balance: u32,
    pub(crate) history: u32,
    pub(crate) create: u32,
    pub(crate) transfer: u32,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub(crate) enum Model {
    /// `--workers` loops, each waiting for its reply before the next request.
    #[default]
    Closed,
    /// `rate` requests a second on a fixed schedule, at most `max_in_flight` outstanding.
    #[serde(rename_all = "camelCase")]
    Open { rate: u64, max_in_flight: usize },
}

/// A validated run configuration; the report echoes it (less where its own outputs go).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Config {
    pub(crate) duration_secs: u64,
    pub(crate) workers: usize,
    pub(crate) model: Model,
    pub(crate) accounts: usize,
    pub(crate) seed_concurrency: usize,
    pub(crate) initial_deposit: u64,
    pub(crate) min_amount: u64,
    pub(crate) max_amount: u64,
    /// Without a trailing slash.
    pub(crate) base_url: String,
    pub(crate) hot_account_ratio: f64,
    pub(crate) hot_selection_rate: f64,
    pub(crate) weights: Weights,
    pub(crate) currency: String,
    /// CA certificates that replace the system roots for https://.
    pub(crate) ca_file: Option<PathBuf>,
    #[serde(skip)]
    pub(crate) json: Option<PathBuf>,
    #[serde(skip)]
    pub(crate) ids: Option<PathBuf>,
    #[serde(skip)]
    pub(crate) plot: Option<PathBuf>,
    pub(crate) seed: Option<u64>,
    pub(crate) audit_timeout_secs: u64,
    /// How requests authenticate; never the token itself.
    pub(crate) authentication: Authentication,
}

/// How the load tool authenticates its requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub(crate) enum Authentication {
    /// No `Authorization` header (a runner in AUTH_MODE=open).
    #[default]
    None,
    /// A token given on the command line.
    Bearer {
        #[serde(skip)]
        token: String,
    },
    /// A token the tool signs itself.
    Minted(Mint),
    /// Every request signed with AWS Signature Version 4 for `execute-api` in `region`.
    Sigv4 {
        region: String,
        #[serde(skip)]
        credentials: AwsCredentials,
    },
}

/// Credentials from the standard AWS environment variables; `Debug` shows only the key id.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"(hidden)")
            .field("session_token", &self.session_token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary credentials, `AWS_SESSION_TOKEN`.
    fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let required =
            |name: &str| get(name).ok_or_else(|| format!("--sigv4 needs {name} in the environment"));
        Ok(Self {
            access_key_id: required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

/// What a minted token says, and the key that signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Mint {
    pub(crate) key: PathBuf,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) subject: String,
    pub(crate) scope: String,
    pub(crate) kid: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            duration_secs: 60,
            workers: 20,
            model: Model::Closed,
            accounts: 100,
            seed_concurrency: 10,
            initial_deposit: 10_000,
            min_amount: 100,
            max_amount: 1_500,
            base_url: "http://localhost:3000/api".to_owned(),
            hot_account_ratio: 0.1,
            hot_selection_rate: 0.8,
            weights: Weights { deposit: 35, withdraw: 30, balance: 20, history: 10, create: 5, transfer: 0 },
            currency: "USD".to_owned(),
            ca_file: None,
            json: None,
            ids: None,
            plot: None,
            seed: None,
            audit_timeout_secs: 30,
            authentication: Authentication::None,
        }
    }
}

/// Parses a command line (program name first); `env` reads an environment variable (the SigV4 region's
/// fallbacks). `--help` and `--version` come back as errors too: [`clap::Error::exit`] prints them and exits
/// with 0, and anything else with 2.
pub(crate) fn parse_from<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let config = into_config(cli, env)?;
    validate(&config)?;
    Ok(config)
}

fn error(kind: ErrorKind, message: impl std::fmt::Display) -> clap::Error {
    Cli::command().error(kind, message)
}

fn to_usize(flag: &str, n: u64) -> Result<usize, clap::Error> {
    usize::try_from(n).map_err(|_| error(ErrorKind::ValueValidation, format!("--{flag} {n} is too large")))
}

fn into_config(cli: Cli, env: impl Fn(&str) -> Option<String>) -> Result<Config, clap::Error> {
    let authentication = if let Some(token) = cli.bearer_token {
        if token.trim().is_empty() || token.contains(char::is_whitespace) {
            return Err(error(ErrorKind::ValueValidation, "--bearer-token: expected a token without spaces"));
        }
        Authentication::Bearer { token }
    } else if let Some(key) = cli.mint_key {
        // clap's `requires_all` has checked that both are given.
        let (Some(issuer), Some(audience)) = (cli.mint_issuer, cli.mint_audience) else {
            return Err(error(
                ErrorKind::MissingRequiredArgument,
                "--mint-key needs --mint-issuer and --mint-audience",
            ));
        };
        Authentication::Minted(Mint {
            key,
            issuer,
            audience,
            subject: cli.mint_subject.unwrap_or_else(|| "loadtest".to_owned()),
            scope: cli.mint_scope.unwrap_or_else(|| "ledger:operator".to_owned()),
            kid: cli.mint_kid.unwrap_or_else(|| "loadtest".to_owned()),
        })
    } else if cli.sigv4 {
        let region = cli
            .sigv4_region
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                error(
                    ErrorKind::MissingRequiredArgument,
                    "--sigv4 needs --sigv4-region, AWS_REGION or AWS_DEFAULT_REGION",
                )
            })?;
        let credentials = AwsCredentials::from_env(&env)
            .map_err(|message| error(ErrorKind::MissingRequiredArgument, message))?;
        Authentication::Sigv4 { region, credentials }
    } else {
        Authentication::None
    };
    let model = match cli.rate {
        Some(rate) => Model::Open { rate, max_in_flight: to_usize("max-in-flight", cli.max_in_flight)? },
        None => Model::Closed,
    };
    Ok(Config {
        duration_secs: cli.duration,
        workers: to_usize("workers", cli.workers)?,
        model,
        accounts: to_usize("accounts", cli.accounts)?,
        seed_concurrency: to_usize("seed-concurrency", cli.seed_concurrency)?,
        initial_deposit: cli.initial_deposit,
        min_amount: cli.min_amount,
        max_amount: cli.max_amount,
        base_url: cli.base_url,
        hot_account_ratio: cli.hot_account_ratio,
        hot_selection_rate: cli.hot_selection_rate,
        weights: Weights {
            deposit: cli.deposit_weight,
            withdraw: cli.withdraw_weight,
            balance: cli.balance_weight,
            history: cli.history_weight,
            create: cli.create_weight,
            transfer: cli.transfer_weight,
        },
        currency: cli.currency,
        ca_file: cli.ca_file,
        json: cli.json,
        ids: cli.ids,
        plot: cli.plot,
        seed: cli.seed,
        audit_timeout_secs: cli.audit_timeout,
        authentication,
    })
}

fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err("expected a number between 0 and 1".to_owned()),
    }
}

fn currency(value: &str) -> Result<String, String> {
    if money::is_currency_code(value) {
        Ok(value.to_owned())
    } else {
        Err("expected an ISO 4217 code in upper case, e.g. USD".to_owned())
    }
}

fn path(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() { Err("expected a file path".to_owned()) } else { Ok(PathBuf::from(value)) }
}

fn base_url(value: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|_| "not a URL".to_owned())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("expected an http:// or https:// URL".to_owned());
    }
    if uri.authority().is_none() {
        return Err("the URL has no host".to_owned());
    }
    if uri.query().is_some() {
        return Err("the URL must not have a query".to_owned());
    }
    Ok(trimmed.to_owned())
}

fn validate(config: &Config) -> Result<(), clap::Error> {
    let w = config.weights;
    let total = [w.deposit, w.withdraw, w.balance, w.history, w.create, w.transfer]
        .iter()
        .try_fold(0_u32, |acc, &x| acc.checked_add(x));
    match total {
        None => {
            return Err(error(ErrorKind::ValueValidation, "the operation weights add up to more than 2^32"));
        }
        Some(0) => return Err(error(ErrorKind::ValueValidation, "all operation weights are 0")),
        Some(_) => {}
    }
    if config.min_amount > config.max_amount {
        return Err(error(
            ErrorKind::ArgumentConflict,
            format!(
                "--min-amount ({}) is larger than --max-amount ({})",
                config.min_amount, config.max_amount
            ),
        ));
    }
    let digits = money::minor_digits(&config.currency);
    for (flag, amount) in [("max-amount", config.max_amount), ("initial-deposit", config.initial_deposit)] {
        match money::to_minor(amount, digits) {
            Some(minor) if minor <= MAX_AMOUNT_MINOR => {}
            _ => {
                return Err(error(
                    ErrorKind::ValueValidation,
                    format!("--{flag} {amount} is above the API's limit of 10^15 minor units"),
                ));
            }
        }
    }
    if w.transfer > 0 && config.accounts < 2 {
        return Err(error(ErrorKind::ArgumentConflict, "transfers need --accounts of at least 2"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        parse_from(std::iter::once("corebank-loadtest").chain(args.iter().copied()), no_env)
    }

    fn run(args: &[&str]) -> Config {
        match parse(args) {
            Ok(config) => config,
            Err(e) => panic!("expected a run config, got {e}"),
        }
    }

    fn kind(args: &[&str]) -> Option<ErrorKind> {
        parse(args).err().map(|e| e.kind())
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn authentication_flags() {
        assert_eq!(run(&[]).authentication, Authentication::None);
        assert_eq!(
            run(&["--bearer-token", "abc.def.ghi"]).authentication,
            Authentication::Bearer { token: "abc.def.ghi".into() }
        );
        let minted =
            run(&["--mint-key=k.pem", "--mint-issuer=https://i", "--mint-audience=a"]).authentication;
        let Authentication::Minted(mint) = minted else { panic!("not minted: {minted:?}") };
        assert_eq!((mint.subject.as_str(), mint.scope.as_str()), ("loadtest", "ledger:operator"));
        assert_eq!(kind(&["--mint-key=k.pem"]), Some(ErrorKind::MissingRequiredArgument));
        assert_eq!(kind(&["--mint-scope=x"]), Some(ErrorKind::MissingRequiredArgument));
        assert_eq!(
            kind(&["--bearer-token=t", "--mint-key=k.pem", "--mint-issuer=i", "--mint-audience=a"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(kind(&["--bearer-token= "]), Some(ErrorKind::ValueValidation));
        // The report echoes how requests authenticate, never the token.
        let json = serde_json::to_string(&run(&["--bearer-token=secret-token"])).unwrap_or_default();
        assert!(!json.contains("secret-token") && json.contains("bearer"), "{json}");
    }

    fn aws_env(extra: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            let base = [("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret/key")];
            base.iter().chain(extra).find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        }
    }

    fn sigv4(args: &[&str], env: impl Fn(&str) -> Option<String>) -> Result<Config, clap::Error> {
        parse_from(std::iter::once("corebank-loadtest").chain(args.iter().copied()), env)
    }

    #[test]
    fn sigv4_takes_its_region_from_the_flag_then_the_environment() {
        let region_of = |config: Config| match config.authentication {
            Authentication::Sigv4 { region, .. } => region,
            other => panic!("not sigv4: {other:?}"),
        };
        let flag = sigv4(&["--sigv4", "--sigv4-region=eu-west-1"], aws_env(&[("AWS_REGION", "us-west-2")]));
        assert_eq!(region_of(flag.unwrap()), "eu-west-1");
        let both = sigv4(&["--sigv4"], aws_env(&[("AWS_REGION", "us-west-2"), ("AWS_DEFAULT_REGION", "x")]));
        assert_eq!(region_of(both.unwrap()), "us-west-2");
        let fallback = sigv4(&["--sigv4"], aws_env(&[("AWS_DEFAULT_REGION", "us-east-2")]));
        assert_eq!(region_of(fallback.unwrap()), "us-east-2");
        assert_eq!(sigv4(&["--sigv4"], aws_env(&[])).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--sigv4-region=eu-west-1"]), Some(ErrorKind::MissingRequiredArgument));
        assert_eq!(kind(&["--sigv4", "--bearer-token=t"]), Some(ErrorKind::ArgumentConflict));
    }

    #[test]
    fn sigv4_reads_the_standard_credential_variables_and_never_echoes_the_secret() {
        let env = aws_env(&[("AWS_SESSION_TOKEN", "token/value")]);
        let config = sigv4(&["--sigv4", "--sigv4-region=eu-west-1"], env).unwrap();
        let Authentication::Sigv4 { credentials, .. } = &config.authentication else { panic!("not sigv4") };
        assert_eq!(credentials.access_key_id, "AKIDEXAMPLE");
        assert_eq!(credentials.secret_access_key, "secret/key");
        assert_eq!(credentials.session_token.as_deref(), Some("token/value"));
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["authentication"], serde_json::json!({"kind": "sigv4", "region": "eu-west-1"}));
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret/key") && !debug.contains("token/value"), "{debug}");

        let no_secret = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| "AKID".to_owned());
        let err = sigv4(&["--sigv4", "--sigv4-region=eu-west-1"], no_secret).unwrap_err();
        assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn defaults_match_the_seed_runner() {
        let c = run(&[]);
        assert_eq!(c.duration_secs, 60);
        assert_eq!(c.workers, 20);
        assert_eq!(c.model, Model::Closed);
        assert_eq!(c.accounts, 100);
        assert_eq!(c.seed_concurrency, 10);
        assert_eq!(c.initial_deposit, 10_000);
        assert_eq!(c.min_amount, 100);
        assert_eq!(c.max_amount, 1_500);
        assert_eq!(c.base_url, "http://localhost:3000/api");
        assert!((c.hot_account_ratio - 0.1).abs() < f64::EPSILON);
        assert!((c.hot_selection_rate - 0.8).abs() < f64::EPSILON);
        assert_eq!(
            c.weights,
            Weights { deposit: 35, withdraw: 30, balance: 20, history: 10, create: 5, transfer: 0 }
        );
        assert_eq!(c.currency, "USD");
        assert_eq!(c.ca_file, None);
        assert_eq!(c.json, None);
        assert_eq!(c.ids, None);
        assert_eq!(c.plot, None);
        assert_eq!(c.seed, None);
        assert_eq!(c.audit_timeout_secs, 30);
        assert_eq!(c, Config::default(), "the flags' defaults and Config::default agree");
    }

    #[test]
    fn both_value_syntaxes() {
        let c = run(&[
            "--duration=120",
            "--workers",
            "50",
            "--hot-account-ratio=0.05",
            "--json",
            "out.json",
            "--plot=lat.svg",
            "--ids",
            "ids.json",
            "--seed",
            "42",
            "--transfer-weight=3",
            "--currency=JPY",
            "--base-url=http://127.0.0.1:3000/api/",
            "--audit-timeout=0",
        ]);
        assert_eq!(c.duration_secs, 120);
        assert_eq!(c.workers, 50);
        assert!((c.hot_account_ratio - 0.05).abs() < f64::EPSILON);
        assert_eq!(c.json, Some(PathBuf::from("out.json")));
        assert_eq!(c.plot, Some(PathBuf::from("lat.svg")));
        assert_eq!(c.ids, Some(PathBuf::from("ids.json")));
        assert_eq!(c.seed, Some(42));
        assert_eq!(c.weights.transfer, 3);
        assert_eq!(c.currency, "JPY");
        assert_eq!(c.base_url, "http://127.0.0.1:3000/api");
        assert_eq!(c.audit_timeout_secs, 0);
    }

    #[test]
    fn https_and_a_private_ca_are_accepted() {
        let c =
            run(&["--base-url=https://abc.execute-api.eu-west-1.amazonaws.com/prod/", "--ca-file", "ca.pem"]);
        assert_eq!(c.base_url, "https://abc.execute-api.eu-west-1.amazonaws.com/prod");
        assert_eq!(c.ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn rate_selects_the_open_model() {
        assert_eq!(run(&["--rate=500"]).model, Model::Open { rate: 500, max_in_flight: 1000 });
        assert_eq!(
            run(&["--rate", "50", "--max-in-flight=8"]).model,
            Model::Open { rate: 50, max_in_flight: 8 }
        );
        assert_eq!(kind(&["--max-in-flight=8"]), Some(ErrorKind::MissingRequiredArgument));
        assert_eq!(kind(&["--rate=0"]), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--rate=5", "--max-in-flight=0"]), Some(ErrorKind::ValueValidation));
        let json = serde_json::to_value(run(&["--rate=50"])).unwrap();
        assert_eq!(json["model"], serde_json::json!({"kind": "open", "rate": 50, "maxInFlight": 1000}));
    }

    #[test]
    fn help_and_version_are_not_failures() {
        let help = parse(&["--workers=3", "--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
        let text = help.to_string();
        for flag in
            ["--duration <SECS>", "--rate <N>", "--ca-file <PEM>", "--sigv4", "--mint-key", "Exit code"]
        {
            assert!(text.contains(flag), "{flag} missing from\n{text}");
        }
        assert!(text.contains("[default: 60]"), "{text}");
        assert_eq!(kind(&["-h"]), Some(ErrorKind::DisplayHelp));
        assert_eq!(kind(&["--version"]), Some(ErrorKind::DisplayVersion));
    }

    #[test]
    fn errors_are_specific_and_exit_with_2() {
        assert_eq!(kind(&["--wrokers=3"]), Some(ErrorKind::UnknownArgument));
        assert_eq!(kind(&["workers=3"]), Some(ErrorKind::UnknownArgument));
        assert_eq!(kind(&["--workers"]), Some(ErrorKind::InvalidValue));
        assert_eq!(kind(&["--json", "--seed=1"]), Some(ErrorKind::InvalidValue));
        assert_eq!(kind(&["--help=yes"]), Some(ErrorKind::TooManyValues));
        assert_eq!(kind(&["--seed=1", "--seed=2"]), Some(ErrorKind::ArgumentConflict));
        for bad in [
            "--workers=0",
            "--workers=-1",
            "--duration=1.5",
            "--hot-selection-rate=1.5",
            "--hot-account-ratio=NaN",
            "--currency=usd",
            "--base-url=ftp://x/api",
            "--base-url=nope",
            "--duration=18446744073709551615",
            "--workers=100000",
            "--audit-timeout=86401",
        ] {
            assert_eq!(kind(&[bad]), Some(ErrorKind::ValueValidation), "{bad}");
        }
        assert_eq!(kind(&["--max-amount=99999999999999999"]), Some(ErrorKind::ValueValidation));
        assert!(kind(&["--seed", "-1"]).is_some());
        assert_eq!(parse(&["--workers=0"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn inconsistent_combinations() {
        assert_eq!(kind(&["--min-amount=10", "--max-amount=5"]), Some(ErrorKind::ArgumentConflict));
        let all_zero = [
            "--deposit-weight=0",
            "--withdraw-weight=0",
            "--balance-weight=0",
            "--history-weight=0",
            "--create-weight=0",
        ];
        assert_eq!(kind(&all_zero), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--accounts=1", "--transfer-weight=1"]), Some(ErrorKind::ArgumentConflict));
    }

    #[test]
    fn error_messages_name_the_flag() {
        let err = parse(&["--bogus"]).unwrap_err().to_string();
        assert!(err.contains("--bogus"), "{err}");
        let err = parse(&["--workers=x"]).unwrap_err().to_string();
        assert!(err.contains("--workers"), "{err}");
    }
}
