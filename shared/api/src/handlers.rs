//! Route handlers: thin adapters from HTTP to the use cases and back.

use corebank_app::command::{CommandContext, KeyScope, Operation};
use corebank_app::fingerprint::RequestFingerprint;
use corebank_auth::policy::Operation as Access;
use corebank_auth::{Authentication, Principal, Scope};
use corebank_domain::{AccountCommand, AccountId, StreamKind, TransferId};
use corebank_store::ParkedConsumer;
use http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::decode::{decode_json, idempotency_key, path_param, query_param, query_u64};
use crate::dto::{CreateAccountRequest, Direction, MoneyRequest, StatusRequest, TransferRequest};
use crate::error::error_response;
use crate::render::{balance_body, history_body, summary_body, time, transfer_body};
use crate::response::{json_response, stored_response};
use crate::{ApiError, Deps, access};

type Handled = Result<Response<Body>, ApiError>;

/// Whether a client's `x-request-id` is fit to serve as the request id: 1 to 128 visible ASCII
/// characters.
pub fn is_usable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The request id: API Gateway's, else a sane client `x-request-id`, else a new one.
///
/// The last case yields a different id on every call, so a host without a request context (the
/// local runner) must put a usable `x-request-id` on the request first; otherwise the id a response
/// carries would differ from the correlation id of the events the request wrote.
pub fn request_id(req: &Request) -> String {
    if let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref()
        && let Some(id) = &ctx.request_id
    {
        return id.clone();
    }
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_usable_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The X-Ray trace id of the invocation (`1-…-…`), taken from the trace header the Lambda runtime
/// gives the invocation (never from a header the caller sends): `None` outside Lambda.
fn trace_id(req: &Request) -> Option<String> {
    let header = req.lambda_context_ref()?.xray_trace_id.as_deref()?;
    root_trace_id(header).map(str::to_owned)
}

/// The `Root` of an X-Ray trace header (`Root=1-…;Parent=…;Sampled=…`), or the header itself when
/// it is a bare trace id; `None` when it is neither.
pub fn root_trace_id(header: &str) -> Option<&str> {
    let root = header.split(';').find_map(|part| part.trim().strip_prefix("Root=")).unwrap_or(header).trim();
    let usable = root.starts_with("1-")
        && root.len() <= 64
        && root.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    usable.then_some(root)
}

async fn respond(req: &Request, f: impl std::future::Future<Output = Handled>) -> Response<Body> {
    answer(req, f.await)
}

/// [`respond`] for a command route, counting the outcome under the command's operation.
async fn respond_command(
    req: &Request,
    operation: Operation,
    f: impl std::future::Future<Output = Handled>,
) -> Response<Body> {
    let handled = f.await;
    record_command(operation, &handled);
    answer(req, handled)
}

/// Counts a command's outcome: accepted (2xx), or rejected with its error code, whether the error
/// was decided now or replayed from a stored response.
fn record_command(operation: Operation, handled: &Handled) {
    use corebank_app::telemetry::{COMMANDS_ACCEPTED, COMMANDS_REJECTED};
    let operation = operation.as_str();
    let code = match handled {
        Ok(response) if response.status().is_success() => {
            metrics::counter!(COMMANDS_ACCEPTED, "operation" => operation).increment(1);
            return;
        }
        Ok(response) => response
            .extensions()
            .get::<crate::response::StoredCode>()
            .map_or_else(|| "UNKNOWN".to_owned(), |c| c.0.clone()),
        Err(e) => crate::error::classify(e).1.to_owned(),
    };
    metrics::counter!(COMMANDS_REJECTED, "operation" => operation, "code" => code).increment(1);
}

fn answer(req: &Request, handled: Handled) -> Response<Body> {
    let rid = request_id(req);
    match handled {
        Ok(mut response) => {
            if let Ok(v) = http::HeaderValue::from_str(&rid) {
                response.headers_mut().insert("x-request-id", v);
            }
            response
        }
        Err(e) => error_response(&e, &rid),
    }
}

fn path_account(req: &Request) -> Result<AccountId, ApiError> {
    let raw = path_param(req, "id").unwrap_or_default();
    AccountId::parse(&raw).map_err(|e| ApiError::Validation(e.to_string()))
}

fn min_version(req: &Request) -> Result<Option<u64>, ApiError> {
    query_u64(req, "minVersion", 1, i64::MAX as u64)
}

struct Prepared {
    account_id: AccountId,
    command: AccountCommand,
    requested_actor: Option<String>,
    fingerprint: RequestFingerprint,
    access: AccessCheck,
}

/// What a command's principal must be allowed before it runs.
enum AccessCheck {
    /// Opening an account for this owner.
    NewAccount(String),
    /// An operation on the command's existing account.
    Account(Access),
}

/// A client command's context: its key in the principal's namespace, the principal as its actor.
fn client_context(
    req: &Request,
    principal: &Principal,
    key: String,
    fingerprint: &RequestFingerprint,
    requested_actor: Option<String>,
) -> CommandContext {
    CommandContext {
        idempotency_key: key,
        request_hash: fingerprint.hash(),
        operation: fingerprint.operation(),
        request_id: request_id(req),
        principal: principal.id.to_string(),
        requested_actor,
        key_scope: KeyScope::Principal,
        trace_id: trace_id(req),
    }
}

/// Authenticates, validates, authorizes, then runs the command: a 401, 400, 403 or concealing 404
/// stores nothing and consumes no key.
async fn run_command(
    deps: &Deps,
    req: &Request,
    prepare: impl FnOnce(&Request) -> Result<Prepared, ApiError>,
) -> Handled {
    let principal = access::principal(req)?;
    let key = idempotency_key(req)?;
    let p = prepare(req)?;
    match &p.access {
        AccessCheck::NewAccount(owner_id) => access::create_account(&principal, owner_id)?,
        AccessCheck::Account(operation) => {
            access::account(deps, &principal, *operation, &p.account_id).await?
        }
    }
    let ctx = client_context(req, &principal, key, &p.fingerprint, p.requested_actor);
    let stored = deps.app.commands.execute(&ctx, &p.account_id, &p.command).await?;
    if stored.status == StatusCode::CREATED.as_u16()
        && let Some(barrier) = &deps.barrier
    {
        barrier.settle().await;
    }
    Ok(stored_response(&stored, &ctx.request_id))
}

/// `POST /accounts`.
pub async fn create_account(deps: &Deps, req: Request) -> Response<Body> {
    respond_command(
        &req,
        Operation::CreateAccount,
        run_command(deps, &req, |req| {
            let (dto, body) = decode_json::<CreateAccountRequest>(req)?;
            let access = AccessCheck::NewAccount(dto.owner_id.clone());
            let (account_id, command, requested_actor) = dto.into_command()?;
            let fingerprint = RequestFingerprint::new(Operation::CreateAccount, None, body);
            Ok(Prepared { account_id, command, requested_actor, fingerprint, access })
        }),
    )
    .await
}

fn money_command(req: &Request, direction: Direction) -> Result<Prepared, ApiError> {
    let account_id = path_account(req)?;
    let (dto, body) = decode_json::<MoneyRequest>(req)?;
    let (command, requested_actor) = dto.into_command(direction)?;
    let (operation, access) = match direction {
        Direction::Deposit => (Operation::Deposit, AccessCheck::Account(Access::Deposit)),
        Direction::Withdraw => (Operation::Withdraw, AccessCheck::Account(Access::Withdraw)),
    };
    let mut fingerprint = RequestFingerprint::new(operation, Some(account_id.as_str()), body);
    if let AccountCommand::Deposit { amount, .. } | AccountCommand::Withdraw { amount, .. } = &command {
        fingerprint = fingerprint.exact_amount(*amount);
    }
    Ok(Prepared { account_id, command, requested_actor, fingerprint, access })
}

fn status_command(req: &Request, freeze: bool) -> Result<Prepared, ApiError> {
    let account_id = path_account(req)?;
    let (dto, body) = decode_json::<StatusRequest>(req)?;
    let (command, requested_actor) = dto.into_command(freeze)?;
    let (operation, access) = if freeze {
        (Operation::Freeze, AccessCheck::Account(Access::Freeze))
    } else {
        (Operation::Unfreeze, AccessCheck::Account(Access::Unfreeze))
    };
    let fingerprint = RequestFingerprint::new(operation, Some(account_id.as_str()), body);
    Ok(Prepared { account_id, command, requested_actor, fingerprint, access })
}

/// `POST /accounts/{id}/deposits`.
pub async fn deposit(deps: &Deps, req: Request) -> Response<Body> {
    respond_command(
        &req,
        Operation::Deposit,
        run_command(deps, &req, |r| money_command(r, Direction::Deposit)),
    )
    .await
}

/// `POST /accounts/{id}/withdrawals`.
pub async fn withdraw(deps: &Deps, req: Request) -> Response<Body> {
    respond_command(
        &req,
        Operation::Withdraw,
        run_command(deps, &req, |r| money_command(r, Direction::Withdraw)),
    )
    .await
}

/// `POST /accounts/{id}/freeze`.
pub async fn freeze(deps: &Deps, req: Request) -> Response<Body> {
    respond_command(&req, Operation::Freeze, run_command(deps, &req, |r| status_command(r, true))).await
}

/// `POST /accounts/{id}/unfreeze`.
pub async fn unfreeze(deps: &Deps, req: Request) -> Response<Body> {
    respond_command(&req, Operation::Unfreeze, run_command(deps, &req, |r| status_command(r, false))).await
}

/// The account of a read route, once the principal may read it.
async fn readable_account(deps: &Deps, req: &Request) -> Result<AccountId, ApiError> {
    let principal = access::principal(req)?;
    let account_id = path_account(req)?;
    access::account(deps, &principal, Access::ReadAccount, &account_id).await?;
    Ok(account_id)
}

/// `GET /accounts/{id}`.
pub async fn get_account(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        let account_id = readable_account(deps, &req).await?;
        let summary = deps.app.queries.summary(&account_id, min_version(&req)?).await?;
        Ok(json_response(StatusCode::OK, summary_body(&summary), ""))
    })
    .await
}

