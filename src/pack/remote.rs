//! S3-compatible object storage for packs, checkpoints and the store's identity, through the
//! `object_store` crate (Apache Arrow).
//!
//! Owns the bucket layout under the store's prefix:
//! - `dedupfs.json`: the store's identity (written once at `init`, create-if-absent);
//! - `packs/SSSSS/IIIIIIII.pack`: sealed packs, named as in the local `packs/` directory;
//! - `checkpoints/VVVVVVVVVVVVVVVV-TTTTTTTTTTTT.ckpt`: metadata checkpoints (version, time).
//!
//! Invariants:
//! - `object_store` is async; it runs on one private tokio runtime per process and every call
//!   here blocks the calling thread until done, so the core stays synchronous. No caller is a
//!   runtime thread (the runtime runs nothing but these futures).
//! - Every request is retried with exponential backoff (0.1 s doubling to 15 s) for at most
//!   `retry_timeout`; then its error reaches the caller, classified ([`RemoteErrorKind`]) so
//!   that an unreachable endpoint, refused credentials, a missing bucket and throttling each
//!   read as what they are.
//! - Packs are written with create-if-absent (`If-None-Match: *`): an object is never
//!   overwritten, so a pack id reused by mistake fails loudly instead of destroying data.
//! - Credentials come from the usual AWS environment variables, else from the shared
//!   credentials and config files (`AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`,
//!   `AWS_CONFIG_FILE`); they are never written to the store.

use crate::ids::PackId;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thiserror::Error;

/// Where a store's packs live remotely, as recorded in `dedupfs.json` (no credentials).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:8333`); `None`: `AWS_ENDPOINT_URL` or AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region; `None`: `AWS_REGION`, the profile's, or `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
}

impl RemoteSpec {
    /// Parses `s3://bucket[/prefix]` into (bucket, prefix without slashes at either end).
    pub fn bucket_and_prefix(&self) -> Result<(String, String), RemoteError> {
        let bad = |why: &str| RemoteError::BadUrl {
            url: self.url.clone(),
            reason: why.to_string(),
        };
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "the bucket name must be lowercase letters, digits, - and .",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("the prefix may not contain . or .. parts"));
        }
        Ok((bucket.to_string(), prefix))
    }
}

/// What kind of failure a remote request met (decides the message and the exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteErrorKind {
    NotFound,
    AlreadyExists,
    /// Refused credentials (unknown key, bad signature, access denied).
    Auth,
    NoBucket,
    /// No answer: connection refused, DNS, timeouts.
    Unreachable,
    /// The server kept saying slow down (429/503) past the retry budget.
    Throttled,
    Other,
}

impl RemoteErrorKind {
    fn hint(self) -> &'static str {
        match self {
            RemoteErrorKind::NotFound => "no such object",
            RemoteErrorKind::AlreadyExists => "the object already exists",
            RemoteErrorKind::Auth => {
                "credentials refused (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile)"
            }
            RemoteErrorKind::NoBucket => "the bucket does not exist",
            RemoteErrorKind::Unreachable => "the endpoint is unreachable",
            RemoteErrorKind::Throttled => "the server is throttling requests",
            RemoteErrorKind::Other => "request failed",
        }
    }
}

#[derive(Debug, Error)]
pub enum RemoteError {
    #[error("{url}: not a valid object-storage URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("object storage {url}: {reason}")]
    Config { url: String, reason: String },
    #[error("{op} {location}: {}: {source}", kind.hint())]
    Request {
        op: &'static str,
        location: String,
        kind: RemoteErrorKind,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{location}: {source}")]
    LocalIo {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: object is {got} bytes, expected {want}")]
    Size {
        location: String,
        got: u64,
        want: u64,
    },
}

impl RemoteError {
    pub fn kind(&self) -> RemoteErrorKind {
        match self {
            RemoteError::Request { kind, .. } => *kind,
            _ => RemoteErrorKind::Other,
        }
    }
}

/// Classifies an `object_store` error by its variant and, for the generic ones, by the S3
/// error code or transport failure its message carries (the crate does not type these).
fn classify(e: &object_store::Error) -> RemoteErrorKind {
    use object_store::Error as E;
    // A missing bucket comes back as a plain 404 (NotFound) on object requests.
    let chain = {
        let mut m = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            m.push_str(" | ");
            m.push_str(&s.to_string());
            src = s.source();
        }
        m
    };
    if chain.contains("NoSuchBucket") {
        return RemoteErrorKind::NoBucket;
    }
    match e {
        E::NotFound { .. } => return RemoteErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => return RemoteErrorKind::AlreadyExists,
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => return RemoteErrorKind::Auth,
        _ => {}
    }
    let has = |s: &str| chain.contains(s);
    if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("403 Forbidden")
    {
        RemoteErrorKind::Auth
    } else if has("SlowDown") || has("429 Too Many") || has("503 Service Unavailable") {
        RemoteErrorKind::Throttled
    } else if has("error sending request")
        || has("onnection refused")
        || has("dns error")
        || has("timed out")
        || has("operation timed out")
    {
        RemoteErrorKind::Unreachable
    } else {
        RemoteErrorKind::Other
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Two workers: an upload and a restore's ranged reads proceed side by side. A
        // failure to build a runtime is a broken process (no threads), not a user error.
        #[allow(clippy::expect_used)]
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dedupfs-s3")
            .enable_all()
            .build()
            .expect("tokio runtime for object storage")
    })
}

