//! Input limits of the HTTP layer: body caps per route, JSON nesting, and the deadlines that
//! keep slow clients from holding a connection (and its memory) for ever.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// JSON nested deeper than this is refused before it is parsed: no tenant body needs more than
/// a handful of levels, and deep nesting is how recursive parsers are made to exhaust the stack.
pub const MAX_JSON_DEPTH: usize = 32;

/// The routes that carry images (base64 in the body) and get the large body cap.
const DETECTION_ROUTES: [&str; 2] = ["/detect", "/interface/detect-api/detect_faces"];

/// Size and time limits of incoming requests.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Body cap of the detection routes (base64 images).
    pub max_body_bytes: usize,
    /// Body cap of every other route (small JSON).
    pub max_json_body_bytes: usize,
    /// Largest request head (request line and headers); over it the server answers 431.
    pub max_header_bytes: usize,
    /// Time allowed to receive a request head; a connection that has not sent one (including
    /// an idle keep-alive connection) is closed after it.
    pub header_read_timeout: Duration,
    /// Time allowed to receive a whole request body.
    pub body_read_timeout: Duration,
    /// Time allowed for a request to produce its response head; streaming bodies (the event
    /// stream, downloads) run on after it.
    pub request_timeout: Duration,
}

impl HttpLimits {
    /// The body cap of the route `path` (a matched route pattern or a request path).
    pub fn body_cap(&self, path: &str) -> usize {
        if DETECTION_ROUTES.contains(&path) {
            self.max_body_bytes
        } else {
            self.max_json_body_bytes
        }
    }
}

/// Whether `bytes`, read as JSON, opens more than `max` arrays or objects inside each other.
/// A byte scan that skips strings (and the escapes in them), so it costs one pass and no
/// allocation; malformed input is left for the parser to name.
pub fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Bounds the time a request may take to produce its response head.
pub async fn within_deadline(state: &AppState, req: Request, next: Next) -> Response {
    let limit = state.settings.limits.request_timeout;
    let detection = DETECTION_ROUTES.contains(&req.uri().path());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) if detection => ApiError::Deadline(limit).into_detect_response(),
        Err(_) => ApiError::Deadline(limit).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_level_does_not() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!json_too_deep(nested(32).as_bytes(), 32));
        assert!(json_too_deep(nested(33).as_bytes(), 32));
        assert!(json_too_deep(nested(10_000).as_bytes(), 32));
        let objects = r#"{"a":{"b":{"c":[1,{"d":2}]}}}"#;
        assert!(!json_too_deep(objects.as_bytes(), 5));
        assert!(json_too_deep(objects.as_bytes(), 4));
    }

    #[test]
    fn brackets_inside_strings_and_escapes_do_not_count() {
        let s = format!(r#"{{"a":"{}","b":"\"[[[\\","c":[]}}"#, "[{".repeat(1000));
        assert!(!json_too_deep(s.as_bytes(), 2));
        // An escaped quote does not end the string; the brackets after it are still inside.
        assert!(!json_too_deep(br#"["\"[[[[[[", 1]"#, 1));
        // An escaped backslash does end the escape; the quote after it closes the string.
        assert!(json_too_deep(br#"["\\", [[1]]]"#, 2));
    }

    #[test]
    fn sibling_containers_do_not_add_up() {
        let wide = format!("[{}[]]", "[],".repeat(10_000));
        assert!(!json_too_deep(wide.as_bytes(), 2));
    }

    #[test]
    fn detection_routes_get_the_large_cap_and_the_rest_the_small_one() {
        let limits = HttpLimits {
            max_body_bytes: 1000,
            max_json_body_bytes: 10,
            max_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(limits.body_cap("/detect"), 1000);
        assert_eq!(limits.body_cap("/interface/detect-api/detect_faces"), 1000);
        assert_eq!(limits.body_cap("/api/open/v3/faceswap/live/create"), 10);
        assert_eq!(limits.body_cap("/admin/tenants"), 10);
    }
}
