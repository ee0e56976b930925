//! A store in an S3 bucket (AWS S3, Garage, MinIO, R2, …), on the `object_store`
//! crate. Addressed as `s3://BUCKET/PREFIX`; credentials, region and endpoint
//! come from the standard environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
//!
//! Every object is written by one PUT, which S3 makes visible whole or not at all,
//! so the backend needs no temporary objects. `PutMode::Create` is a conditional
//! PUT (`If-None-Match: *`). The [`Backend`] trait is synchronous: each call runs
//! its request on a current-thread tokio runtime owned by the backend, so it must
//! not be called from inside another runtime's async task (it would block that
//! runtime's thread, and `block_on` inside a runtime panics): from async code,
//! call the store in `tokio::task::spawn_blocking` (docs/EMBEDDING.md).

use super::{Backend, BackendError, ObjectInfo, PutMode, RequestCounts, Result};
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};
use std::time::Duration;

/// Objects larger than this are uploaded in parts (a 16 MiB pack, the default
/// size, is one PUT; larger packs, `init --pack-size`, go in parts).
pub const MULTIPART_THRESHOLD: usize = 24 << 20;
/// Size of one part of a multipart upload (S3's minimum is 5 MiB).
pub const MULTIPART_PART: usize = 8 << 20;
/// Parts uploaded at once.
const MULTIPART_CONCURRENCY: usize = 2;
/// Ranged GETs a restore keeps in flight. Two to four at a time, a restore of
/// 2 GiB from a local Garage took 31–63 s waiting on round trips; with 8, 5.3 s
/// (docs/S3.md, "Restores from S3").
const PARALLEL_READS: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct Counters {
    put: AtomicU64,
    pack_put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
}

/// A parsed `s3://BUCKET/PREFIX` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty (the bucket's root).
    pub prefix: String,
}

impl S3Url {
    /// True when `s` names an S3 store (starts with `s3://`).
    pub fn is_s3(s: &str) -> bool {
        s.starts_with("s3://")
    }

    pub fn parse(s: &str) -> std::result::Result<S3Url, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "{s:?} names no bucket: the form is s3://BUCKET/PREFIX"
            ));
        }
        if !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(format!(
                "{s:?}: bucket name {bucket:?} may only hold lowercase letters, digits, `-` and `.`"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.contains(['\0', '\n', '\r', '\\']) {
            return Err(format!("{s:?}: the prefix contains a control character"));
        }
        if !prefix.is_empty() {
            ObjPath::parse(prefix).map_err(|e| format!("{s:?}: invalid prefix: {e}"))?;
            if prefix.split('/').any(|c| c == "." || c == "..") {
                return Err(format!("{s:?}: the prefix contains `.` or `..`"));
            }
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where and as whom to connect; [`S3Settings::from_env`] reads the standard
/// variables.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    /// Retries of a request that failed with a 5xx answer, a timeout or a broken
    /// connection, with exponential backoff (0.1 s doubling up to 15 s).
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    /// Time limit of one request (an upload of a whole pack included).
    pub request_timeout: Duration,
    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted
    /// ones (`bucket.endpoint/key`). `None`: path-style with a custom endpoint
    /// (self-hosted servers rarely have a DNS name per bucket), virtual-hosted on AWS.
    pub path_style: Option<bool>,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            access_key_id: None,
            secret_access_key: None,
            region: None,
            endpoint: None,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(300),
            path_style: None,
        }
    }
}

