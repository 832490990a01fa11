//! The route table and an API-Gateway-shaped dispatcher for hosts that serve every route.
//!
//! In AWS, API Gateway matches the route and fills `pathParameters`; each function calls its one
//! handler. The local runner and the tests call [`dispatch`], which does the same matching here.

use std::collections::HashMap;

use http::Method;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::error::error_response;
use crate::handlers::{self, request_id};
use crate::{ApiError, Deps};

/// Every route of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /health`
    Health,
    /// `POST /accounts`
    CreateAccount,
    /// `POST /accounts/{id}/deposits`
    Deposit,
    /// `POST /accounts/{id}/withdrawals`
    Withdraw,
    /// `POST /accounts/{id}/freeze`
    Freeze,
    /// `POST /accounts/{id}/unfreeze`
    Unfreeze,
    /// `GET /accounts/{id}`
    GetAccount,
    /// `GET /accounts/{id}/balance`
    GetBalance,
    /// `GET /accounts/{id}/history`
    GetHistory,
    /// `POST /transfers`
    StartTransfer,
    /// `GET /transfers/{id}`
    GetTransfer,
    /// `POST /admin/projections/accounts/{id}/rebuild`
    AdminRebuildAccount,
    /// `POST /admin/projections/accounts/rebuild-all`
    AdminRebuildAll,
    /// `GET /admin/projections/rebuilds/{id}`
    AdminRebuildStatus,
    /// `GET /admin/parked`
    AdminListParked,
    /// `POST /admin/parked/{consumer}/streams/{stream}/retry`
    AdminRetryParked,
}

impl Route {
    /// Whether the route needs no principal (`GET /health`, the one public route).
    pub fn is_public(self) -> bool {
        matches!(self, Route::Health)
    }

    /// Whether the route is an admin route (`ledger:admin`, or the admin token).
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            Route::AdminRebuildAccount
                | Route::AdminRebuildAll
                | Route::AdminRebuildStatus
                | Route::AdminListParked
                | Route::AdminRetryParked
        )
    }
}

/// Method, resource path (as API Gateway writes it, without the stage or `/api`) and route.
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/health", Route::Health),
    ("POST", "/accounts", Route::CreateAccount),
    ("POST", "/accounts/{id}/deposits", Route::Deposit),
    ("POST", "/accounts/{id}/withdrawals", Route::Withdraw),
    ("POST", "/accounts/{id}/freeze", Route::Freeze),
    ("POST", "/accounts/{id}/unfreeze", Route::Unfreeze),
    ("GET", "/accounts/{id}", Route::GetAccount),
    ("GET", "/accounts/{id}/balance", Route::GetBalance),
    ("GET", "/accounts/{id}/history", Route::GetHistory),
    ("POST", "/transfers", Route::StartTransfer),
    ("GET", "/transfers/{id}", Route::GetTransfer),
    ("POST", "/admin/projections/accounts/rebuild-all", Route::AdminRebuildAll),
    ("POST", "/admin/projections/accounts/{id}/rebuild", Route::AdminRebuildAccount),
    ("GET", "/admin/projections/rebuilds/{id}", Route::AdminRebuildStatus),
    ("GET", "/admin/parked", Route::AdminListParked),
    ("POST", "/admin/parked/{consumer}/streams/{stream}/retry", Route::AdminRetryParked),
];

/// The outcome of matching a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A route and its path parameters.
    Found(Route, HashMap<String, String>),
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// No such path.
    NotFound,
}