/// Knobs for requests.
#[derive(Clone, Copy, Debug)]
pub struct RemoteTuning {
    /// A request (with its retries) gives up after this long.
    pub retry_timeout: Duration,
}

impl Default for RemoteTuning {
    fn default() -> Self {
        RemoteTuning {
            retry_timeout: Duration::from_secs(60),
        }
    }
}

/// One store's prefix in a bucket.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    prefix: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// Reads `key` of `profile` from an INI-style AWS file.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            in_section = line[1..line.len() - 1].trim() == section;
        } else if in_section {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

/// Credentials and settings from the AWS shared files, for what the environment lacks.
fn profile_settings(mut b: AmazonS3Builder) -> AmazonS3Builder {
    use object_store::aws::AmazonS3ConfigKey as K;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let home = env("HOME").unwrap_or_default();
    let creds = env("AWS_SHARED_CREDENTIALS_FILE").unwrap_or(format!("{home}/.aws/credentials"));
    let conf = env("AWS_CONFIG_FILE").unwrap_or(format!("{home}/.aws/config"));
    let creds = std::fs::read_to_string(creds).unwrap_or_default();
    let conf = std::fs::read_to_string(conf).unwrap_or_default();
    let conf_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let from_files = |key: &str| {
        ini_value(&creds, &profile, key).or_else(|| ini_value(&conf, &conf_section, key))
    };
    if env("AWS_ACCESS_KEY_ID").is_none() {
        if let (Some(id), Some(secret)) = (
            from_files("aws_access_key_id"),
            from_files("aws_secret_access_key"),
        ) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = from_files("aws_session_token") {
                b = b.with_token(t);
            }
        }
    }
    if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        if let Some(r) = from_files("region") {
            b = b.with_config(K::Region, r);
        }
    }
    if env("AWS_ENDPOINT_URL").is_none() && env("AWS_ENDPOINT").is_none() {
        if let Some(e) = from_files("endpoint_url") {
            b = b.with_config(K::Endpoint, e);
        }
    }
    b
}

impl Remote {
    /// Connects (lazily: nothing is sent until the first request) to `spec`'s bucket.
    pub fn connect(spec: &RemoteSpec, tuning: RemoteTuning) -> Result<Remote, RemoteError> {
        use object_store::aws::AmazonS3ConfigKey as K;
        let (bucket, prefix) = spec.bucket_and_prefix()?;
        let mut b = profile_settings(AmazonS3Builder::from_env()).with_bucket_name(&bucket);
        if std::env::var("AWS_DEFAULT_REGION").is_ok() && std::env::var("AWS_REGION").is_err() {
            if let Ok(r) = std::env::var("AWS_DEFAULT_REGION") {
                b = b.with_region(r);
            }
        }
        if let Some(r) = &spec.region {
            b = b.with_region(r);
        }
        if b.get_config_value(&K::Region).is_none() {
            b = b.with_region("us-east-1");
        }
        if let Some(e) = &spec.endpoint {
            b = b.with_endpoint(e);
        }
        let endpoint = b.get_config_value(&K::Endpoint).unwrap_or_default();
        let retry = RetryConfig {
            backoff: Default::default(),
            max_retries: 12,
            retry_timeout: tuning.retry_timeout,
        };
        let client = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        // Path-style requests (`endpoint/bucket/key`): what S3 look-alikes expect; AWS
        // accepts both.
        let s3: AmazonS3 = b
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| RemoteError::Config {
                url: spec.url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Remote {
            store: Arc::new(s3),
            url: spec.url.trim_end_matches('/').to_string(),
            prefix,
        })
    }

