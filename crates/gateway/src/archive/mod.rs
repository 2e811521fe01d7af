//! Object storage for archived resources, through the `object_store` crate: a local directory
//! (the default), S3 or any S3-compatible store, Google Cloud Storage or Azure Blob Storage,
//! chosen by `OBJECT_STORE_URL`.
//!
//! - `file:///var/lib/faceswap/archive` — a local directory (created when missing). Unset, it
//!   is `./data/archive` under the working directory.
//! - `s3://bucket[/prefix]` — with the usual `AWS_*` settings from the environment
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` or
//!   `AWS_ENDPOINT_URL` for S3-compatible stores, `AWS_ALLOW_HTTP=true` for a plain-HTTP one).
//! - `gs://bucket[/prefix]` (`GOOGLE_*`), `az://container[/prefix]` (`AZURE_*`).
//!
//! Uploads stream: bytes go out in parts (multipart upload on cloud stores, a staged file on the
//! local directory) while the SHA-256 and the size are computed on the way, so an object of any
//! size needs a few parts' worth of memory.

pub mod fetch;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, WriteMultipart,
};
use sha2::{Digest, Sha256};

/// The local directory used when `OBJECT_STORE_URL` is unset.
pub const DEFAULT_DIR: &str = "data/archive";
/// Size of one uploaded part (S3 wants at least 5 MiB for every part but the last).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight at once per upload; memory is about (this + 1) parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Settings of the archiver.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// A resource this close to its upstream deadline and not archived raises the alarm.
    pub alarm_margin: std::time::Duration,
    /// First delay of a download retry; doubles per failure, at most an hour.
    pub retry_base: std::time::Duration,
    /// Downloads in flight at once per worker step.
    pub concurrency: usize,
    /// The deadline assumed for a resource URL the upstream gave without one (7 days).
    pub default_ttl: std::time::Duration,
}

impl ArchiveSettings {
    /// Settings from their configured values; the message of an error names the setting.
    pub fn checked(
        alarm_margin_seconds: u64,
        retry_base_ms: u64,
        concurrency: usize,
        default_ttl_seconds: u64,
    ) -> Result<Self, String> {
        if retry_base_ms == 0 {
            return Err(
                "malformed setting GATEWAY_ARCHIVE_RETRY_BASE_MS: must be at least 1".into(),
            );
        }
        if concurrency == 0 {
            return Err("malformed setting GATEWAY_ARCHIVE_CONCURRENCY: must be at least 1".into());
        }
        if default_ttl_seconds == 0 {
            return Err(
                "malformed setting UPSTREAM_RESOURCE_TTL_SECONDS: must be at least 1".into(),
            );
        }
        Ok(Self {
            alarm_margin: std::time::Duration::from_secs(alarm_margin_seconds),
            retry_base: std::time::Duration::from_millis(retry_base_ms),
            concurrency,
            default_ttl: std::time::Duration::from_secs(default_ttl_seconds),
        })
    }
}

/// What the archiver and the resource endpoints share: the store, the download client and the
/// settings.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Where archived objects go.
    pub storage: Storage,
    /// The SSRF-guarded download client.
    pub fetcher: fetch::Fetcher,
    /// Settings.
    pub settings: ArchiveSettings,
}

impl Archive {
    /// The store `OBJECT_STORE_URL` names and a download client under `ssrf`; the upstream
    /// timeouts bound connecting and each wait for data.
    pub fn from_config(
        config: &crate::config::Config,
        ssrf: &faceswap_upstream::ssrf::SsrfGuard,
    ) -> anyhow::Result<Self> {
        let storage =
            Storage::from_url(config.object_store_url.as_deref()).map_err(anyhow::Error::msg)?;
        tracing::info!(store = storage.describe(), "archive object store");
        Ok(Self {
            storage,
            fetcher: fetch::Fetcher::new(
                ssrf.clone(),
                config.upstream_connect_timeout,
                config.upstream_timeout,
            )?,
            settings: config.archive.clone(),
        })
    }
}

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that key.
    #[error("object not found")]
    NotFound,
    /// Anything else the store said.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// A key that is not a valid object path.
    #[error("invalid object key: {0}")]
    Key(String),
}

impl From<object_store::path::Error> for StorageError {
    fn from(e: object_store::path::Error) -> Self {
        Self::Key(e.to_string())
    }
}

fn classify(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => StorageError::Store(other),
    }
}

/// The archive store: a backend and the key prefix under which every object goes.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Where it points, without credentials, for logs.
    description: String,
    /// Whether the backend keeps a content type per object (the local directory does not).
    keeps_attributes: bool,
}

