//! Real face detection with the SeetaFace frontal model (`rustface`), and the landmarks derived
//! from each face box.
//!
//! The model finds face boxes only. Landmarks are placed at fixed proportions of the box, the
//! average positions on a frontal face (eyes at 38% of the height, 30% and 70% across; nose tip
//! at 58% centred; mouth corners at 78%, 35% and 65% across; chin at 98% centred). That is what
//! a client needs to feed `opts` back to create; it is not a landmark model.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{LazyLock, Mutex};

use faceswap_wire::codes::detect as codes;
use image::{DynamicImage, ImageReader, Limits};
use sha2::{Digest, Sha256};

/// The SeetaFace frontal detection model, shipped with `rustface` (BSD-2).
static MODEL_BYTES: &[u8] = include_bytes!("../assets/seeta_fd_frontal_v1.0.bin");

/// The detector's window: smaller images cannot contain a face it can see.
const MIN_SIDE: u32 = 48;
/// Images are scaled down to this longest side before detection; the boxes are scaled back.
const WORK_SIDE: u32 = 1024;
/// Refuse images whose pixel count would make decoding itself a denial of service.
const MAX_PIXELS: u64 = 50_000_000;

/// A face box in the original image's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// Left edge.
    pub x: i64,
    /// Top edge.
    pub y: i64,
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// The detector's confidence.
    pub score: f64,
}

/// Why detection gave no faces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// Not an image, an unsupported format, or truncated.
    #[error("image could not be decoded: {0}")]
    Unreadable(String),
    /// Too many pixels.
    #[error("image is too large: {0}")]
    TooLarge(String),
    /// Smaller than the detector's window.
    #[error("image is too small: {width}x{height}, at least {MIN_SIDE}x{MIN_SIDE} is needed")]
    TooSmall {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Decoded fine, no face in it.
    #[error("no face detected in the image")]
    NoFace,
}

impl DetectError {
    /// The `error_code` this failure answers with.
    pub fn code(&self) -> i64 {
        match self {
            Self::Unreadable(_) => codes::IMAGE_UNREADABLE,
            Self::TooLarge(_) => codes::IMAGE_TOO_LARGE,
            Self::TooSmall { .. } => codes::IMAGE_TOO_SMALL,
            Self::NoFace => codes::NO_FACE,
        }
    }
}

thread_local! {
    // The detector keeps scratch buffers and is not `Send`: one per blocking thread, built once.
    static DETECTOR: RefCell<Option<Box<dyn rustface::Detector>>> = const { RefCell::new(None) };
}

fn with_detector<R>(f: impl FnOnce(&mut dyn rustface::Detector) -> R) -> R {
    DETECTOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let detector = slot.get_or_insert_with(|| {
            let model = rustface::read_model(MODEL_BYTES).expect("the shipped model is valid");
            let mut d = rustface::create_detector_with_model(model);
            d.set_min_face_size(20);
            d.set_score_thresh(2.0);
            d.set_pyramid_scale_factor(0.8);
            d.set_slide_window_step(4, 4);
            d
        });
        f(detector.as_mut())
    })
}

/// Images whose answer is remembered, by content.
const CACHED_IMAGES: usize = 256;

/// Answers already computed, by the SHA-256 of the image bytes. Detection is deterministic and
/// costs tens of milliseconds of CPU, so a client sending the same photo again (a load test,
/// a retry) measures the API rather than the detector.
static ANSWERS: LazyLock<Mutex<HashMap<[u8; 32], Answer>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// What detection concluded about one image.
type Answer = Result<Vec<Face>, DetectError>;

/// Decodes `bytes` (JPEG or PNG) and finds the faces in it, largest first. With `single_face`
/// only the largest is returned. CPU-bound: call it from a blocking thread.
pub fn detect_faces(bytes: &[u8], single_face: bool) -> Result<Vec<Face>, DetectError> {
    let key: [u8; 32] = Sha256::digest(bytes).into();
    let known = ANSWERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let answer = match known {
        Some(answer) => answer,
        None => {
            let answer = find_faces(bytes);
            let mut answers = ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
            if answers.len() >= CACHED_IMAGES {
                answers.clear();
            }
            answers.insert(key, answer.clone());
            answer
        }
    };
    let mut faces = answer?;
    if single_face {
        faces.truncate(1);
    }
    Ok(faces)
}

