//! The admin API under `/admin/`: tenants, credentials, quotas and settings, usage, sessions
//! across tenants, forced closes, and the audit log. It takes only the admin credential
//! (`GATEWAY_ADMIN_TOKENS`), never a tenant token; every change is audited with who made it.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use faceswap_wire::gateway::SessionView;
use faceswap_wire::{EmptyEnvelope, Envelope};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::auth::admin::identify;
use crate::domain::ids::{CredentialId, SessionId, TenantId};
use crate::service::live::view;
use crate::service::tenants::{
    self, CreatedCredential, CreatedTenant, TenantChanges, TenantSettings,
};
use crate::service::{self, admin};
use crate::store;
use crate::store::credentials::Kind;

/// The authenticated admin.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Who, as named in `GATEWAY_ADMIN_TOKENS`.
    pub name: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.admins.is_empty() {
            return Err(ApiError::AdminAuth(
                "the admin API is disabled: set GATEWAY_ADMIN_TOKENS",
            ));
        }
        let value = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        let token = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
            _ => "",
        };
        if token.is_empty() {
            return Err(ApiError::AuthMissing);
        }
        identify(&state.admins, token)
            .map(|t| Admin {
                name: t.name.clone(),
            })
            .ok_or(ApiError::AdminAuth("invalid admin credential"))
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    /// `ten_…`.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Concurrent session limit.
    pub max_concurrent_sessions: i32,
    /// Session-seconds budget, if any.
    pub session_seconds_budget: Option<i64>,
    /// Idle timeout, seconds.
    pub idle_timeout_seconds: i32,
    /// Longest session, seconds.
    pub max_session_seconds: i32,
    /// Sustained requests per second.
    pub requests_per_second: i32,
    /// Requests allowed at once after a quiet period.
    pub burst: i32,
    /// Creation time (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

fn tenant_view(t: &store::tenants::TenantRow) -> TenantView {
    TenantView {
        tenant_id: TenantId(t.tenant_id).to_string(),
        name: t.name.clone(),
        status: t.status.clone(),
        max_concurrent_sessions: t.max_concurrent_sessions,
        session_seconds_budget: t.session_seconds_budget,
        idle_timeout_seconds: t.idle_timeout_seconds,
        max_session_seconds: t.max_session_seconds,
        requests_per_second: t.requests_per_second,
        burst: t.burst,
        created_at: t.created_at,
    }
}

fn parse_tenant(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::NotFound("tenant"))
}

/// A new tenant; unset limits take the defaults.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewTenant {
    /// Display name.
    pub name: String,
    /// Concurrent session limit (default 5).
    pub max_concurrent_sessions: Option<i32>,
    /// Session-seconds budget (none by default).
    pub session_seconds: Option<i64>,
    /// Idle timeout, seconds (default 300).
    pub idle_timeout_seconds: Option<i32>,
    /// Longest session, seconds (default 14400).
    pub max_session_seconds: Option<i32>,
    /// Sustained requests per second (default 100).
    pub requests_per_second: Option<i32>,
    /// Requests allowed at once after a quiet period (default 200).
    pub burst: Option<i32>,
}

/// Create a tenant with client credentials (the secret is shown only here).
#[utoipa::path(post, path = "/admin/tenants", tag = "admin", request_body = NewTenant,
    security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<CreatedTenant>), (status = 400, description = "1003: invalid input", body = EmptyEnvelope), (status = 401, description = "1101 / 1102: missing or wrong admin credential", body = EmptyEnvelope)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    admin: Admin,
    JsonBody(req): JsonBody<NewTenant>,
) -> Result<Json<Envelope<CreatedTenant>>, ApiError> {
    let mut settings = TenantSettings::named(&req.name);
    settings.max_concurrent_sessions = req
        .max_concurrent_sessions
        .unwrap_or(settings.max_concurrent_sessions);
    settings.session_seconds_budget = req.session_seconds;
    settings.idle_timeout_seconds = req
        .idle_timeout_seconds
        .unwrap_or(settings.idle_timeout_seconds);
    settings.max_session_seconds = req
        .max_session_seconds
        .unwrap_or(settings.max_session_seconds);
    settings.requests_per_second = req
        .requests_per_second
        .unwrap_or(settings.requests_per_second);
    settings.burst = req.burst.unwrap_or(settings.burst);
    let created = tenants::create(&state.db, &settings, &admin.name).await?;
    Ok(Json(Envelope::ok(created)))
}

