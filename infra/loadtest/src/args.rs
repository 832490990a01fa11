//! Command-line flags.
//!
//! The flag names and defaults are the seed's load runner's (`--duration=60 --workers=20 ...`); each flag may
//! be written `--flag=value` or `--flag value`. Unknown flags, repeated flags, stray arguments and values out
//! of range are errors (the caller exits with code 2).

use std::collections::HashSet;
use std::path::PathBuf;

use http::Uri;
use serde::Serialize;

use crate::money;

/// The `--help` text.
pub(crate) const USAGE: &str = "\
corebank-loadtest: mixed-workload load test for the core bank HTTP API, with a report and a balance audit.

USAGE:
    corebank-loadtest [--flag=value | --flag value]...

LOAD:
    --duration=60              test length in seconds
    --workers=20               concurrent request loops
    --accounts=100             accounts seeded before the run
    --seed-concurrency=10      concurrent requests while seeding
    --initial-deposit=10000    opening deposit per seeded account (whole major units; 0 = none)
    --min-amount=100           smallest deposit/withdrawal/transfer (whole major units)
    --max-amount=1500          largest deposit/withdrawal/transfer (whole major units)
    --base-url=http://localhost:3000/api
    --hot-account-ratio=0.1    first ceil(accounts * ratio) seeded accounts are hot
    --hot-selection-rate=0.8   chance that a request targets the hot slice
    --currency=USD             currency of every account and amount

OPERATION WEIGHTS:
    --deposit-weight=35  --withdraw-weight=30  --balance-weight=20
    --history-weight=10  --create-weight=5     --transfer-weight=0

AUTHENTICATION (a runner in AUTH_MODE=jwt, or a deployed API):
    --bearer-token TOKEN       send `Authorization: Bearer TOKEN` on every request
    --mint-key PATH.pem        sign a token with this RSA or P-256 private key instead (RS256/ES256)
    --mint-issuer URL          its `iss` (required with --mint-key)
    --mint-audience AUD        its `aud` (required with --mint-key)
    --mint-subject=loadtest    its `sub`
    --mint-scope=ledger:operator  its `scope` (deposits need the operator scope)
    --mint-kid=loadtest        the `kid` its public key is published under

OUTPUT AND AUDIT:
    --json PATH                also write the report as JSON
    --plot PATH.svg            also draw latency (p50/p99) and throughput per second as SVG
    --seed N                   seed of the scenario RNG (operations, accounts, amounts)
    --audit-timeout=30         seconds after the load to wait for balances to converge
    --help                     this text

EXIT CODE: 0 when the audit is clean and no request got a 5xx, 1 otherwise, 2 for bad flags.
";

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

/// A validated run configuration; the report echoes it (less where its own outputs go).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Config {
    pub(crate) duration_secs: u64,
    pub(crate) workers: usize,
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
    #[serde(skip)]
    pub(crate) json: Option<PathBuf>,
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
            json: None,
            plot: None,
            seed: None,
            audit_timeout_secs: 30,
            authentication: Authentication::None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Run(Box<Config>),
    Help,
}

/// Why a command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArgsError {
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    #[error("unexpected argument `{0}` (every option is a --flag)")]
    Positional(String),
    #[error("flag `--{0}` needs a value")]
    MissingValue(String),
    #[error("flag `--{0}` takes no value")]
    UnexpectedValue(String),
    #[error("flag `--{0}` is given more than once")]
    Repeated(String),
    #[error("invalid value `{value}` for `--{flag}`: {reason}")]
    InvalidValue { flag: String, value: String, reason: String },
    #[error("{0}")]
    Inconsistent(String),
    #[error("argument {0} is not valid UTF-8")]
    NotUtf8(usize),
}

/// Flags that take a value; `help` is the only one that does not.
const VALUE_FLAGS: &[&str] = &[
    "duration",
    "workers",
    "accounts",
    "seed-concurrency",
    "initial-deposit",
    "min-amount",
    "max-amount",
    "base-url",
    "hot-account-ratio",
    "hot-selection-rate",
    "deposit-weight",
    "withdraw-weight",
    "balance-weight",
    "history-weight",
    "create-weight",
    "transfer-weight",
    "currency",
    "json",
    "plot",
    "seed",
    "audit-timeout",
    "bearer-token",
    "mint-key",
    "mint-issuer",
    "mint-audience",
    "mint-subject",
    "mint-scope",
    "mint-kid",
];

