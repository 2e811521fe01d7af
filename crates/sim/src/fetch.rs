//! Fetching `image_url` for detection, bounded in time and size.

use std::time::Duration;

use futures_util::StreamExt;

/// Why an image could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Bad URL, unreachable host, timeout or a non-2xx answer.
    #[error("image_url could not be fetched: {0}")]
    Failed(String),
    /// The image is larger than the cap.
    #[error("image at image_url exceeds {0} bytes")]
    TooLarge(usize),
}

/// Downloads `url` within `timeout`, refusing more than `max_bytes`.
pub async fn fetch_image(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::Failed(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::Failed(format!(
            "unsupported scheme `{}`",
            parsed.scheme()
        )));
    }
    let download = async {
        let resp = client
            .get(parsed)
            .send()
            .await
            .map_err(|e| FetchError::Failed(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(FetchError::Failed(format!(
                "answered HTTP {}",
                resp.status()
            )));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let mut body = Vec::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| FetchError::Failed(error_chain(&e)))?;
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, download)
        .await
        .map_err(|_| FetchError::Failed(format!("timed out after {} ms", timeout.as_millis())))?
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