    /// A remote on any `object_store` backend (tests use the in-memory one).
    pub fn on(store: Arc<dyn ObjectStore>, url: &str, prefix: &str) -> Remote {
        Remote {
            store,
            url: url.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/key`, for messages.
    pub fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> RemoteError {
        RemoteError::Request {
            op,
            location: self.location(key),
            kind: classify(&e),
            source: Box::new(e),
        }
    }

    pub fn pack_key(id: PackId) -> String {
        format!("packs/{:05x}/{:08x}.pack", id.0 >> 10, id.0)
    }

    /// Writes `data` at `key` unless an object is there already (then
    /// [`RemoteErrorKind::AlreadyExists`]).
    pub fn put_new(&self, key: &str, data: Vec<u8>) -> Result<(), RemoteError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let p = self.path(key);
        runtime()
            .block_on(self.store.put_opts(&p, PutPayload::from(data), opts))
            .map(|_| ())
            .map_err(|e| self.err("PUT", key, e))
    }

    /// Writes `data` at `key`, replacing what is there.
    pub fn put(&self, key: &str, data: Vec<u8>) -> Result<(), RemoteError> {
        let p = self.path(key);
        runtime()
            .block_on(self.store.put(&p, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.err("PUT", key, e))
    }

    /// Uploads a local file in parts (checkpoints, which can be large).
    pub fn put_file(&self, key: &str, file: &Path) -> Result<(), RemoteError> {
        use std::io::Read;
        let local = |e| RemoteError::LocalIo {
            location: file.display().to_string(),
            source: e,
        };
        let mut f = std::fs::File::open(file).map_err(local)?;
        let p = self.path(key);
        runtime().block_on(async {
            let up = self
                .store
                .put_multipart(&p)
                .await
                .map_err(|e| self.err("PUT", key, e))?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(up, 16 << 20);
            let mut buf = vec![0u8; 4 << 20];
            loop {
                let n = f.read(&mut buf).map_err(local)?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(2)
                    .await
                    .map_err(|e| self.err("PUT", key, e))?;
                w.write(&buf[..n]);
            }
            w.finish().await.map_err(|e| self.err("PUT", key, e))?;
            Ok(())
        })
    }

    /// Downloads `key` into a local file.
    pub fn get_to_file(&self, key: &str, file: &Path) -> Result<u64, RemoteError> {
        use std::io::Write;
        let local = |e| RemoteError::LocalIo {
            location: file.display().to_string(),
            source: e,
        };
        let mut out = std::fs::File::create(file).map_err(local)?;
        let p = self.path(key);
        let n = runtime().block_on(async {
            let r = self
                .store
                .get(&p)
                .await
                .map_err(|e| self.err("GET", key, e))?;
            let mut s = r.into_stream();
            let mut n = 0u64;
            while let Some(b) = s.next().await {
                let b = b.map_err(|e| self.err("GET", key, e))?;
                out.write_all(&b).map_err(local)?;
                n += b.len() as u64;
            }
            Ok::<_, RemoteError>(n)
        })?;
        out.sync_all().map_err(local)?;
        Ok(n)
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, RemoteError> {
        let p = self.path(key);
        runtime()
            .block_on(async { self.store.get(&p).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.err("GET", key, e))
    }

    /// Bytes `range` of `key`; fewer only if the object is shorter (checked by the caller).
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, RemoteError> {
        let p = self.path(key);
        runtime()
            .block_on(self.store.get_range(&p, range))
            .map(|b| b.to_vec())
            .map_err(|e| self.err("GET", key, e))
    }

    /// The object's size, or `None` if there is none.
    pub fn head(&self, key: &str) -> Result<Option<u64>, RemoteError> {
        let p = self.path(key);
        match runtime().block_on(self.store.head(&p)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", key, e)),
        }
    }

    /// Every object under `dir/` (keys relative to the store's prefix) with its size.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, RemoteError> {
        let p = self.path(dir);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        runtime().block_on(async {
            let mut s = self.store.list(Some(&p));
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| self.err("LIST", dir, e))?;
                let key = m.location.as_ref();
                let key = key.strip_prefix(&strip).unwrap_or(key).to_string();
                out.push((key, m.size));
            }
            out.sort();
            Ok(out)
        })
    }

    /// Deletes `key`; an object already gone is not an error (deletes are retried).
    pub fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let p = self.path(key);
        match runtime().block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", key, e)),
        }
    }

    /// The packs in the bucket with their sizes.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>, RemoteError> {
        let mut out: Vec<(PackId, u64)> = self
            .list("packs")?
            .into_iter()
            .filter_map(|(k, n)| {
                let name = k.rsplit('/').next()?;
                let hex = name.strip_suffix(".pack")?;
                let id = PackId(u32::from_str_radix(hex, 16).ok()?);
                // Only the key this id is stored under (a copy elsewhere is not ours).
                (k == Self::pack_key(id)).then_some((id, n))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Uploads a sealed local pack under its id, create-if-absent. If an object is there
    /// already (an upload whose success was not recorded before a crash), it is accepted
    /// only if it is byte-for-byte the local pack.
    pub fn upload_pack(&self, id: PackId, local: &Path) -> Result<u64, RemoteError> {
        let key = Self::pack_key(id);
        let data = std::fs::read(local).map_err(|e| RemoteError::LocalIo {
            location: local.display().to_string(),
            source: e,
        })?;
        let n = data.len() as u64;
        match self.put_new(&key, data) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == RemoteErrorKind::AlreadyExists => {
                let there = self.get(&key)?;
                let mine = std::fs::read(local).map_err(|e| RemoteError::LocalIo {
                    location: local.display().to_string(),
                    source: e,
                })?;
                if there == mine {
                    Ok(n)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_profiles_parse() {
        let s = |u: &str| RemoteSpec {
            url: u.into(),
            endpoint: None,
            region: None,
        };
        assert_eq!(
            s("s3://bk/a/b/").bucket_and_prefix().unwrap(),
            ("bk".into(), "a/b".into())
        );
        assert_eq!(
            s("s3://bk").bucket_and_prefix().unwrap(),
            ("bk".into(), "".into())
        );
        for bad in ["http://bk/x", "s3://", "s3://Bk/x", "s3://bk/../x"] {
            assert!(s(bad).bucket_and_prefix().is_err(), "{bad}");
        }
        let ini = "[default]\naws_access_key_id = A\n[other]\naws_access_key_id=B\n";
        assert_eq!(
            ini_value(ini, "other", "aws_access_key_id").as_deref(),
            Some("B")
        );
        assert_eq!(
            ini_value(ini, "default", "aws_access_key_id").as_deref(),
            Some("A")
        );
        assert_eq!(ini_value(ini, "none", "aws_access_key_id"), None);
    }

    #[test]
    fn errors_are_classified_by_what_the_server_said() {
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        };
        let k = |msg: &str| classify(&generic(msg));
        assert_eq!(
            k("Server returned 503 Service Unavailable: <Code>SlowDown</Code>"),
            RemoteErrorKind::Throttled
        );
        assert_eq!(k("429 Too Many Requests"), RemoteErrorKind::Throttled);
        assert_eq!(k("<Code>NoSuchBucket</Code>"), RemoteErrorKind::NoBucket);
        assert_eq!(k("<Code>InvalidAccessKeyId</Code>"), RemoteErrorKind::Auth);
        assert_eq!(
            k("<Code>SignatureDoesNotMatch</Code>"),
            RemoteErrorKind::Auth
        );
        assert_eq!(
            k("HTTP error: error sending request"),
            RemoteErrorKind::Unreachable
        );
        assert_eq!(k("something else"), RemoteErrorKind::Other);
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "404 <Code>NoSuchKey</Code>".to_string().into(),
        };
        assert_eq!(classify(&nf), RemoteErrorKind::NotFound);
        let nb = object_store::Error::NotFound {
            path: "x".into(),
            source: "404 <Code>NoSuchBucket</Code>".to_string().into(),
        };
        assert_eq!(classify(&nb), RemoteErrorKind::NoBucket);
    }

    #[test]
    fn in_memory_remote_round_trips_and_never_overwrites_a_pack() {
        let r = Remote::on(
            Arc::new(object_store::memory::InMemory::new()),
            "s3://t/p",
            "p",
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.pack");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(r.upload_pack(PackId(3), &f).unwrap(), 10);
        // the same bytes again: accepted (a crash after upload, before it was recorded)
        assert_eq!(r.upload_pack(PackId(3), &f).unwrap(), 10);
        std::fs::write(&f, b"other bytes").unwrap();
        let e = r.upload_pack(PackId(3), &f).unwrap_err();
        assert_eq!(e.kind(), RemoteErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            r.get_range(&Remote::pack_key(PackId(3)), 2..5).unwrap(),
            b"234"
        );
        assert_eq!(r.list_packs().unwrap(), vec![(PackId(3), 10)]);
        assert_eq!(r.head(&Remote::pack_key(PackId(4))).unwrap(), None);
        r.delete(&Remote::pack_key(PackId(3))).unwrap();
        r.delete(&Remote::pack_key(PackId(3))).unwrap();
        assert!(r.list_packs().unwrap().is_empty());
    }
}