/// Largest amount the API accepts, in minor units (docs/limits.md, "Amount": `1 ..= 10^15`).
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// Upper bounds of the count-like flags: generous, but they keep timers and allocations sane.
const LIMITS: &[(&str, u64)] = &[
    ("duration", 7 * 24 * 3600),
    ("audit-timeout", 24 * 3600),
    ("workers", 10_000),
    ("seed-concurrency", 10_000),
    ("accounts", 10_000_000),
];

/// Parses the arguments after the program name.
pub(crate) fn parse<S: AsRef<str>>(args: &[S]) -> Result<Command, ArgsError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut iter = args.iter().map(AsRef::as_ref);
    while let Some(arg) = iter.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ArgsError::Positional(arg.to_owned()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        if name == "help" {
            return Err(ArgsError::UnexpectedValue(name.to_owned()));
        }
        if !VALUE_FLAGS.contains(&name) {
            return Err(ArgsError::UnknownFlag(format!("--{name}")));
        }
        let value = match inline {
            Some(value) => value,
            None => match iter.next() {
                Some(next) if !next.starts_with("--") => next,
                _ => return Err(ArgsError::MissingValue(name.to_owned())),
            },
        };
        pairs.push((name, value));
    }

    let mut config = Config::default();
    let mut seen = HashSet::new();
    let mut auth: Vec<(&str, &str)> = Vec::new();
    for (name, value) in pairs {
        if !seen.insert(name) {
            return Err(ArgsError::Repeated(name.to_owned()));
        }
        if name == "bearer-token" || name.starts_with("mint-") {
            auth.push((name, value));
        } else {
            apply(&mut config, name, value)?;
        }
    }
    config.authentication = authentication(&auth)?;
    validate(&config)?;
    Ok(Command::Run(Box::new(config)))
}

/// Like [`parse`], for raw OS arguments.
pub(crate) fn parse_os(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, ArgsError> {
    let mut strings = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        strings.push(arg.into_string().map_err(|_| ArgsError::NotUtf8(i + 1))?);
    }
    parse(&strings)
}

fn invalid(flag: &str, value: &str, reason: &str) -> ArgsError {
    ArgsError::InvalidValue { flag: flag.to_owned(), value: value.to_owned(), reason: reason.to_owned() }
}

fn int<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ArgsError> {
    value.parse().map_err(|_| invalid(flag, value, "expected a non-negative integer"))
}

fn positive(flag: &str, value: &str) -> Result<u64, ArgsError> {
    match int::<u64>(flag, value)? {
        0 => Err(invalid(flag, value, "must be at least 1")),
        n => Ok(n),
    }
}

fn positive_usize(flag: &str, value: &str) -> Result<usize, ArgsError> {
    let n = positive(flag, value)?;
    usize::try_from(n).map_err(|_| invalid(flag, value, "too large"))
}

fn fraction(flag: &str, value: &str) -> Result<f64, ArgsError> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(invalid(flag, value, "expected a number between 0 and 1")),
    }
}