/// `GET /accounts/{id}/balance`.
pub async fn get_balance(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        let account_id = readable_account(deps, &req).await?;
        let summary = deps.app.queries.summary(&account_id, min_version(&req)?).await?;
        Ok(json_response(StatusCode::OK, balance_body(&summary), ""))
    })
    .await
}

/// `GET /accounts/{id}/history?limit&offset&minVersion`.
pub async fn get_history(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        let account_id = readable_account(deps, &req).await?;
        let config = &deps.app.config;
        let limit = query_u64(&req, "limit", 1, config.history_limit_max as u64)?
            .map_or(config.history_limit_default, |l| l as usize);
        let offset = query_u64(&req, "offset", 0, u64::from(u32::MAX))?.unwrap_or(0) as usize;
        let page = deps.app.queries.history(&account_id, offset, limit, min_version(&req)?).await?;
        Ok(json_response(StatusCode::OK, history_body(account_id.as_str(), &page.entries, offset, limit), ""))
    })
    .await
}

/// `POST /transfers`: 202 with `{transferId, status}` and a `Location`, the saga does the rest.
pub async fn start_transfer(deps: &Deps, req: Request) -> Response<Body> {
    respond_command(&req, Operation::StartTransfer, async {
        let principal = access::principal(&req)?;
        let key = idempotency_key(&req)?;
        let (dto, body) = decode_json::<TransferRequest>(&req)?;
        let (terms, requested_actor) = dto.into_terms(principal.id.as_str(), &key)?;
        // A customer's transfer out of an account it does not own is refused here, before anything
        // is reserved; an operator's is the saga's to decide.
        access::account(deps, &principal, Access::StartTransfer, &terms.source_account_id).await?;
        // The hash sees the amount as exact minor units and the transfer id the request names (chosen
        // or derived from the key), so equal money and an omitted-but-equal id are the same request.
        let transfer_id = terms.transfer_id.as_str();
        let fingerprint = RequestFingerprint::new(Operation::StartTransfer, Some(transfer_id), body)
            .exact_amount(terms.amount)
            .with_field("transferId", transfer_id);
        let ctx = client_context(&req, &principal, key, &fingerprint, requested_actor);
        let stored = deps.app.transfers.start(&ctx, &terms).await?;
        let accepted = stored.status == StatusCode::ACCEPTED.as_u16();
        if accepted && let Some(barrier) = &deps.barrier {
            barrier.settle().await;
        }
        let mut response = stored_response(&stored, &ctx.request_id);
        if accepted
            && let Ok(v) = http::HeaderValue::from_str(&format!("/api/transfers/{}", terms.transfer_id))
        {
            response.headers_mut().insert(http::header::LOCATION, v);
        }
        Ok(response)
    })
    .await
}