impl Storage {
    /// The store `url` names (a local directory when `None` or empty). The message of an error
    /// names the setting.
    pub fn from_url(url: Option<&str>) -> Result<Self, String> {
        let bad = |why: String| format!("malformed setting OBJECT_STORE_URL: {why}");
        let raw = url.map(str::trim).filter(|u| !u.is_empty());
        let parsed = match raw {
            None => {
                let dir = std::env::current_dir()
                    .map_err(|e| bad(format!("the working directory is unreadable: {e}")))?
                    .join(DEFAULT_DIR);
                return Self::local(&dir).map_err(bad);
            }
            Some(raw) => url::Url::parse(raw).map_err(|e| bad(format!("`{raw}`: {e}")))?,
        };
        let prefix = Path::parse(parsed.path().trim_matches('/'))
            .map_err(|e| bad(format!("`{parsed}` has an invalid path: {e}")))?;
        let bucket = parsed.host_str().unwrap_or_default().to_owned();
        let description = format!("{}://{}/{}", parsed.scheme(), bucket, prefix);
        let base = format!("{}://{}", parsed.scheme(), bucket);
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad(format!("`{parsed}` is not an absolute file path")))?;
                return Self::local(&path).map_err(bad);
            }
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(base)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(base)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(base)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported scheme `{other}`; use file://, s3://, gs:// or az://"
                )));
            }
        };
        if bucket.is_empty() {
            return Err(bad(format!("`{parsed}` names no bucket")));
        }
        Ok(Self {
            store,
            prefix,
            description,
            keeps_attributes: true,
        })
    }

    /// A local directory, created when missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| format!("cannot use {}: {e}", dir.display()))?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            description: format!("file://{}", dir.display()),
            keeps_attributes: false,
        })
    }

    /// Where it points, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn path(&self, key: &str) -> Result<Path, StorageError> {
        let key = Path::parse(key)?;
        Ok(Path::from_iter(self.prefix.parts().chain(key.parts())))
    }

    /// Starts a streaming upload to `key`.
    pub async fn begin(&self, key: &str, content_type: &str) -> Result<Upload, StorageError> {
        let path = self.path(key)?;
        let mut attributes = Attributes::new();
        if self.keeps_attributes {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        }
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let upload = self.store.put_multipart_opts(&path, opts).await?;
        Ok(Upload {
            writer: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// The object at `key`, as a stream, with its size.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, std::io::Error>>), StorageError> {
        let found = self.store.get(&self.path(key)?).await.map_err(classify)?;
        let size = found.meta.size;
        let stream = found
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        Ok((size, stream))
    }

    /// Deletes the object at `key`; a missing one counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)?).await.map_err(classify) {
            Ok(()) | Err(StorageError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// An upload in progress: feed it chunks, then [`Upload::finish`] (or [`Upload::abort`]).
pub struct Upload {
    writer: WriteMultipart,
    hasher: Sha256,
    size: u64,
}

/// What a finished upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
}

impl Upload {
    /// Adds a chunk, waiting while too many parts are in flight (back pressure on the reader).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        self.writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.writer.write(chunk);
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the last part and completes the upload.
    pub async fn finish(self) -> Result<Uploaded, StorageError> {
        let sha256 = crate::domain::resources::hex(&self.hasher.finalize());
        self.writer.finish().await?;
        Ok(Uploaded {
            size: self.size,
            sha256,
        })
    }

    /// Abandons the upload, cleaning up the parts sent so far where the store can.
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::debug!(error = %e, "aborting an upload failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("faceswap-archive-unit-{}", uuid::Uuid::new_v4()))
    }

    #[tokio::test]
    async fn a_local_store_streams_in_and_out_with_checksum() {
        let dir = temp_dir();
        let storage =
            Storage::from_url(Some(&format!("file://{}", dir.to_str().unwrap()))).unwrap();
        let mut up = storage.begin("t/s/r-x.bin", "video/mp4").await.unwrap();
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..12 {
            up.write(&chunk).await.unwrap();
        }
        let done = up.finish().await.unwrap();
        assert_eq!(done.size, 12 * 1024 * 1024);
        let mut expected = Sha256::new();
        for _ in 0..12 {
            expected.update(&chunk);
        }
        assert_eq!(
            done.sha256,
            crate::domain::resources::hex(&expected.finalize())
        );
        let (size, stream) = storage.get("t/s/r-x.bin").await.unwrap();
        assert_eq!(size, done.size);
        let read: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(read.iter().map(Bytes::len).sum::<usize>() as u64, size);
        storage.delete("t/s/r-x.bin").await.unwrap();
        assert!(matches!(
            storage.get("t/s/r-x.bin").await,
            Err(StorageError::NotFound)
        ));
        storage.delete("t/s/r-x.bin").await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_urls_name_the_setting() {
        for bad in ["nope", "ftp://x/y", "s3:///prefix", "file://relative/path"] {
            let err = Storage::from_url(Some(bad)).unwrap_err();
            assert!(
                err.starts_with("malformed setting OBJECT_STORE_URL"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_s3_url_keeps_its_prefix() {
        let s = Storage::from_url(Some("s3://bucket/some/prefix/")).unwrap();
        assert_eq!(s.describe(), "s3://bucket/some/prefix");
        assert_eq!(s.path("a/b.png").unwrap().as_ref(), "some/prefix/a/b.png");
    }
}
