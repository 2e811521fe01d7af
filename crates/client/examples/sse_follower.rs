//! Follows the tenant's event stream and prints every event, reconnecting after a dropped
//! connection with `Last-Event-ID` so nothing is missed.
//!
//! ```sh
//! FACESWAP_CLIENT_ID=… FACESWAP_CLIENT_SECRET=… cargo run -p faceswap-client --example sse_follower [ses_…]
//! ```
//!
//! With a session id only that session's events are shown. `FACESWAP_FROM=start` replays
//! the retained events first.

use std::time::Duration;

use faceswap_client::{Client, EventsFrom, EventsOptions};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?;
    let mut opts = EventsOptions {
        session_id: std::env::args().nth(1),
        from: match std::env::var("FACESWAP_FROM").as_deref() {
            Ok("start") => EventsFrom::Start,
            _ => EventsFrom::Now,
        },
        last_event_id: None,
    };
    println!(
        "following events of {} on {} (Ctrl-C stops)",
        opts.session_id.as_deref().unwrap_or("every session"),
        client.base_url()
    );
    loop {
        let mut stream = match client.events(&opts).await {
            Ok(stream) => stream,
            // A refusal (bad session id, credentials) will not change by retrying.
            Err(e) if e.code().is_some() && !e.is_retryable() => return Err(e.into()),
            Err(e) => {
                eprintln!("cannot open the stream ({e}); retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    println!(
                        "{:>6} {} {:<26} {}",
                        event.id,
                        event.timestamp,
                        event.kind.as_str(),
                        event.data
                    );
                    opts.last_event_id = Some(event.id);
                }
                Err(e) => {
                    eprintln!("stream error: {e}");
                    break;
                }
            }
        }
        eprintln!(
            "stream ended; resuming after event {}",
            opts.last_event_id.as_deref().unwrap_or("-")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