/// `GET /transfers/{id}?minVersion`: `PENDING`, `COMPLETED` or `FAILED` with the reason, legs and times.
pub async fn get_transfer(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        let principal = access::principal(&req)?;
        let raw = path_param(&req, "id").unwrap_or_default();
        let transfer_id = TransferId::parse(&raw).map_err(|e| ApiError::Validation(e.to_string()))?;
        access::transfer(deps, &principal, &transfer_id).await?;
        let status = deps.app.queries.transfer(&transfer_id, min_version(&req)?).await?;
        Ok(json_response(StatusCode::OK, transfer_body(&status), ""))
    })
    .await
}

/// `GET /health`: 200 when the store answers, the pipeline is not failing and no record is parked,
/// else 503 (`degraded`). Parked records (count and the age of the oldest) show under
/// `checks.parked`: a parked stream waits for an operator, so health stays degraded until it is
/// retried.
pub async fn health(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        let store = deps.app.stores.events.list_streams(StreamKind::Account.prefix(), None, 1).await;
        let store_ok = store.is_ok();
        let mut checks = serde_json::Map::new();
        checks.insert(
            "eventStore".into(),
            match &store {
                Ok(_) => serde_json::json!({"status": "ok"}),
                Err(e) => {
                    // Health is public: the cause goes to the log, never into the answer.
                    tracing::warn!(error = %e, "health: the event store is failing");
                    serde_json::json!({"status": "failing"})
                }
            },
        );
        let mut pipeline_ok = true;
        if let Some(p) = &deps.pipeline {
            let last_error = p.last_error();
            pipeline_ok = last_error.is_none();
            if let Some(e) = &last_error {
                tracing::warn!(error = %e, "health: the pipeline is failing");
            }
            checks.insert(
                "pipeline".into(),
                serde_json::json!({
                    "status": if pipeline_ok { "ok" } else { "failing" },
                    "lag": p.lag(),
                }),
            );
        }
        let parked = deps.app.parked.stats().await;
        let parked_ok = matches!(&parked, Ok(stats) if stats.count == 0);
        checks.insert(
            "parked".into(),
            match &parked {
                Ok(stats) => {
                    let oldest_age_secs =
                        stats.oldest_parked_at.map(|at| (deps.app.clock.now() - at).num_seconds().max(0));
                    serde_json::json!({
                        "status": if parked_ok { "ok" } else { "parked" },
                        "count": stats.count,
                        "oldestAgeSecs": oldest_age_secs,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "health: the parked records cannot be counted");
                    serde_json::json!({"status": "failing"})
                }
            },
        );
        let ok = store_ok && pipeline_ok && parked_ok;
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "service": deps.app.config.service_name,
            "time": time(deps.app.clock.now()),
            "checks": checks,
        });
        let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        Ok(json_response(status, body.to_string(), ""))
    })
    .await
}

