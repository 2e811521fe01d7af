//! The seed's flow end to end: token → detect a photo → create → wait for status 2 → print
//! the Agora join parameters → update → close.
//!
//! ```sh
//! FACESWAP_CLIENT_ID=… FACESWAP_CLIENT_SECRET=… cargo run -p faceswap-client --example seed_flow
//! ```
//!
//! `FACESWAP_GATEWAY_URL` (default `http://127.0.0.1:8080`), `FACESWAP_API_KEY` instead of
//! the client credentials, `FACESWAP_PHOTO` (default `testdata/face.jpg`) and
//! `FACESWAP_SOURCE_URL` (where the source face is hosted) change the defaults.

use std::time::{Duration, Instant};

use faceswap_client::faceswap_wire::{
    CreateRequest, DetectRequest, FaceswapStatus, SourceImage, UpdateRequest,
};
use faceswap_client::{Client, Credentials, Error};

/// Track settings the provider recommends for the front end's Agora stream.
const VIDEO: (u32, u32, u32) = (640, 480, 20);
const AUDIO_PROFILE: &str = "music_standard";
/// How long a session may stay queuing before the example gives up.
const WAIT_FOR_PROCESSING: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?;
    let photo = std::env::var("FACESWAP_PHOTO")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/face.jpg").into());
    let source_url = std::env::var("FACESWAP_SOURCE_URL")
        .unwrap_or_else(|_| "https://images.example/face.jpg".into());

    client.token().await?;
    match Credentials::from_vars(|n| std::env::var(n).ok())? {
        Credentials::ApiKey(_) => println!("auth: API key"),
        _ => println!("token: ok (refreshed automatically before it expires)"),
    }

    let image = std::fs::read(&photo).map_err(|e| format!("{photo}: {e}"))?;
    let faces = client
        .detect(&DetectRequest {
            single_face: true,
            img: Some(base64_encode(&image)),
            ..DetectRequest::default()
        })
        .await?;
    let opts = faces
        .landmarks_str
        .first()
        .ok_or("the detection answer has no landmarks")?
        .clone();
    println!(
        "detected {} face(s) in {photo}: box {:?}, landmarks {opts}",
        faces.region.len(),
        faces.region.first()
    );

    let created = client
        .create(&CreateRequest {
            source_image: vec![SourceImage {
                path: source_url.clone(),
                opts: opts.clone(),
            }],
        })
        .await?;
    println!(
        "created {} (faceswap_status {})",
        created.id,
        status_number(created.faceswap_status)
    );

    let started = Instant::now();
    let session = loop {
        let info = client.info(&created.id).await?;
        match info.faceswap_status {
            Some(FaceswapStatus::Processing) => break info,
            Some(s) if s.is_settled() => {
                return Err(format!("the session ended with faceswap_status {}", s.as_u8()).into());
            }
            _ if started.elapsed() > WAIT_FOR_PROCESSING => {
                return Err("the session did not start processing in time".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    println!(
        "faceswap_status 2 after {:.1} s: join the Agora channel now",
        started.elapsed().as_secs_f64()
    );
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    println!("  app_id          {}", field(&session.app_id));
    println!("  channel_id      {}", field(&session.channel_id));
    println!("  front_user_id   {}", field(&session.front_user_id));
    println!("  front_rtc_token {}", field(&session.front_rtc_token));
    let (w, h, fps) = VIDEO;
    println!("  video track     {w}x{h} @ {fps} fps");
    println!("  audio profile   {AUDIO_PROFILE}");

    let updated = client
        .update(&UpdateRequest {
            id: session.id.clone(),
            source_image: vec![SourceImage {
                path: source_url,
                opts,
            }],
        })
        .await?;
    println!(
        "updated {} ({} face(s))",
        updated.id,
        updated.source_image.len()
    );

    let closed = match client.close(&session.id).await {
        Ok(closed) => closed,
        Err(e @ Error::Api { .. }) => return Err(format!("close failed: {e}").into()),
        Err(e) => return Err(e.into()),
    };
    println!(
        "closed {} (state {}, faceswap_status {})",
        closed.id,
        closed.state,
        status_number(closed.faceswap_status)
    );
    Ok(())
}

fn status_number(s: Option<FaceswapStatus>) -> String {
    s.map_or_else(|| "-".into(), |s| s.as_u8().to_string())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