fn match_pattern(pattern: &str, path: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(params),
            (Some(pp), Some(ss)) => {
                if let Some(name) = pp.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                    if ss.is_empty() {
                        return None;
                    }
                    params.insert(name.to_owned(), ss.to_owned());
                } else if pp != ss {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Matches a method and a resource path (`/accounts/acc-1`, no `/api`): the first entry of
/// [`ROUTES`] whose pattern fits. No path fits two patterns (a test holds the table to that), so the
/// order of the table never decides; `rebuild-all` cannot be taken for an account id because the
/// account's rebuild route has one segment more.
pub fn match_route(method: &Method, path: &str) -> Match {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let mut path_exists = false;
    for (m, pattern, route) in ROUTES {
        if let Some(params) = match_pattern(pattern, path) {
            if *m == method.as_str() {
                return Match::Found(*route, params);
            }
            path_exists = true;
        }
    }
    if path_exists { Match::MethodNotAllowed } else { Match::NotFound }
}

/// Calls the handler of a route.
pub async fn call(route: Route, deps: &Deps, req: Request) -> Response<Body> {
    match route {
        Route::Health => handlers::health(deps, req).await,
        Route::CreateAccount => handlers::create_account(deps, req).await,
        Route::Deposit => handlers::deposit(deps, req).await,
        Route::Withdraw => handlers::withdraw(deps, req).await,
        Route::Freeze => handlers::freeze(deps, req).await,
        Route::Unfreeze => handlers::unfreeze(deps, req).await,
        Route::GetAccount => handlers::get_account(deps, req).await,
        Route::GetBalance => handlers::get_balance(deps, req).await,
        Route::GetHistory => handlers::get_history(deps, req).await,
        Route::StartTransfer => handlers::start_transfer(deps, req).await,
        Route::GetTransfer => handlers::get_transfer(deps, req).await,
        Route::AdminRebuildAccount => handlers::admin_rebuild_account(deps, req).await,
        Route::AdminRebuildAll => handlers::admin_rebuild_all(deps, req).await,
        Route::AdminRebuildStatus => handlers::admin_rebuild_status(deps, req).await,
        Route::AdminListParked => handlers::admin_list_parked(deps, req).await,
        Route::AdminRetryParked => handlers::admin_retry_parked(deps, req).await,
    }
}

/// Routes a request whose path is relative to the API base (`/accounts/...`), filling the path
/// parameters as API Gateway would.
pub async fn dispatch(deps: &Deps, req: Request) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match match_route(req.method(), &path) {
        Match::Found(route, params) => call(route, deps, req.with_path_parameters(params)).await,
        Match::MethodNotAllowed => error_response(&ApiError::MethodNotAllowed, &request_id(&req)),
        Match::NotFound => error_response(&ApiError::NotFound, &request_id(&req)),
    }
}

/// Routes a request by the resource API Gateway matched (`requestContext.resourcePath`, e.g.
/// `/accounts/{id}/deposits`), for a function that serves several routes; falls back to the path.
pub async fn dispatch_resource(deps: &Deps, req: Request) -> Response<Body> {
    let resource = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) => ctx.resource_path.clone(),
        _ => None,
    };
    let found = resource.as_deref().and_then(|resource| {
        ROUTES.iter().find(|(m, pattern, _)| *m == req.method().as_str() && *pattern == resource)
    });
    match found {
        Some((_, _, route)) => call(*route, deps, req).await,
        None => dispatch(deps, req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_path_fits_two_patterns_of_the_table() {
        for (_, pattern, route) in ROUTES {
            let path = pattern.replace("{id}", "rebuild-all");
            let fitting: Vec<Route> = ROUTES
                .iter()
                .filter(|(_, p, _)| match_pattern(p, &path).is_some())
                .map(|(_, _, r)| *r)
                .collect();
            let same_path: Vec<Route> =
                ROUTES.iter().filter(|(_, p, _)| p == pattern).map(|(_, _, r)| *r).collect();
            assert_eq!(fitting, same_path, "{route:?}: {path} fits {fitting:?}");
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(
            match_route(&Method::POST, "/admin/projections/accounts/rebuild-all"),
            Match::Found(Route::AdminRebuildAll, HashMap::new())
        );
    }

    #[test]
    fn paths_match_with_parameters_and_trailing_slashes() {
        let Match::Found(route, params) = match_route(&Method::GET, "/accounts/acc-1/balance/") else {
            panic!("no match");
        };
        assert_eq!(route, Route::GetBalance);
        assert_eq!(params.get("id").map(String::as_str), Some("acc-1"));
    }

    #[test]
    fn a_known_path_with_another_method_is_not_allowed_and_unknown_paths_are_not_found() {
        assert_eq!(match_route(&Method::DELETE, "/accounts/acc-1"), Match::MethodNotAllowed);
        assert_eq!(match_route(&Method::GET, "/nope"), Match::NotFound);
        assert_eq!(match_route(&Method::GET, "/accounts//balance"), Match::NotFound);
    }
}