/// The header that carries the admin token when `Authorization` holds a SigV4 signature.
pub const ADMIN_TOKEN_HEADER: &str = "x-admin-token";

/// The admin routes take a principal with `ledger:admin`, or the `ADMIN_TOKEN` bearer. An
/// authenticated principal without the scope and without a token is refused with 403; everyone else
/// without a valid token with 401.
fn authorize(deps: &Deps, req: &Request) -> Result<(), ApiError> {
    let principal = access::principal(req).ok();
    if principal.as_ref().is_some_and(|p| p.has(Scope::Admin)) {
        return Ok(());
    }
    // Behind a token or an IAM signature, `Authorization` carries that credential, so the admin
    // token can only travel in X-Admin-Token; otherwise `Authorization: Bearer` carries it too.
    let authenticated = principal.is_some_and(|p| p.via != Authentication::Open);
    match admin_token(deps, req, !authenticated) {
        Err(ApiError::Unauthorized(AdminToken::MISSING | AdminToken::DISABLED)) if authenticated => {
            Err(ApiError::Forbidden)
        }
        other => other,
    }
}

/// The messages of the admin token check.
struct AdminToken;

impl AdminToken {
    const MISSING: &'static str = "a bearer token is required";
    const DISABLED: &'static str = "admin routes are disabled: no ADMIN_TOKEN is configured";
}

