//! Answers every tenant route can give, added to the OpenAPI document in one place rather than
//! repeated on each handler: the rate limit (429/1005), the upstream breaker and concurrency
//! bound (503/5005/5006, on routes that call the upstream), and `Idempotency-Key` on the
//! routes that take it.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, OpenApi, RefOr, Required, Response, Type};

use crate::domain::idempotency::{MAX_KEY_LEN, ROUTES};

const RATE_LIMITED: &str =
    "1005: the tenant's request rate is exceeded; retry after `Retry-After` seconds";
const UPSTREAM_PAUSED: &str = "5005: the upstream has been failing and calls to it are paused; 5006: too many upstream calls in flight (both with `Retry-After`)";
const KEY_REUSED: &str = "1003: the Idempotency-Key was already used with a different request";
const KEY_RUNNING: &str =
    "4009: a request with this Idempotency-Key is still in progress (`Retry-After`)";

/// Adds the shared answers and the `Idempotency-Key` parameter.
pub struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            if path.starts_with("/admin/") {
                continue;
            }
            let idempotent_route = ROUTES.contains(&path.as_str());
            if let Some(op) = item.post.as_mut() {
                add_common(op);
                if idempotent_route {
                    add_idempotency(op);
                }
            }
            for op in [
                item.get.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                add_common(op);
            }
        }
    }
}

/// Adds `text` to the answer documented for `status`, creating it (with the schema of the
/// route's 401 answer, which every tenant route documents) when missing.
fn document(op: &mut Operation, status: &str, text: &str) {
    let responses = &mut op.responses.responses;
    if let Some(RefOr::T(existing)) = responses.get_mut(status) {
        if !existing.description.contains(text) {
            existing.description = format!("{}; {text}", existing.description);
        }
        return;
    }
    let content = match responses.get("401") {
        Some(RefOr::T(unauthorized)) => unauthorized.content.clone(),
        _ => Default::default(),
    };
    let mut answer = Response::new(text);
    answer.content = content;
    responses.insert(status.to_owned(), RefOr::T(answer));
}

fn add_common(op: &mut Operation) {
    // Routes without a tenant credential (probes, keys, docs) document no 401.
    if !op.responses.responses.contains_key("401") {
        return;
    }
    document(op, "429", RATE_LIMITED);
    if op.responses.responses.contains_key("502") {
        document(op, "503", UPSTREAM_PAUSED);
    }
}

fn add_idempotency(op: &mut Operation) {
    let param = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: a request repeated with the same key and body within 24 h gets \
             the first successful answer again (header `Idempotent-Replayed: true`) and runs \
             nothing twice. Failed answers are not kept, so a retry after one runs again.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_KEY_LEN)),
        ))
        .build();
    op.parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(param));
    document(op, "409", KEY_RUNNING);
    document(op, "422", KEY_REUSED);
}