impl S3Settings {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (else
    /// `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` (else `AWS_ENDPOINT`),
    /// `PAGESNAP_S3_ADDRESSING` (`path` or `virtual`); retries from
    /// `PAGESNAP_S3_RETRIES` and `PAGESNAP_S3_RETRY_TIMEOUT` (seconds), the
    /// request time limit from `PAGESNAP_S3_TIMEOUT` (seconds).
    pub fn from_env() -> S3Settings {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let secs = |k: &str| {
            env(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
        };
        let d = S3Settings::default();
        S3Settings {
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            endpoint: env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT")),
            max_retries: env("PAGESNAP_S3_RETRIES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.max_retries),
            retry_timeout: secs("PAGESNAP_S3_RETRY_TIMEOUT").unwrap_or(d.retry_timeout),
            request_timeout: secs("PAGESNAP_S3_TIMEOUT").unwrap_or(d.request_timeout),
            path_style: env("PAGESNAP_S3_ADDRESSING").and_then(|v| match v.as_str() {
                "path" => Some(true),
                "virtual" => Some(false),
                _ => None,
            }),
        }
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

pub struct S3Backend {
    url: S3Url,
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
    counters: Counters,
}

impl S3Backend {
    /// A backend for `s3://BUCKET/PREFIX`, configured from the environment.
    /// Sends no request: see [`S3Backend::check_bucket`].
    pub fn from_url(url: &str) -> Result<S3Backend> {
        let parsed = S3Url::parse(url).map_err(|m| BackendError::Io {
            location: url.to_string(),
            op: "open",
            key: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, m),
        })?;
        Self::new(parsed)
    }

    /// A backend for `url` with the settings of the environment.
    pub fn new(url: S3Url) -> Result<S3Backend> {
        Self::with_settings(url, &S3Settings::from_env())
    }

    /// A backend for `url` with explicit settings (over whatever else of the
    /// `AWS_*` environment `object_store` understands).
    pub fn with_settings(url: S3Url, settings: &S3Settings) -> Result<S3Backend> {
        let location = url.to_string();
        let config_err = |m: String| BackendError::Io {
            location: location.clone(),
            op: "configure",
            key: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, m),
        };
        // Without keys object_store would ask the cloud's instance metadata
        // service; this first version supports explicit keys only.
        let (Some(key_id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key)
        else {
            return Err(config_err(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            ));
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_retry(settings.retry_config())
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(settings.request_timeout),
            )
            .with_bucket_name(&url.bucket)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret);
        if let Some(r) = &settings.region {
            builder = builder.with_region(r);
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        // A custom endpoint (Garage, MinIO, …) gets path-style requests
        // (`endpoint/bucket/key`), which need no DNS name per bucket.
        let path_style = settings.path_style.unwrap_or(settings.endpoint.is_some());
        builder = builder.with_virtual_hosted_style_request(!path_style);
        let store = builder
            .build()
            .map_err(|e| config_err(format!("cannot configure S3 access: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackendError::Io {
                location: location.clone(),
                op: "start runtime for",
                key: String::new(),
                source: e,
            })?;
        Ok(S3Backend {
            url,
            store,
            rt,
            counters: Counters::default(),
        })
    }

    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// Requests sent so far, per kind.
    pub fn requests(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            put: c.put.load(Ordering::Relaxed),
            pack_put: c.pack_put.load(Ordering::Relaxed),
            get: c.get.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
            cached: 0,
        }
    }

    /// One LIST request under the prefix: tells a missing bucket and refused
    /// credentials apart from a store that is just not there (yet).
    pub fn check_bucket(&self) -> Result<()> {
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let prefix = self.prefix_path("")?;
        match self
            .rt
            .block_on(self.store.list_with_delimiter(prefix.as_ref()))
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(BackendError::Io {
                location: self.location(),
                op: "check bucket",
                key: self.url.bucket.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the bucket does not exist ({e})"),
                ),
            }),
            Err(e) => Err(self.err("check bucket", &self.url.bucket, e)),
        }
    }

    /// The object path of `key` under the store's prefix.
    fn path(&self, key: &str) -> Result<ObjPath> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key.contains(['\0', '\n', '\r', '\\'])
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        let full = if self.url.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.url.prefix)
        };
        match (bad, ObjPath::parse(&full)) {
            (false, Ok(p)) => Ok(p),
            _ => Err(self.invalid_key(key)),
        }
    }

    /// The path of a list prefix (`snapshots/`, or empty for the whole store).
    fn prefix_path(&self, prefix: &str) -> Result<Option<ObjPath>> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            if self.url.prefix.is_empty() {
                return Ok(None);
            }
            return ObjPath::parse(&self.url.prefix)
                .map(Some)
                .map_err(|_| self.invalid_key(""));
        }
        self.path(prefix).map(Some)
    }

    fn invalid_key(&self, key: &str) -> BackendError {
        BackendError::Io {
            location: self.location(),
            op: "use",
            key: key.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid object key"),
        }
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> BackendError {
        use object_store::Error as E;
        let kind = match &e {
            E::NotFound { .. } => {
                return BackendError::NotFound {
                    location: self.location(),
                    key: key.to_string(),
                }
            }
            E::AlreadyExists { .. } => {
                return BackendError::AlreadyExists {
                    location: self.location(),
                    key: key.to_string(),
                }
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                std::io::ErrorKind::PermissionDenied
            }
            // Some requests (LIST) report a refusal as a generic error: tell it
            // by the status the server returned.
            _ if is_status(&e, &["403 Forbidden", "401 Unauthorized"]) => {
                std::io::ErrorKind::PermissionDenied
            }
            _ => std::io::ErrorKind::Other,
        };
        let msg = match kind {
            std::io::ErrorKind::PermissionDenied => format!(
                "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and the key's rights on the bucket ({e})"
            ),
            _ => e.to_string(),
        };
        BackendError::Io {
            location: self.location(),
            op,
            key: key.to_string(),
            source: std::io::Error::new(kind, msg),
        }
    }

    fn range_err(&self, key: &str, len: u64, range: &Range<u64>) -> BackendError {
        BackendError::Range {
            location: self.location(),
            key: key.to_string(),
            len,
            start: range.start,
            end: range.end,
        }
    }

    /// `put` of a buffer this backend owns: the HTTP client sends (and, on a
    /// retry, sends again) the same bytes without copying them.
    fn put_bytes(&self, key: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let path = self.path(key)?;
        let opts = PutOptions {
            mode: match mode {
                PutMode::Overwrite => object_store::PutMode::Overwrite,
                PutMode::Create => object_store::PutMode::Create,
            },
            ..Default::default()
        };
        if mode == PutMode::Create {
            // The conditional PUT below is atomic on servers that honour
            // `If-None-Match: *` (AWS S3, MinIO, R2). Some ignore it (Garage 2.5
            // does) and would overwrite: the HEAD first refuses an existing object
            // there too, leaving only the window between the two requests.
            if self.head_len(key, &path).is_ok() {
                return Err(BackendError::AlreadyExists {
                    location: self.location(),
                    key: key.to_string(),
                });
            }
        }
        if mode == PutMode::Overwrite && data.len() > MULTIPART_THRESHOLD {
            return self.put_multipart(key, &path, data);
        }
        self.put_counter(key).fetch_add(1, Ordering::Relaxed);
        let payload = PutPayload::from(data);
        self.rt
            .block_on(self.store.put_opts(&path, payload, opts))
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    /// Uploads a large object in parts of [`MULTIPART_PART`], two at a time; the
    /// object appears only when the upload completes. A failed upload is aborted,
    /// so that no parts are left behind (and billed).
    fn put_multipart(&self, key: &str, path: &ObjPath, data: Bytes) -> Result<()> {
        // Create, one request per part, complete.
        let parts = data.len().div_ceil(MULTIPART_PART) as u64;
        self.put_counter(key)
            .fetch_add(parts + 2, Ordering::Relaxed);
        self.rt
            .block_on(async {
                let upload = self.store.put_multipart(path).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
                for start in (0..data.len()).step_by(MULTIPART_PART) {
                    if let Err(e) = w.wait_for_capacity(MULTIPART_CONCURRENCY).await {
                        let _ = w.abort().await;
                        return Err(e);
                    }
                    // A slice of the same buffer: parts are not copied.
                    w.put(data.slice(start..(start + MULTIPART_PART).min(data.len())));
                }
                w.finish().await
            })
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    /// Where uploads of `key` are counted: pack uploads apart from other puts.
    fn put_counter(&self, key: &str) -> &AtomicU64 {
        if key.starts_with(crate::layout::PACKS) {
            &self.counters.pack_put
        } else {
            &self.counters.put
        }
    }

    fn head_len(&self, key: &str, path: &ObjPath) -> Result<u64> {
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        self.rt
            .block_on(self.store.head(path))
            .map(|m| m.size)
            .map_err(|e| self.err("head", key, e))
    }
}

/// Whether the server answered `e` with one of `statuses` (object_store keeps
/// the status only in the message of some errors).
fn is_status(e: &object_store::Error, statuses: &[&str]) -> bool {
    let text = e.to_string();
    statuses
        .iter()
        .any(|s| text.contains(&format!("status code: {s}")))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
        || is_status(e, &["404 Not Found"])
        || e.to_string().contains("<Code>NoSuchBucket</Code>")
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.url.to_string()
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.put_bytes(key, Bytes::copy_from_slice(data), mode)
    }

    fn put_vec(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<Option<Vec<u8>>> {
        self.put_bytes(key, Bytes::from(data), mode)?;
        Ok(None)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        self.rt
            .block_on(async {
                let r = self.store.get(&path).await?;
                r.bytes().await
            })
            // The buffer the body was collected into, not a copy of it (a 20 MB
            // index object was held twice).
            .map(Vec::from)
            .map_err(|e| self.err("get", key, e))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(key, range, &mut buf)?;
        Ok(buf)
    }

    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        let path = self.path(key)?;
        if range.start >= range.end {
            // An empty (or inverted) range is no valid HTTP range: check it locally.
            let len = self.head_len(key, &path)?;
            if range.start > range.end || range.end > len {
                return Err(self.range_err(key, len, &range));
            }
            buf.clear();
            return Ok(());
        }
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        // The body is copied piece by piece into `buf` (reused by the caller): a
        // restore keeps several reads in flight, and collecting each into a
        // buffer of its own first held every run twice.
        let want = range.end - range.start;
        buf.clear();
        buf.reserve(usize::try_from(want).unwrap_or(0));
        let got = self.rt.block_on(async {
            let r = self
                .store
                .get_opts(&path, GetOptions::new().with_range(Some(range.clone())))
                .await?;
            let mut body = r.into_stream();
            while let Some(piece) = body.try_next().await? {
                buf.extend_from_slice(&piece);
                // More than asked for (a server ignoring the range): stop, the
                // length check below reports it.
                if buf.len() as u64 > want {
                    break;
                }
            }
            Ok::<_, object_store::Error>(buf.len())
        });
        let got_len = match got {
            Ok(n) => n,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackendError::NotFound {
                    location: self.location(),
                    key: key.to_string(),
                })
            }
            Err(e) => {
                // A range past the end is refused (416) or cut short by the
                // server: report it as such when the object is there.
                if let Ok(len) = self.head_len(key, &path) {
                    if range.end > len {
                        return Err(self.range_err(key, len, &range));
                    }
                }
                return Err(self.err("get", key, e));
            }
        };
        if got_len as u64 != want {
            let len = self.head_len(key, &path)?;
            return Err(self.range_err(key, len, &range));
        }
        Ok(())
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match self.head_len(key, &path) {
            Ok(n) => Ok(Some(n)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = self.prefix_path(prefix)?;
        let strip = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        // One LIST request returns up to 1000 keys; count the pages roughly.
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(base.as_ref()).try_collect())
            .map_err(|e| self.err("list", prefix, e))?;
        let pages = (metas.len() as u64).div_ceil(1000);
        if pages > 1 {
            self.counters.list.fetch_add(pages - 1, Ordering::Relaxed);
        }
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let full = m.location.as_ref();
            // Keys outside the prefix cannot come back from a prefixed LIST; skip
            // rather than trust them.
            if let Some(key) = full.strip_prefix(&strip) {
                if key.starts_with(prefix) {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: m.size,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        self.counters.delete.fetch_add(1, Ordering::Relaxed);
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    fn parallel_reads(&self) -> usize {
        PARALLEL_READS
    }

    fn requests(&self) -> Option<RequestCounts> {
        Some(S3Backend::requests(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = S3Url::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(u.bucket, "bucket");
        assert_eq!(u.prefix, "a/b");
        assert_eq!(u.to_string(), "s3://bucket/a/b");
        let u = S3Url::parse("s3://bucket").unwrap();
        assert_eq!(u.prefix, "");
        assert_eq!(u.to_string(), "s3://bucket");
        for bad in [
            "s3://",
            "s3:///x",
            "s3://Bad_Bucket/x",
            "s3://b/../x",
            "/tmp/x",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }
}
