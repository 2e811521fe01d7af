//! The client against `openapi/openapi.json`: every tenant route is covered, and the bodies
//! the client sends and the answers it reads have the document's properties.

use std::collections::BTreeSet;

use faceswap_client::faceswap_wire::{
    CreateRequest, DetectRequest, SessionIdRequest, SourceImage, TokenRequest, UpdateRequest,
};
use faceswap_client::{
    CreateWebhookRequest, CreatedWebhookEndpoint, DeletedWebhookEndpoint, ListResources,
    ListSessions, ROUTES, ResourceList, ResourcePage, ResourceView, WebhookEndpointList,
    WebhookEndpointView,
};
use serde::Serialize;
use serde_json::Value;

fn document() -> Value {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../openapi/openapi.json"
    ));
    serde_json::from_str(text).unwrap()
}

/// Paths that are not the tenant API.
fn is_tenant_path(path: &str) -> bool {
    ![
        "/admin",
        "/livez",
        "/readyz",
        "/.well-known",
        "/metrics",
        "/demo",
        "/docs",
        "/openapi",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

#[test]
fn the_client_covers_exactly_the_tenant_routes_of_the_document() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !is_tenant_path(path) {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let covered: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "tenant routes the client does not call: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "client routes the document lacks: {stale:?}"
    );
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

fn names(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Object(map) => map.keys().cloned().collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect(),
        _ => BTreeSet::new(),
    }
}

fn keys(value: &impl Serialize) -> BTreeSet<String> {
    names(&serde_json::to_value(value).unwrap())
}

/// `minimal` (every optional field unset) serialises the document's required properties
/// at least, and `full` (every field set) only properties the document has.
#[track_caller]
fn check(doc: &Value, name: &str, minimal: &impl Serialize, full: &impl Serialize) {
    let s = schema(doc, name);
    let required = names(&s["required"]);
    let properties = names(&s["properties"]);
    let min = keys(minimal);
    assert!(
        required.is_subset(&min),
        "{name}: required {required:?}, the client sends {min:?}"
    );
    let all = keys(full);
    assert_eq!(
        all, properties,
        "{name}: the client's fields and the document's"
    );
}

#[test]
fn the_bodies_the_client_sends_have_the_documents_properties() {
    let doc = document();
    let face = SourceImage {
        path: "p".into(),
        opts: "1,2:3,4:5,6:7,8".into(),
    };
    let token = TokenRequest::default();
    check(&doc, "TokenRequest", &token, &token);
    let detect = DetectRequest {
        single_face: true,
        image_url: Some("u".into()),
        img: Some("i".into()),
        return_face_urls: true,
    };
    check(&doc, "DetectRequest", &DetectRequest::default(), &detect);
    let create = CreateRequest {
        source_image: vec![face.clone()],
    };
    check(&doc, "CreateRequest", &create, &create);
    check(&doc, "SourceImage", &face, &face);
    let update = UpdateRequest {
        id: "ses_1".into(),
        source_image: vec![face],
    };
    check(&doc, "UpdateRequest", &update, &update);
    let id = SessionIdRequest { id: "ses_1".into() };
    check(&doc, "SessionIdRequest", &id, &id);
    let hook = CreateWebhookRequest { url: "u".into() };
    check(&doc, "CreateWebhookRequest", &hook, &hook);
}

#[test]
fn the_answers_the_client_reads_have_the_documents_properties() {
    let doc = document();
    let resource = ResourceView {
        resource_id: "res_1".into(),
        session_id: Some("ses_1".into()),
        kind: "snapshot".into(),
        state: "archived".into(),
        content_type: Some("image/png".into()),
        size: Some(1),
        sha256: Some("00".into()),
        upstream_expires_at: 1,
        archived_at: Some(1),
        created_at: 1,
        attempts: 0,
        href: Some("/v1/resources/res_1".into()),
    };
    check(&doc, "ResourceView", &resource, &resource);
    let list = ResourceList {
        resources: vec![resource.clone()],
    };
    check(&doc, "ResourceList", &list, &list);
    let page = ResourcePage {
        resources: vec![resource],
        next_cursor: Some("c".into()),
    };
    check(&doc, "ResourcePage", &page, &page);
    let endpoint = WebhookEndpointView {
        endpoint_id: "whe_1".into(),
        url: "u".into(),
        enabled: false,
        disabled_reason: Some("r".into()),
        created_at: 1,
    };
    check(&doc, "WebhookEndpointView", &endpoint, &endpoint);
    let endpoints = WebhookEndpointList {
        endpoints: vec![endpoint],
    };
    check(&doc, "WebhookEndpointList", &endpoints, &endpoints);
    let created = CreatedWebhookEndpoint {
        endpoint_id: "whe_1".into(),
        url: "u".into(),
        secret: "whsec_x".into(),
        enabled: true,
        created_at: 1,
    };
    check(&doc, "CreatedWebhookEndpoint", &created, &created);
    let deleted = DeletedWebhookEndpoint {
        endpoint_id: "whe_1".into(),
        deleted: true,
    };
    check(&doc, "DeletedWebhookEndpoint", &deleted, &deleted);
}

/// The query parameters a list call sends are the operation's documented parameters.
#[track_caller]
fn check_query(doc: &Value, path: &str, sent: BTreeSet<String>) {
    let documented: BTreeSet<String> = doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        sent.is_subset(&documented),
        "{path}: {sent:?} vs {documented:?}"
    );
}

#[test]
fn the_list_and_event_options_are_documented_query_parameters() {
    let doc = document();
    let sessions = ListSessions {
        state: Some("open".into()),
        faceswap_status: Some(faceswap_client::faceswap_wire::FaceswapStatus::Processing),
        cursor: Some("c".into()),
        limit: Some(1),
    };
    check_query(&doc, "/v1/sessions", keys(&sessions));
    let resources = ListResources {
        session_id: Some("ses_1".into()),
        state: Some("archived".into()),
        cursor: Some("c".into()),
        limit: Some(1),
    };
    check_query(&doc, "/v1/resources", keys(&resources));
    check_query(
        &doc,
        "/v1/events",
        ["session_id", "from"].map(str::to_owned).into(),
    );
}