/// Every face in the image, largest first.
fn find_faces(bytes: &[u8]) -> Result<Vec<Face>, DetectError> {
    let image = decode(bytes)?;
    let (width, height) = (image.width(), image.height());
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(DetectError::TooSmall { width, height });
    }
    let scale = (WORK_SIDE as f64 / width.max(height) as f64).min(1.0);
    let gray = if scale < 1.0 {
        image
            .resize(
                (width as f64 * scale).round() as u32,
                (height as f64 * scale).round() as u32,
                image::imageops::FilterType::Triangle,
            )
            .into_luma8()
    } else {
        image.into_luma8()
    };
    let data = rustface::ImageData::new(gray.as_raw(), gray.width(), gray.height());
    let found = with_detector(|d| d.detect(&data));
    let mut faces: Vec<Face> = found
        .iter()
        .map(|f| {
            let b = f.bbox();
            let to_orig = |v: f64| (v / scale).round() as i64;
            let x = to_orig(f64::from(b.x()).max(0.0));
            let y = to_orig(f64::from(b.y()).max(0.0));
            Face {
                x,
                y,
                width: to_orig(f64::from(b.width())).min(i64::from(width) - x),
                height: to_orig(f64::from(b.height())).min(i64::from(height) - y),
                score: f.score(),
            }
        })
        .collect();
    if faces.is_empty() {
        return Err(DetectError::NoFace);
    }
    faces.sort_by(|a, b| {
        (b.width * b.height)
            .cmp(&(a.width * a.height))
            .then(b.score.total_cmp(&a.score))
    });
    Ok(faces)
}

/// PNG crops of `faces` (boxes in the image's pixels) out of the image in `bytes`, in the same
/// order. CPU-bound: call it from a blocking thread.
pub fn crop_faces(bytes: &[u8], faces: &[Face]) -> Result<Vec<Vec<u8>>, DetectError> {
    let image = decode(bytes)?;
    faces
        .iter()
        .map(|f| {
            let x = u32::try_from(f.x.max(0))
                .unwrap_or(0)
                .min(image.width().saturating_sub(1));
            let y = u32::try_from(f.y.max(0))
                .unwrap_or(0)
                .min(image.height().saturating_sub(1));
            let w = u32::try_from(f.width.max(1))
                .unwrap_or(1)
                .min(image.width() - x);
            let h = u32::try_from(f.height.max(1))
                .unwrap_or(1)
                .min(image.height() - y);
            let mut png = Vec::new();
            image
                .crop_imm(x, y, w, h)
                .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| DetectError::Unreadable(e.to_string()))?;
            Ok(png)
        })
        .collect()
}

fn decode(bytes: &[u8]) -> Result<DynamicImage, DetectError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DetectError::Unreadable(e.to_string()))?;
    let format = reader.format().ok_or_else(|| {
        DetectError::Unreadable("not a JPEG or PNG image (unrecognised content)".to_owned())
    })?;
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DetectError::Unreadable(
            "the JPEG data is truncated (no end-of-image marker)".to_owned(),
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| DetectError::Unreadable(e.to_string()))?;
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(DetectError::TooLarge(format!(
            "{w}x{h} pixels, at most {MAX_PIXELS} are accepted"
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => DetectError::TooLarge(l.to_string()),
        other => DetectError::Unreadable(other.to_string()),
    })
}

/// Whether a JPEG stream runs to its end-of-image marker. JPEG decoders fill a truncated scan
/// with grey and report success, so truncation is detected by walking the marker segments:
/// inside entropy-coded data `0xFF` is always followed by `0x00` or a restart marker, so the
/// first other marker after the scans is either another segment or the end.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => i += 1, // fill byte
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = bytes
                    .get(i + 2..i + 4)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                else {
                    return false;
                };
                i += 2 + len;
                if marker == 0xDA {
                    // Skip the entropy-coded scan to the next real marker.
                    loop {
                        match bytes.get(i..i + 2) {
                            None => return false,
                            Some([0xFF, next])
                                if *next != 0x00 && !(0xD0..=0xD7).contains(next) =>
                            {
                                break;
                            }
                            Some(_) => i += 1,
                        }
                    }
                }
            }
        }
    }
    false
}

/// The six landmark points of a face box: left eye, right eye, nose tip, left and right mouth
/// corners, chin.
pub fn landmarks(face: &Face) -> Vec<[i64; 2]> {
    const POINTS: [(f64, f64); 6] = [
        (0.30, 0.38),
        (0.70, 0.38),
        (0.50, 0.58),
        (0.35, 0.78),
        (0.65, 0.78),
        (0.50, 0.98),
    ];
    POINTS
        .iter()
        .map(|&(fx, fy)| {
            [
                face.x + (face.width as f64 * fx).round() as i64,
                face.y + (face.height as f64 * fy).round() as i64,
            ]
        })
        .collect()
}

