//! The control API: Toxiproxy's HTTP API (`/proxies`, `/proxies/{name}/toxics`,
//! `/reset`) over a set of named proxies, so drills in other processes, and anyone
//! used to Toxiproxy's clients and curl lines, can create proxies and inject faults.
//!
//! Bodies and answers use Toxiproxy's JSON shapes; errors are
//! `{"error": message, "status": code}` with 404 for an unknown proxy or toxic, 400
//! for a bad body or toxic, 409 for a name or address already taken.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::{Proxy, ProxyError, Toxic};

/// A registry of named proxies and the HTTP API that drives it. Clones share it.
#[derive(Clone, Default)]
pub struct ControlApi {
    // A tokio mutex because creating a proxy binds its listener under the lock, which
    // is what makes a duplicate name a clean 409 instead of a race.
    proxies: Arc<Mutex<BTreeMap<String, Proxy>>>,
}

/// An API error: a status and a message for the operator.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn proxy_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("proxy `{name}` not found"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ProxyError> for ApiError {
    fn from(error: ProxyError) -> Self {
        let status = match &error {
            ProxyError::Bind { source, .. } => match source.kind() {
                io::ErrorKind::AddrInUse => StatusCode::CONFLICT,
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::PermissionDenied => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ProxyError::InvalidToxic(_) => StatusCode::BAD_REQUEST,
            ProxyError::ToxicExists(_) | ProxyError::Stopped => StatusCode::CONFLICT,
            ProxyError::ToxicNotFound(_) => StatusCode::NOT_FOUND,
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "status": self.status.as_u16() });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The body of `POST /proxies`. `listen` defaults to `127.0.0.1:0` and `enabled` to
/// true, as in Toxiproxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    pub name: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    pub upstream: String,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_listen() -> String {
    "127.0.0.1:0".into()
}

fn default_enabled() -> bool {
    true
}

impl ControlApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a proxy and registers it under `spec.name`.
    pub async fn create_proxy(&self, spec: ProxySpec) -> Result<Proxy, ApiError> {
        if spec.name.is_empty() || spec.name.contains('/') {
            return Err(ApiError::bad_request(
                "a proxy name must be non-empty and contain no `/`",
            ));
        }
        if spec.upstream.is_empty() {
            return Err(ApiError::bad_request("a proxy needs an upstream `host:port`"));
        }
        let listen = tokio::net::lookup_host(spec.listen.as_str())
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ApiError::bad_request(format!("listen address `{}` is not a host:port", spec.listen)))?;
        let mut proxies = self.proxies.lock().await;
        if proxies.contains_key(&spec.name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("proxy `{}` already exists", spec.name),
            ));
        }
        let proxy = Proxy::start(listen, spec.upstream).await?;
        if !spec.enabled {
            proxy.set_enabled(false).await?;
        }
        proxies.insert(spec.name, proxy.clone());
        Ok(proxy)
    }

    pub async fn proxy(&self, name: &str) -> Option<Proxy> {
        self.proxies.lock().await.get(name).cloned()
    }

    /// Toxiproxy's reset: every proxy enabled, every toxic removed. A proxy that
    /// cannot listen again does not stop the others from being reset; the first such
    /// error is returned.
    pub async fn reset(&self) -> Result<(), ApiError> {
        let proxies: Vec<Proxy> = self.proxies.lock().await.values().cloned().collect();
        let mut first_error = None;
        for proxy in proxies {
            proxy.remove_all_toxics();
            if let Err(error) = proxy.set_enabled(true).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// Stops and forgets every proxy.
    pub async fn stop_all(&self) {
        let proxies = std::mem::take(&mut *self.proxies.lock().await);
        for proxy in proxies.values() {
            proxy.stop().await;
        }
    }

    /// Updates answer to both POST and PATCH, as in recent Toxiproxy versions.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/proxies", get(list_proxies).post(create_proxy))
            .route(
                "/proxies/{proxy}",
                get(show_proxy)
                    .post(update_proxy)
                    .patch(update_proxy)
                    .delete(delete_proxy),
            )
            .route("/proxies/{proxy}/stats", get(show_stats))
            .route("/proxies/{proxy}/record", get(show_record))
            .route("/proxies/{proxy}/toxics", get(list_toxics).post(add_toxic))
            .route(
                "/proxies/{proxy}/toxics/{toxic}",
                get(show_toxic)
                    .post(update_toxic)
                    .patch(update_toxic)
                    .delete(remove_toxic),
            )
            .route("/reset", post(reset))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
            .with_state(self.clone())
    }

    /// Serves the API on `listener` until `shutdown` completes. The proxies keep
    /// running; [`ControlApi::stop_all`] stops them.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    async fn get(&self, name: &str) -> Result<Proxy, ApiError> {
        self.proxy(name).await.ok_or_else(|| ApiError::proxy_not_found(name))
    }
}