/// Every tenant.
#[utoipa::path(get, path = "/admin/tenants", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<Vec<TenantView>>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Envelope<Vec<TenantView>>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let rows = store::admin::tenants(&mut conn).await?;
    Ok(Json(Envelope::ok(rows.iter().map(tenant_view).collect())))
}

/// One tenant.
#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`ten_…`")),
    responses((status = 200, description = "Done", body = Envelope<TenantView>), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<TenantView>>, ApiError> {
    let tenant = parse_tenant(&id)?;
    let mut conn = state.db.acquire().await?;
    let row = store::tenants::find(&mut conn, tenant.0)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    Ok(Json(Envelope::ok(tenant_view(&row))))
}

/// Changes to a tenant's quota and settings; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TenantPatch {
    /// Concurrent session limit.
    pub max_concurrent_sessions: Option<i32>,
    /// Session-seconds budget; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub session_seconds: Option<Option<i64>>,
    /// Idle timeout, seconds.
    pub idle_timeout_seconds: Option<i32>,
    /// Longest session, seconds.
    pub max_session_seconds: Option<i32>,
    /// Sustained requests per second.
    pub requests_per_second: Option<i32>,
    /// Requests allowed at once after a quiet period.
    pub burst: Option<i32>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Change a tenant's quota and session settings.
#[utoipa::path(patch, path = "/admin/tenants/{id}", tag = "admin", request_body = TenantPatch, security(("admin" = [])),
    params(("id" = String, Path, description = "`ten_…`")),
    responses((status = 200, description = "Done", body = Envelope<TenantView>), (status = 400, description = "1003: invalid input", body = EmptyEnvelope), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<TenantPatch>,
) -> Result<Json<Envelope<TenantView>>, ApiError> {
    let tenant = parse_tenant(&id)?;
    let changes = TenantChanges {
        max_concurrent_sessions: patch.max_concurrent_sessions,
        session_seconds_budget: patch.session_seconds,
        idle_timeout_seconds: patch.idle_timeout_seconds,
        max_session_seconds: patch.max_session_seconds,
        requests_per_second: patch.requests_per_second,
        burst: patch.burst,
    };
    let row = tenants::update(&state.db, tenant, &changes, &admin.name).await?;
    // This replica applies the new rate now; the others on their next reload.
    if let Ok(rate) = crate::domain::rate::Rate::new(row.requests_per_second, row.burst) {
        state.rate_limits.rates.set(row.tenant_id, rate);
    }
    Ok(Json(Envelope::ok(tenant_view(&row))))
}

/// What a suspension did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Suspended {
    /// The tenant.
    pub tenant_id: String,
    /// Open sessions closed now (failed closes are retried by the reaper).
    pub sessions_closed: usize,
}

