//! Scenario 2: detection with a 10 MB base64 `img`: throughput of each target, and how much
//! the gateway's resident memory grows per request in flight.

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageReader, Rgb, RgbImage};
use serde::Serialize;

use crate::oha::{self, Call, Measured};
use crate::stack::Proc;

/// Requests in flight at once.
pub const IN_FLIGHT: usize = 8;
/// Size of the base64 string the scenario aims for.
const TARGET_BASE64_BYTES: usize = 10_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct BigBody {
    pub body_bytes: usize,
    pub runs: Vec<Measured>,
    pub gateway_rss_before: u64,
    pub gateway_rss_peak: u64,
    /// (peak − before) / requests in flight.
    pub growth_per_request: f64,
}

impl BigBody {
    pub fn growth_ratio(&self) -> f64 {
        self.growth_per_request / self.body_bytes as f64
    }
}

/// `{"img": "<base64 JPEG>"}` of about 10 MB: the face photo scaled up, with noise so the JPEG
/// cannot shrink it, still a face the detector finds.
pub fn body(face: &Path) -> anyhow::Result<Vec<u8>> {
    let face = ImageReader::open(face)?
        .with_guessed_format()?
        .decode()
        .context("decoding the face photo")?
        .to_rgb8();
    let mut side = 2000u32;
    loop {
        let jpeg = noisy_jpeg(&face, side)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&jpeg);
        let ratio = TARGET_BASE64_BYTES as f64 / encoded.len() as f64;
        if (0.97..=1.03).contains(&ratio) {
            return Ok(serde_json::to_vec(&serde_json::json!({ "img": encoded }))?);
        }
        side = (f64::from(side) * ratio.sqrt()).round() as u32;
    }
}

fn noisy_jpeg(face: &RgbImage, side: u32) -> anyhow::Result<Vec<u8>> {
    let mut img = image::imageops::resize(face, side, side, image::imageops::FilterType::Triangle);
    // A fixed linear congruential sequence: the same body on every run.
    let mut seed: u32 = 0x9E37_79B9;
    for Rgb(px) in img.pixels_mut() {
        for c in px.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = ((seed >> 24) as i16 - 128) / 5;
            *c = (i16::from(*c) + noise).clamp(0, 255) as u8;
        }
    }
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, 95).encode_image(&img)?;
    Ok(out.into_inner())
}

pub async fn run(
    calls: &[Call],
    gateway: &Proc,
    body_bytes: usize,
    step: Duration,
) -> anyhow::Result<BigBody> {
    let mut runs = Vec::new();
    let mut before = 0;
    let mut peak = 0;
    for call in calls {
        oha::run(call, 2, Duration::from_secs(2), None)
            .await?
            .check(200)?;
        if call.target == "gateway" {
            // Settle what the warm-up left, then measure the peak from here.
            before = gateway.memory()?.rss;
            gateway.reset_peak()?;
        }
        let m = oha::run(call, IN_FLIGHT, step, None).await?;
        m.check(200)?;
        if call.target == "gateway" {
            peak = gateway.memory()?.peak;
        }
        eprintln!(
            "  {:8}: {:6.1} req/s  p50 {:.0} ms  p99 {:.0} ms",
            m.target, m.rps, m.p50_ms, m.p99_ms
        );
        runs.push(m);
    }
    let growth_per_request = peak.saturating_sub(before) as f64 / IN_FLIGHT as f64;
    Ok(BigBody {
        body_bytes,
        runs,
        gateway_rss_before: before,
        gateway_rss_peak: peak,
        growth_per_request,
    })
}