/// Toxiproxy's proxy shape: `{name, listen, upstream, enabled, toxics}`.
fn proxy_json(name: &str, proxy: &Proxy) -> Value {
    json!({
        "name": name,
        "listen": proxy.local_addr().to_string(),
        "upstream": proxy.upstream(),
        "enabled": proxy.is_enabled(),
        "toxics": proxy.toxics().iter().map(Toxic::to_json).collect::<Vec<_>>(),
    })
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

type ApiResult = Result<Response, ApiError>;

async fn list_proxies(State(api): State<ControlApi>) -> ApiResult {
    let proxies = api.proxies.lock().await;
    let all: Map<String, Value> = proxies
        .iter()
        .map(|(name, proxy)| (name.clone(), proxy_json(name, proxy)))
        .collect();
    Ok(axum::Json(all).into_response())
}

async fn create_proxy(State(api): State<ControlApi>, body: Bytes) -> ApiResult {
    let spec: ProxySpec = parse_body(&body)?;
    let name = spec.name.clone();
    let proxy = api.create_proxy(spec).await?;
    Ok((StatusCode::CREATED, axum::Json(proxy_json(&name, &proxy))).into_response())
}

async fn show_proxy(State(api): State<ControlApi>, Path(name): Path<String>) -> ApiResult {
    let proxy = api.get(&name).await?;
    Ok(axum::Json(proxy_json(&name, &proxy)).into_response())
}

/// Toxiproxy clients send the whole proxy back with `enabled` flipped, so the fields
/// that cannot change here are accepted when they are unchanged.
async fn update_proxy(State(api): State<ControlApi>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ProxyUpdate {
        name: Option<String>,
        listen: Option<String>,
        upstream: Option<String>,
        enabled: Option<bool>,
        // Toxics are managed under `/toxics`; Toxiproxy ignores them here too.
        #[serde(rename = "toxics")]
        _toxics: Option<serde::de::IgnoredAny>,
    }
    let update: ProxyUpdate = parse_body(&body)?;
    let proxy = api.get(&name).await?;
    if update.name.is_some_and(|given| given != name) {
        return Err(ApiError::bad_request(
            "a proxy cannot be renamed; delete it and create another",
        ));
    }
    if let Some(listen) = update.listen
        && listen != proxy.local_addr().to_string()
    {
        return Err(ApiError::bad_request(
            "a proxy's listen address cannot change; delete it and create another",
        ));
    }
    if let Some(upstream) = update.upstream {
        if upstream.is_empty() {
            return Err(ApiError::bad_request("a proxy needs an upstream `host:port`"));
        }
        proxy.set_upstream(upstream);
    }
    if let Some(enabled) = update.enabled {
        proxy.set_enabled(enabled).await?;
    }
    Ok(axum::Json(proxy_json(&name, &proxy)).into_response())
}

async fn delete_proxy(State(api): State<ControlApi>, Path(name): Path<String>) -> ApiResult {
    let removed = api.proxies.lock().await.remove(&name);
    let proxy = removed.ok_or_else(|| ApiError::proxy_not_found(&name))?;
    proxy.stop().await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn show_stats(State(api): State<ControlApi>, Path(name): Path<String>) -> ApiResult {
    let proxy = api.get(&name).await?;
    Ok(axum::Json(proxy.stats()).into_response())
}

async fn list_toxics(State(api): State<ControlApi>, Path(name): Path<String>) -> ApiResult {
    let proxy = api.get(&name).await?;
    let toxics: Vec<Value> = proxy.toxics().iter().map(Toxic::to_json).collect();
    Ok(axum::Json(toxics).into_response())
}

/// Besides Toxiproxy's fields, the body may carry `time_limit_ms`: the proxy removes
/// the toxic by itself when it runs out, whatever becomes of the caller.
async fn add_toxic(State(api): State<ControlApi>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let proxy = api.get(&name).await?;
    let mut body: Value = parse_body(&body)?;
    let limit = match body.as_object_mut().and_then(|fields| fields.remove("time_limit_ms")) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| ApiError::bad_request("`time_limit_ms` must be a positive integer"))?,
        ),
    };
    let toxic = Toxic::from_json(body)?;
    match limit {
        Some(limit) => proxy.add_toxic_for(toxic.clone(), limit)?,
        None => proxy.add_toxic(toxic.clone())?,
    }
    Ok(axum::Json(toxic.to_json()).into_response())
}

/// The faults this proxy applied and what they affected.
async fn show_record(State(api): State<ControlApi>, Path(name): Path<String>) -> ApiResult {
    let proxy = api.get(&name).await?;
    Ok(axum::Json(proxy.record()).into_response())
}

async fn show_toxic(State(api): State<ControlApi>, Path((name, toxic)): Path<(String, String)>) -> ApiResult {
    let proxy = api.get(&name).await?;
    let toxic = proxy.toxic(&toxic).ok_or(ProxyError::ToxicNotFound(toxic))?;
    Ok(axum::Json(toxic.to_json()).into_response())
}

async fn update_toxic(
    State(api): State<ControlApi>,
    Path((name, toxic)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let proxy = api.get(&name).await?;
    let current = proxy.toxic(&toxic).ok_or(ProxyError::ToxicNotFound(toxic))?;
    let updated = current.updated_from_json(parse_body(&body)?)?;
    proxy.update_toxic(updated.clone())?;
    Ok(axum::Json(updated.to_json()).into_response())
}

async fn remove_toxic(State(api): State<ControlApi>, Path((name, toxic)): Path<(String, String)>) -> ApiResult {
    let proxy = api.get(&name).await?;
    proxy.remove_toxic(&toxic)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn reset(State(api): State<ControlApi>) -> ApiResult {
    api.reset().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