fn apply(config: &mut Config, name: &str, value: &str) -> Result<(), ArgsError> {
    if let Some(&(_, max)) = LIMITS.iter().find(|(flag, _)| *flag == name)
        && value.parse::<u64>().is_ok_and(|n| n > max)
    {
        return Err(invalid(name, value, &format!("at most {max}")));
    }
    match name {
        "duration" => config.duration_secs = positive(name, value)?,
        "workers" => config.workers = positive_usize(name, value)?,
        "accounts" => config.accounts = positive_usize(name, value)?,
        "seed-concurrency" => config.seed_concurrency = positive_usize(name, value)?,
        "initial-deposit" => config.initial_deposit = int(name, value)?,
        "min-amount" => config.min_amount = positive(name, value)?,
        "max-amount" => config.max_amount = positive(name, value)?,
        "base-url" => config.base_url = base_url(name, value)?,
        "hot-account-ratio" => config.hot_account_ratio = fraction(name, value)?,
        "hot-selection-rate" => config.hot_selection_rate = fraction(name, value)?,
        "deposit-weight" => config.weights.deposit = int(name, value)?,
        "withdraw-weight" => config.weights.withdraw = int(name, value)?,
        "balance-weight" => config.weights.balance = int(name, value)?,
        "history-weight" => config.weights.history = int(name, value)?,
        "create-weight" => config.weights.create = int(name, value)?,
        "transfer-weight" => config.weights.transfer = int(name, value)?,
        "currency" => {
            if !money::is_currency_code(value) {
                return Err(invalid(name, value, "expected an ISO 4217 code in upper case, e.g. USD"));
            }
            value.clone_into(&mut config.currency);
        }
        "json" => config.json = Some(path(name, value)?),
        "plot" => config.plot = Some(path(name, value)?),
        "seed" => config.seed = Some(int(name, value)?),
        "audit-timeout" => config.audit_timeout_secs = int(name, value)?,
        other => return Err(ArgsError::UnknownFlag(format!("--{other}"))),
    }
    Ok(())
}

fn authentication(flags: &[(&str, &str)]) -> Result<Authentication, ArgsError> {
    let get = |name: &str| flags.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
    let minting = flags.iter().any(|(n, _)| n.starts_with("mint-"));
    if let Some(token) = get("bearer-token") {
        if minting {
            return Err(ArgsError::Inconsistent(
                "--bearer-token and the --mint-* flags exclude each other".into(),
            ));
        }
        if token.trim().is_empty() || token.contains(char::is_whitespace) {
            return Err(invalid("bearer-token", "(hidden)", "expected a token without spaces"));
        }
        return Ok(Authentication::Bearer { token });
    }
    let Some(key) = get("mint-key") else {
        return if minting {
            Err(ArgsError::Inconsistent("the --mint-* flags need --mint-key".into()))
        } else {
            Ok(Authentication::None)
        };
    };
    let required =
        |name: &str| get(name).ok_or_else(|| ArgsError::Inconsistent(format!("--mint-key needs --{name}")));
    Ok(Authentication::Minted(Mint {
        key: path("mint-key", &key)?,
        issuer: required("mint-issuer")?,
        audience: required("mint-audience")?,
        subject: get("mint-subject").unwrap_or_else(|| "loadtest".to_owned()),
        scope: get("mint-scope").unwrap_or_else(|| "ledger:operator".to_owned()),
        kid: get("mint-kid").unwrap_or_else(|| "loadtest".to_owned()),
    }))
}

fn path(flag: &str, value: &str) -> Result<PathBuf, ArgsError> {
    if value.is_empty() {
        return Err(invalid(flag, value, "expected a file path"));
    }
    Ok(PathBuf::from(value))
}