/// The four-point `x,y:x,y:x,y:x,y` form (left eye, right eye, nose tip, mouth centre) that
/// `sourceImage[].opts` takes.
pub fn landmarks_str(face: &Face) -> String {
    let l = landmarks(face);
    let mouth = [(l[3][0] + l[4][0]) / 2, (l[3][1] + l[4][1]) / 2];
    [l[0], l[1], l[2], mouth]
        .iter()
        .map(|[x, y]| format!("{x},{y}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses an `opts` string: exactly four `x,y` points of non-negative numbers.
pub fn parse_landmarks_str(s: &str) -> Result<[[f64; 2]; 4], String> {
    let points: Vec<&str> = s.split(':').collect();
    if points.len() != 4 {
        return Err(format!(
            "opts must hold 4 points `x,y:x,y:x,y:x,y`, got {}",
            points.len()
        ));
    }
    let mut out = [[0.0; 2]; 4];
    for (slot, point) in out.iter_mut().zip(points) {
        let (x, y) = point
            .split_once(',')
            .ok_or_else(|| format!("opts point `{point}` is not `x,y`"))?;
        for (v, text) in slot.iter_mut().zip([x, y]) {
            *v = text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("opts point `{point}` has a bad coordinate"))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face() -> Face {
        Face {
            x: 100,
            y: 50,
            width: 200,
            height: 200,
            score: 5.0,
        }
    }

    #[test]
    fn landmarks_sit_inside_the_box_in_face_order() {
        let l = landmarks(&face());
        assert_eq!(l.len(), 6);
        assert_eq!(l[0], [160, 126]);
        assert_eq!(l[1], [240, 126]);
        assert_eq!(l[2], [200, 166]);
        for [x, y] in l {
            assert!((100..=300).contains(&x) && (50..=250).contains(&y));
        }
    }

    #[test]
    fn landmarks_str_round_trips_through_the_opts_parser() {
        let s = landmarks_str(&face());
        assert_eq!(s, "160,126:240,126:200,166:200,206");
        let parsed = parse_landmarks_str(&s).unwrap();
        assert_eq!(parsed[3], [200.0, 206.0]);
    }

    #[test]
    fn malformed_opts_are_refused_with_a_reason() {
        for bad in [
            "",
            "1,2:3,4:5,6",
            "1,2:3,4:5,6:7",
            "a,2:3,4:5,6:7,8",
            "-1,2:3,4:5,6:7,8",
        ] {
            assert!(parse_landmarks_str(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn garbage_bytes_are_unreadable() {
        let err = detect_faces(b"definitely not an image", false).unwrap_err();
        assert_eq!(err.code(), codes::IMAGE_UNREADABLE);
    }

    #[test]
    fn a_jpeg_without_its_end_marker_is_incomplete() {
        let mut img = image::RgbImage::new(64, 64);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]);
        }
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(jpeg_is_complete(&jpeg));
        assert!(!jpeg_is_complete(&jpeg[..jpeg.len() / 2]));
        assert!(!jpeg_is_complete(&jpeg[..jpeg.len() - 2]));
    }

    #[test]
    fn a_blank_image_has_no_face() {
        let img = image::GrayImage::from_pixel(200, 200, image::Luma([200]));
        let mut png = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(detect_faces(&png, false), Err(DetectError::NoFace));
    }

    #[test]
    fn a_photo_seen_before_is_answered_from_memory_with_the_same_faces() {
        let photo = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/face.jpg"
        ))
        .unwrap();
        let key: [u8; 32] = Sha256::digest(&photo).into();
        let first = detect_faces(&photo, false).unwrap();
        let remembered = ANSWERS.lock().unwrap().get(&key).cloned();
        assert_eq!(remembered, Some(Ok(first.clone())));
        assert_eq!(detect_faces(&photo, false).unwrap(), first);
        assert_eq!(detect_faces(&photo, true).unwrap(), first[..1]);
    }

    #[test]
    fn face_crops_are_pngs_of_the_box_clamped_to_the_image() {
        let img = image::RgbImage::from_fn(100, 80, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let inside = Face {
            x: 10,
            y: 20,
            width: 30,
            height: 40,
            score: 1.0,
        };
        let over_the_edge = Face {
            x: 90,
            y: 70,
            width: 50,
            height: 50,
            score: 1.0,
        };
        let crops = crop_faces(&png, &[inside, over_the_edge]).unwrap();
        let first = image::load_from_memory(&crops[0]).unwrap();
        assert_eq!((first.width(), first.height()), (30, 40));
        assert_eq!(first.to_rgb8().get_pixel(0, 0).0, [10, 20, 0]);
        let second = image::load_from_memory(&crops[1]).unwrap();
        assert_eq!((second.width(), second.height()), (10, 10));
    }

    #[test]
    fn a_tiny_image_is_too_small() {
        let img = image::GrayImage::from_pixel(20, 20, image::Luma([0]));
        let mut png = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            detect_faces(&png, false).unwrap_err().code(),
            codes::IMAGE_TOO_SMALL
        );
    }
}
