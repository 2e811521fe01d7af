//! Generated resources: the snapshot image and the recording a session leaves when it closes,
//! served by the simulator until their retention runs out.
//!
//! Recordings are produced on the fly from a seed, so a multi-hundred-megabyte one costs no
//! memory and its bytes are the same on every download.

use std::collections::HashMap;
use std::io::Cursor;

use bytes::Bytes;
use faceswap_wire::Resource;
use futures_util::Stream;

const CHUNK: usize = 64 * 1024;
/// An MP4 `ftyp` box, so the file is recognised as a video by sniffers.
const MP4_HEADER: &[u8] = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";

/// What a stored resource holds.
#[derive(Debug, Clone)]
enum Body {
    /// Bytes kept in memory (small images).
    Inline(Bytes),
    /// A pseudo-random stream of `size` bytes from `seed`.
    Generated { seed: u64, size: u64 },
}

/// One downloadable resource.
#[derive(Debug, Clone)]
pub struct StoredResource {
    body: Body,
    /// Media type.
    pub content_type: &'static str,
    /// Unix time after which it answers 404.
    pub expires_at: u64,
}

impl StoredResource {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        match &self.body {
            Body::Inline(b) => b.len() as u64,
            Body::Generated { size, .. } => *size,
        }
    }

    /// The content as a stream of chunks.
    pub fn stream(&self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let body = self.body.clone();
        futures_util::stream::unfold((body, 0u64), |(body, offset)| async move {
            match &body {
                Body::Inline(b) => (offset == 0).then(|| (Ok(b.clone()), (body.clone(), 1))),
                Body::Generated { seed, size } => {
                    if offset >= *size {
                        return None;
                    }
                    let len = CHUNK.min((*size - offset) as usize);
                    let chunk = generated_bytes(*seed, offset, len);
                    Some((Ok(chunk), (body.clone(), offset + len as u64)))
                }
            }
        })
    }
}