/// Whether two byte strings of the same length are equal, in a time that does not depend on where
/// they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn admin_token(deps: &Deps, req: &Request, from_authorization: bool) -> Result<(), ApiError> {
    let Some(expected) = &deps.app.config.admin_token else {
        return Err(ApiError::Unauthorized(AdminToken::DISABLED));
    };
    let headers = req.headers();
    let presented = headers
        .get(ADMIN_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            from_authorization
                .then(|| headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
                .flatten()
                .and_then(corebank_auth::bearer)
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::Unauthorized(AdminToken::MISSING));
    };
    // Digests of equal length, compared in constant time: neither the token's length nor the
    // position of the first difference shows in the time taken.
    let (presented, expected) =
        (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.expose_secret().as_bytes()));
    if same_bytes(&presented, &expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("invalid bearer token"))
    }
}

/// `POST /admin/projections/accounts/{id}/rebuild`: synchronous, 200 with the rebuilt version.
pub async fn admin_rebuild_account(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        authorize(deps, &req)?;
        let account_id = path_account(&req)?;
        let version = deps.app.rebuilder.rebuild_account(&account_id).await?;
        let body = serde_json::json!({"accountId": account_id.as_str(), "version": version});
        Ok(json_response(StatusCode::OK, body.to_string(), ""))
    })
    .await
}

/// `POST /admin/projections/accounts/rebuild-all`: 202 with the job id; the job runs in the
/// background of this process.
pub async fn admin_rebuild_all(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        authorize(deps, &req)?;
        let job = deps.app.rebuilder.create_job().await?;
        let rebuilder = deps.app.rebuilder.clone();
        let location = format!("/api/admin/projections/rebuilds/{}", job.rebuild_id);
        let body = serde_json::json!({"rebuildId": job.rebuild_id, "status": job.status});
        tokio::spawn(async move {
            rebuilder.run_job(job).await;
        });
        let mut response = json_response(StatusCode::ACCEPTED, body.to_string(), "");
        if let Ok(v) = http::HeaderValue::from_str(&location) {
            response.headers_mut().insert(http::header::LOCATION, v);
        }
        Ok(response)
    })
    .await
}