/// Suspend a tenant: its calls get 4003 and its open sessions are closed.
#[utoipa::path(post, path = "/admin/tenants/{id}/suspend", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`ten_…`")),
    responses((status = 200, description = "Done", body = Envelope<Suspended>), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Suspended>>, ApiError> {
    let tenant = parse_tenant(&id)?;
    let sessions_closed = admin::suspend(&state, tenant, &admin.name).await?;
    Ok(Json(Envelope::ok(Suspended {
        tenant_id: tenant.to_string(),
        sessions_closed,
    })))
}

/// Let a suspended tenant call again.
#[utoipa::path(post, path = "/admin/tenants/{id}/resume", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`ten_…`")),
    responses((status = 200, description = "Done", body = EmptyEnvelope), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn resume_tenant(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<EmptyEnvelope>, ApiError> {
    admin::resume(&state, parse_tenant(&id)?, &admin.name).await?;
    Ok(Json(EmptyEnvelope::new(
        faceswap_wire::Code::SUCCESS,
        "resumed",
    )))
}

/// A credential without its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// `cred_…`.
    pub credential_id: String,
    /// `client` or `api_key`.
    pub kind: String,
    /// The client id, or the API key's id.
    pub public_id: String,
    /// Issued.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Revoked, if so.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
}

fn credential_view(c: &store::admin::CredentialInfo) -> CredentialView {
    CredentialView {
        credential_id: CredentialId(c.credential_id).to_string(),
        kind: c.kind.clone(),
        public_id: c.public_id.clone(),
        created_at: c.created_at,
        revoked_at: c.revoked_at,
    }
}

/// A tenant's credentials.
#[utoipa::path(get, path = "/admin/tenants/{id}/credentials", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`ten_…`")),
    responses((status = 200, description = "Done", body = Envelope<Vec<CredentialView>>), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Vec<CredentialView>>>, ApiError> {
    let tenant = parse_tenant(&id)?;
    let mut conn = state.db.acquire().await?;
    store::tenants::find(&mut conn, tenant.0)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let rows = store::admin::credentials_of(&mut conn, tenant.0).await?;
    Ok(Json(Envelope::ok(
        rows.iter().map(credential_view).collect(),
    )))
}

/// What kind of credential to issue.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewCredential {
    /// `client` (client id and secret) or `api_key`.
    pub kind: String,
}

fn parse_kind(kind: &str) -> Result<Kind, ApiError> {
    match kind {
        "client" => Ok(Kind::Client),
        "api_key" => Ok(Kind::ApiKey),
        other => Err(ApiError::BadRequest(format!(
            "kind must be `client` or `api_key`, got `{other}`"
        ))),
    }
}

/// Issue a credential (the secret is shown only here).
#[utoipa::path(post, path = "/admin/tenants/{id}/credentials", tag = "admin", request_body = NewCredential, security(("admin" = [])),
    params(("id" = String, Path, description = "`ten_…`")),
    responses((status = 200, description = "Done", body = Envelope<CreatedCredential>), (status = 400, description = "1003: invalid input", body = EmptyEnvelope), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn issue_credential(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<NewCredential>,
) -> Result<Json<Envelope<CreatedCredential>>, ApiError> {
    let tenant = parse_tenant(&id)?;
    let created =
        tenants::issue_credential(&state.db, tenant, parse_kind(&req.kind)?, None, &admin.name)
            .await?;
    Ok(Json(Envelope::ok(created)))
}

async fn find_credential(
    state: &AppState,
    raw: &str,
) -> Result<store::admin::CredentialInfo, ApiError> {
    let id = CredentialId::parse(raw).map_err(|_| ApiError::NotFound("credential"))?;
    let mut conn = state.db.acquire().await?;
    store::admin::credential(&mut conn, id.0)
        .await?
        .ok_or(ApiError::NotFound("credential"))
}

/// Revoke a credential: its tokens and key stop working on every replica within seconds.
#[utoipa::path(post, path = "/admin/credentials/{id}/revoke", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`cred_…`")),
    responses((status = 200, description = "Done", body = Envelope<CredentialView>), (status = 404, description = "4004: not found", body = EmptyEnvelope)))]
pub async fn revoke_credential(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<CredentialView>>, ApiError> {
    let found = find_credential(&state, &id).await?;
    let info =
        tenants::revoke_credential(&state.db, CredentialId(found.credential_id), &admin.name)
            .await?;
    state.revocations.refresh(&state.db).await?;
    Ok(Json(Envelope::ok(credential_view(&info))))
}

/// Rotate a credential: a new one of the same kind is issued and the old one revoked, at once.
#[utoipa::path(post, path = "/admin/credentials/{id}/rotate", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`cred_…`")),
    responses((status = 200, description = "Done", body = Envelope<CreatedCredential>), (status = 404, description = "4004: not found", body = EmptyEnvelope), (status = 409, description = "4009: not in a state for this", body = EmptyEnvelope)))]
pub async fn rotate_credential(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<CreatedCredential>>, ApiError> {
    let found = find_credential(&state, &id).await?;
    if found.revoked_at.is_some() {
        return Err(ApiError::Conflict(
            "the credential is already revoked".into(),
        ));
    }
    let kind = parse_kind(&found.kind)?;
    let created = tenants::issue_credential(
        &state.db,
        TenantId(found.tenant_id),
        kind,
        Some(CredentialId(found.credential_id)),
        &admin.name,
    )
    .await?;
    state.revocations.refresh(&state.db).await?;
    Ok(Json(Envelope::ok(created)))
}

/// The period of a usage report.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Start (RFC 3339), inclusive; default 30 days ago.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339), exclusive; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
}

/// One tenant's usage in a period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageLine {
    /// `ten_…`.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Sessions charged in the period.
    pub sessions: i64,
    /// Session-seconds charged in the period.
    pub session_seconds: i64,
}