fn base_url(flag: &str, value: &str) -> Result<String, ArgsError> {
    let trimmed = value.trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|_| invalid(flag, value, "not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(flag, value, "only http:// URLs are supported"));
    }
    if uri.authority().is_none() {
        return Err(invalid(flag, value, "the URL has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid(flag, value, "the URL must not have a query"));
    }
    Ok(trimmed.to_owned())
}

fn validate(config: &Config) -> Result<(), ArgsError> {
    let w = config.weights;
    let total = [w.deposit, w.withdraw, w.balance, w.history, w.create, w.transfer]
        .iter()
        .try_fold(0_u32, |acc, &x| acc.checked_add(x));
    match total {
        None => return Err(ArgsError::Inconsistent("the operation weights add up to more than 2^32".into())),
        Some(0) => return Err(ArgsError::Inconsistent("all operation weights are 0".into())),
        Some(_) => {}
    }
    if config.min_amount > config.max_amount {
        return Err(ArgsError::Inconsistent(format!(
            "--min-amount ({}) is larger than --max-amount ({})",
            config.min_amount, config.max_amount
        )));
    }
    let digits = money::minor_digits(&config.currency);
    for (flag, amount) in [("max-amount", config.max_amount), ("initial-deposit", config.initial_deposit)] {
        match money::to_minor(amount, digits) {
            Some(minor) if minor <= MAX_AMOUNT_MINOR => {}
            _ => {
                return Err(invalid(flag, &amount.to_string(), "above the API's limit of 10^15 minor units"));
            }
        }
    }
    if w.transfer > 0 && config.accounts < 2 {
        return Err(ArgsError::Inconsistent("transfers need --accounts of at least 2".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Run(config)) => *config,
            other => panic!("expected a run config, got {other:?}"),
        }
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
        assert!(matches!(parse(&["--mint-key=k.pem"]), Err(ArgsError::Inconsistent(_))));
        assert!(matches!(parse(&["--mint-scope=x"]), Err(ArgsError::Inconsistent(_))));
        assert!(matches!(
            parse(&["--bearer-token=t", "--mint-key=k.pem", "--mint-issuer=i", "--mint-audience=a"]),
            Err(ArgsError::Inconsistent(_))
        ));
        // The report echoes how requests authenticate, never the token.
        let json = serde_json::to_string(&run(&["--bearer-token=secret-token"])).unwrap_or_default();
        assert!(!json.contains("secret-token") && json.contains("bearer"), "{json}");
    }

    #[test]
    fn defaults_match_the_seed_runner() {
        let c = run(&[]);
        assert_eq!(c.duration_secs, 60);
        assert_eq!(c.workers, 20);
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
        assert_eq!(c.json, None);
        assert_eq!(c.plot, None);
        assert_eq!(c.seed, None);
        assert_eq!(c.audit_timeout_secs, 30);
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
        assert_eq!(c.seed, Some(42));
        assert_eq!(c.weights.transfer, 3);
        assert_eq!(c.currency, "JPY");
        assert_eq!(c.base_url, "http://127.0.0.1:3000/api");
        assert_eq!(c.audit_timeout_secs, 0);
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse(&["--workers=3", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(parse(&["--wrokers=3"]), Err(ArgsError::UnknownFlag("--wrokers".into())));
        assert_eq!(parse(&["workers=3"]), Err(ArgsError::Positional("workers=3".into())));
        assert_eq!(parse(&["--workers"]), Err(ArgsError::MissingValue("workers".into())));
        assert_eq!(parse(&["--json", "--seed=1"]), Err(ArgsError::MissingValue("json".into())));
        assert_eq!(parse(&["--help=yes"]), Err(ArgsError::UnexpectedValue("help".into())));
        assert_eq!(parse(&["--seed=1", "--seed=2"]), Err(ArgsError::Repeated("seed".into())));
        assert!(matches!(parse(&["--workers=0"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--workers=-1"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--duration=1.5"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--hot-selection-rate=1.5"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--hot-account-ratio=NaN"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--currency=usd"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--base-url=https://x/api"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--base-url=nope"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--max-amount=99999999999999999"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--duration=18446744073709551615"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--workers=100000"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--audit-timeout=86401"]), Err(ArgsError::InvalidValue { .. })));
        assert!(matches!(parse(&["--seed", "-1"]), Err(ArgsError::InvalidValue { .. })));
    }

    #[test]
    fn inconsistent_combinations() {
        assert!(matches!(parse(&["--min-amount=10", "--max-amount=5"]), Err(ArgsError::Inconsistent(_))));
        let all_zero = [
            "--deposit-weight=0",
            "--withdraw-weight=0",
            "--balance-weight=0",
            "--history-weight=0",
            "--create-weight=0",
        ];
        assert!(matches!(parse(&all_zero), Err(ArgsError::Inconsistent(_))));
        assert!(matches!(parse(&["--accounts=1", "--transfer-weight=1"]), Err(ArgsError::Inconsistent(_))));
    }

    #[test]
    fn error_messages_name_the_flag() {
        let err = parse(&["--bogus"]).unwrap_err().to_string();
        assert_eq!(err, "unknown flag `--bogus`");
        let err = parse(&["--workers=x"]).unwrap_err().to_string();
        assert!(err.contains("--workers"), "{err}");
    }
}
