//! A webhook receiver that checks every delivery's signature and prints the events.
//!
//! ```sh
//! FACESWAP_CLIENT_ID=… FACESWAP_CLIENT_SECRET=… cargo run -p faceswap-client --example webhook_receiver
//! ```
//!
//! It listens on `FACESWAP_WEBHOOK_BIND` (default `127.0.0.1:8090`). With
//! `FACESWAP_WEBHOOK_SECRET` set it only verifies with that secret; otherwise it registers
//! `http://<bind>/webhook` with the gateway (the quick start allows loopback webhook URLs)
//! and deletes that endpoint again on Ctrl-C.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use faceswap_client::Client;
use faceswap_client::webhooks::Verifier;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("FACESWAP_WEBHOOK_BIND").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let addr = listener.local_addr()?;

    let (verifier, registered) = match std::env::var("FACESWAP_WEBHOOK_SECRET") {
        Ok(secret) => (Verifier::new(&secret)?, None),
        Err(_) => {
            let client = Client::from_env()?;
            let endpoint = client
                .create_webhook(&format!("http://{addr}/webhook"))
                .await?;
            println!(
                "registered {} for {} (secret {})",
                endpoint.endpoint_id, endpoint.url, endpoint.secret
            );
            (
                Verifier::new(&endpoint.secret)?,
                Some((client, endpoint.endpoint_id)),
            )
        }
    };

    let app = axum::Router::new()
        .route("/webhook", axum::routing::post(receive))
        .with_state(Arc::new(verifier));
    println!("listening on http://{addr}/webhook (Ctrl-C stops)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    if let Some((client, id)) = registered {
        client.delete_webhook(&id).await?;
        println!("deleted {id}");
    }
    Ok(())
}

async fn receive(
    State(verifier): State<Arc<Verifier>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match verifier.verify_headers(&headers, &body) {
        Ok(event) => {
            println!("{} {} {}", event.id, event.kind.as_str(), event.data);
            // Deliveries are retried until answered 2xx; `event.id` stays the same across
            // retries, so a receiver that must act once should remember the ids it handled.
            StatusCode::NO_CONTENT
        }
        Err(e) => {
            eprintln!("refused a delivery: {e}");
            StatusCode::BAD_REQUEST
        }
    }
}