/// Usage per tenant in a period (charges are recorded when sessions close).
#[utoipa::path(get, path = "/admin/usage", tag = "admin", params(UsageParams), security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<Vec<UsageLine>>), (status = 400, description = "1003: invalid input", body = EmptyEnvelope)))]
pub async fn usage_report(
    State(state): State<AppState>,
    _admin: Admin,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<Envelope<Vec<UsageLine>>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let to = p.to.unwrap_or_else(Utc::now);
    let from = p.from.unwrap_or(to - chrono::Duration::days(30));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let mut conn = state.db.acquire().await?;
    let rows = store::admin::usage(&mut conn, from, to).await?;
    Ok(Json(Envelope::ok(
        rows.into_iter()
            .map(|r| UsageLine {
                tenant_id: TenantId(r.tenant_id).to_string(),
                name: r.name,
                sessions: r.sessions,
                session_seconds: r.seconds,
            })
            .collect(),
    )))
}

/// Filters of the cross-tenant session list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminSessionParams {
    /// Only this tenant's sessions.
    pub tenant_id: Option<String>,
    /// Only sessions in this state.
    pub state: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
}

/// A session with its tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminSessionView {
    /// `ten_…`.
    pub tenant_id: String,
    /// The session as its tenant sees it.
    #[serde(flatten)]
    pub session: SessionView,
}

/// Sessions across tenants, newest first.
#[utoipa::path(get, path = "/admin/sessions", tag = "admin", params(AdminSessionParams), security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<Vec<AdminSessionView>>), (status = 400, description = "1003: invalid input", body = EmptyEnvelope)))]
pub async fn admin_list_sessions(
    State(state): State<AppState>,
    _admin: Admin,
    params: Result<Query<AdminSessionParams>, QueryRejection>,
) -> Result<Json<Envelope<Vec<AdminSessionView>>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = match p.tenant_id.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            TenantId::parse(t)
                .map_err(|_| ApiError::BadRequest("tenant_id is not valid".into()))?
                .0,
        ),
    };
    if let Some(s) = &p.state
        && crate::domain::session::SessionState::parse(s).is_none()
    {
        return Err(ApiError::BadRequest(format!("unknown state `{s}`")));
    }
    let before = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            SessionId::parse(c)
                .map_err(|_| ApiError::BadRequest("cursor is not valid".into()))?
                .0,
        ),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=service::live::MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {}",
            service::live::MAX_PAGE
        )));
    }
    let mut conn = state.db.acquire().await?;
    let rows = store::admin::sessions(&mut conn, tenant, p.state.as_deref(), before, limit).await?;
    Ok(Json(Envelope::ok(
        rows.iter()
            .map(|r| AdminSessionView {
                tenant_id: TenantId(r.tenant_id).to_string(),
                session: view(r),
            })
            .collect(),
    )))
}

/// Close any tenant's session (reason `admin`).
#[utoipa::path(post, path = "/admin/sessions/{id}/close", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "`ses_…`")),
    responses((status = 200, description = "Done", body = Envelope<SessionView>), (status = 404, description = "4004: not found", body = EmptyEnvelope), (status = 409, description = "4009: not in a state for this", body = EmptyEnvelope), (status = 502, description = "5002: the upstream close failed; retried", body = EmptyEnvelope)))]
pub async fn admin_close_session(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<SessionView>>, ApiError> {
    let id = SessionId::parse(&id).map_err(|_| ApiError::NotFound("session"))?;
    let row = admin::force_close(&state, id, &admin.name).await?;
    Ok(Json(Envelope::ok(view(&row))))
}

/// An audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Who.
    pub actor: String,
    /// What (`tenant.create`, `credential.revoke`, …).
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Parameters (never secrets).
    pub details: serde_json::Value,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
}

/// The newest audit entries (at most 200).
#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<Vec<AuditEntry>>)))]
pub async fn audit_log(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Envelope<Vec<AuditEntry>>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let rows = store::admin::recent_audit(&mut conn, 200).await?;
    Ok(Json(Envelope::ok(
        rows.into_iter()
            .map(|r| AuditEntry {
                actor: r.actor,
                action: r.action,
                target: r.target,
                details: r.details.0,
                at: r.created_at,
            })
            .collect(),
    )))
}