/// `len` bytes of the generated stream for `seed`, starting at `offset` (a multiple of 8, as the
/// chunking guarantees). The first bytes are an MP4 header.
fn generated_bytes(seed: u64, offset: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut word = offset / 8;
    while out.len() < len {
        let v = splitmix64(seed ^ word.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        out.extend_from_slice(&v.to_le_bytes());
        word += 1;
    }
    out.truncate(len);
    if offset < MP4_HEADER.len() as u64 {
        let start = offset as usize;
        let n = (MP4_HEADER.len() - start).min(len);
        out[..n].copy_from_slice(&MP4_HEADER[start..start + n]);
    }
    Bytes::from(out)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small PNG whose colours derive from `seed`, standing in for a frame of the stream.
fn snapshot_png(seed: u64) -> Bytes {
    let [r, g, b, ..] = splitmix64(seed).to_le_bytes();
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([
            r.wrapping_add((x / 2) as u8),
            g.wrapping_add((y / 2) as u8),
            b,
        ])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding a PNG into memory cannot fail");
    Bytes::from(out)
}

/// All minted resources, by path under `/resources/`.
#[derive(Debug, Default)]
pub struct Resources {
    map: HashMap<String, StoredResource>,
}

impl Resources {
    /// Mints the snapshot and recording of a closed session, valid until `expires_at`, and
    /// returns them as `info` lists them.
    pub fn mint_for_session(
        &mut self,
        base_url: &str,
        session_id: &str,
        recording_bytes: u64,
        expires_at: u64,
    ) -> Vec<Resource> {
        let seed: u64 = rand::random();
        let items = [
            (
                "snapshot",
                format!("{session_id}/{seed:016x}/snapshot.png"),
                StoredResource {
                    body: Body::Inline(snapshot_png(seed)),
                    content_type: "image/png",
                    expires_at,
                },
            ),
            (
                "recording",
                format!("{session_id}/{seed:016x}/recording.mp4"),
                StoredResource {
                    body: Body::Generated {
                        seed,
                        size: recording_bytes,
                    },
                    content_type: "video/mp4",
                    expires_at,
                },
            ),
        ];
        items
            .into_iter()
            .map(|(kind, path, stored)| {
                let wire = Resource {
                    kind: kind.to_owned(),
                    url: format!("{base_url}/resources/{path}"),
                    content_type: stored.content_type.to_owned(),
                    size: stored.size(),
                    expires_at: expires_at as i64,
                };
                self.map.insert(path, stored);
                wire
            })
            .collect()
    }

    /// Mints one PNG per face crop of a detection, valid until `expires_at`; returns their URLs
    /// in the order given.
    pub fn mint_face_crops(
        &mut self,
        base_url: &str,
        trx_id: &str,
        crops: Vec<Bytes>,
        expires_at: u64,
    ) -> Vec<String> {
        crops
            .into_iter()
            .enumerate()
            .map(|(i, png)| {
                let path = format!("faces/{trx_id}/{i}.png");
                self.map.insert(
                    path.clone(),
                    StoredResource {
                        body: Body::Inline(png),
                        content_type: "image/png",
                        expires_at,
                    },
                );
                format!("{base_url}/resources/{path}")
            })
            .collect()
    }

    /// The resource at `path` if it has not expired at `now`; expired ones are forgotten.
    pub fn get(&mut self, path: &str, now: u64) -> Option<StoredResource> {
        let found = self.map.get(path)?;
        if now >= found.expires_at {
            self.map.remove(path);
            return None;
        }
        Some(found.clone())
    }

    /// Forgets every resource expired at `now`.
    pub fn prune(&mut self, now: u64) {
        self.map.retain(|_, r| now < r.expires_at);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn collect(r: &StoredResource) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(r.stream());
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_recording_streams_exactly_its_size_and_is_the_same_twice() {
        let mut res = Resources::default();
        let minted = res.mint_for_session("http://sim", "abc", 200_003, 100);
        assert_eq!(minted.len(), 2);
        let rec = minted.iter().find(|r| r.kind == "recording").unwrap();
        assert_eq!(rec.size, 200_003);
        let path = rec.url.strip_prefix("http://sim/resources/").unwrap();
        let stored = res.get(path, 50).unwrap();
        let a = collect(&stored).await;
        assert_eq!(a.len(), 200_003);
        assert_eq!(&a[4..8], b"ftyp");
        assert_eq!(a, collect(&stored).await);
    }

    #[tokio::test]
    async fn a_snapshot_is_a_png() {
        let mut res = Resources::default();
        let minted = res.mint_for_session("http://sim", "abc", 10, 100);
        let snap = minted.iter().find(|r| r.kind == "snapshot").unwrap();
        let path = snap.url.strip_prefix("http://sim/resources/").unwrap();
        let bytes = collect(&res.get(path, 0).unwrap()).await;
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::Png
        );
        assert_eq!(bytes.len() as u64, snap.size);
    }

    #[tokio::test]
    async fn face_crops_are_served_as_given_until_they_expire() {
        let mut res = Resources::default();
        let urls = res.mint_face_crops(
            "http://sim",
            "abc",
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")],
            100,
        );
        assert_eq!(
            urls,
            [
                "http://sim/resources/faces/abc/0.png",
                "http://sim/resources/faces/abc/1.png"
            ]
        );
        let second = res.get("faces/abc/1.png", 99).unwrap();
        assert_eq!(second.content_type, "image/png");
        assert_eq!(collect(&second).await, b"two");
        assert!(res.get("faces/abc/0.png", 100).is_none());
    }

    #[test]
    fn a_resource_is_gone_once_it_expires() {
        let mut res = Resources::default();
        let minted = res.mint_for_session("http://sim", "abc", 10, 100);
        let path = minted[0].url.strip_prefix("http://sim/resources/").unwrap();
        assert!(res.get(path, 99).is_some());
        assert!(res.get(path, 100).is_none());
        assert!(
            res.get(path, 0).is_none(),
            "an expired resource is forgotten"
        );
    }
}