/// `GET /admin/projections/rebuilds/{id}`.
pub async fn admin_rebuild_status(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        authorize(deps, &req)?;
        let id = path_param(&req, "id").unwrap_or_default();
        let job = deps.app.rebuilder.job(&id).await?;
        let body = serde_json::to_string(&job).unwrap_or_default();
        Ok(json_response(StatusCode::OK, body, ""))
    })
    .await
}

/// The most parked records one `GET /admin/parked` page holds, and its default.
pub const PARKED_LIST_LIMIT_MAX: u64 = corebank_store::PARKED_PAGE_MAX as u64;

/// The page size of `GET /admin/parked` when none is asked for.
pub const PARKED_LIST_LIMIT_DEFAULT: u64 = 100;

/// The longest stream key a retry accepts: a stream id, or `topic-partition@offset`.
pub const STREAM_KEY_CHARS_MAX: usize = 300;

fn consumer(raw: &str) -> Result<ParkedConsumer, ApiError> {
    ParkedConsumer::parse(raw)
        .ok_or_else(|| ApiError::Validation(format!("consumer must be projector or saga, not {raw:?}")))
}

/// A stream key as the consumers park them: letters, digits and `-_.@`, at most
/// [`STREAM_KEY_CHARS_MAX`] characters.
fn stream_key(raw: &str) -> Result<String, ApiError> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    if raw.is_empty() || raw.len() > STREAM_KEY_CHARS_MAX || !raw.chars().all(fits) {
        return Err(ApiError::Validation(format!(
            "stream must be 1 to {STREAM_KEY_CHARS_MAX} letters, digits or -_.@"
        )));
    }
    Ok(raw.to_owned())
}

/// `GET /admin/parked?consumer&limit&offset`: parked records, oldest first, with their envelope (or
/// undecodable value) and error.
pub async fn admin_list_parked(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        authorize(deps, &req)?;
        let consumer = query_param(&req, "consumer").map(|c| consumer(&c)).transpose()?;
        let limit = query_u64(&req, "limit", 1, PARKED_LIST_LIMIT_MAX)?.unwrap_or(PARKED_LIST_LIMIT_DEFAULT);
        let offset = query_u64(&req, "offset", 0, u64::from(u32::MAX))?.unwrap_or(0);
        let (limit, offset) = (limit as usize, offset as usize);
        let records = deps.app.parked.list(consumer, offset, limit).await?;
        let body = serde_json::json!({"records": records, "offset": offset, "limit": limit});
        Ok(json_response(StatusCode::OK, body.to_string(), ""))
    })
    .await
}

/// `POST /admin/parked/{consumer}/streams/{stream}/retry`: hands the stream's parked records, in
/// order, to the consumer's handler, removing each one handled and stopping at the first that still
/// fails. 200 with what was applied, what failed and how many remain; 404 when nothing is parked
/// under the stream; 503 when a record fails for a transient reason (retry later).
pub async fn admin_retry_parked(deps: &Deps, req: Request) -> Response<Body> {
    respond(&req, async {
        authorize(deps, &req)?;
        let consumer = consumer(&path_param(&req, "consumer").unwrap_or_default())?;
        let stream = stream_key(&path_param(&req, "stream").unwrap_or_default())?;
        let outcome = deps.app.parked.retry(consumer, &stream).await?;
        let body = serde_json::to_value(&outcome)
            .map_err(|e| ApiError::App(corebank_app::AppError::Corrupt(e.to_string())))?;
        Ok(json_response(StatusCode::OK, body.to_string(), ""))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::root_trace_id;

    #[test]
    fn the_trace_id_is_the_root_of_the_runtime_header() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        assert_eq!(root_trace_id(header), Some("1-5759e988-bd862e3fe1be46a994272793"));
        assert_eq!(
            root_trace_id("1-5759e988-bd862e3fe1be46a994272793"),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(root_trace_id("Parent=53995c3f42cd8ad8;Sampled=1"), None);
        assert_eq!(root_trace_id("Root=<script>"), None);
        assert_eq!(root_trace_id(""), None);
    }
}
