//! S3 and S3-compatible servers through aws-sdk-s3.
//!
//! Keys are placed under `s3://BUCKET/PREFIX/`. Parts travel as in-memory `Bytes`, which keeps
//! the SDK from switching to `aws-chunked` bodies that several S3-compatible servers reject.
//! Every part and object carries its `Content-MD5`, which the server checks on receipt, and
//! its signature covers its SHA-256 ([`digests`]); the SDK's default `x-amz-checksum-*` values
//! are only sent where the service requires them (integrity at rest is checked end to end by
//! the SHA-256s in each manifest). With `ServerSideEncryption`, every object written asks for
//! it ([`Encryption`]). The SDK's own retries are off: retrying is the job of
//! [`super::retry::RetryStore`], so every store behaves the same way. Every PUT and
//! CompleteMultipartUpload is conditional (`If-None-Match: *`): credentials that may write but
//! not delete cannot destroy a stored object by replacing it either.
//!
//! Object Lock: locks are sent with PutObject and CreateMultipartUpload and set again with
//! PutObjectRetention ([`Store::retain`]); HeadObject reads them back. A bucket with Object
//! Lock is versioned (and so is any bucket whose owner enabled versioning: `connect` asks,
//! [`S3Store::keeps_versions`]), and a store made [`S3Store::versioned`] treats it so: `delete` removes
//! every version of the key by version id (a plain DeleteObject would only add a delete marker
//! and leave the locked bytes, billed), and `head`, `get`, `get_range` and `list` see through
//! a delete marker to the newest real version underneath (what a DeleteObject by a
//! compromised host leaves). Older versions under a real latest one are not looked at: runs
//! are never overwritten.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, GlacierJobParameters, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode, RestoreRequest, ServerSideEncryption, Tier,
};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    ErrorKind, LockMode, ObjectInfo, ObjectLock, PartReceipt, PendingUpload, RestoreStatus, Result,
    RetrievalTier, StorageClass, Store, StoreError, UploadOptions,
};

/// How to reach the server; everything optional falls back to the AWS defaults.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// s3napback's `key=` / `secret=` file.
    pub keyfile: Option<PathBuf>,
    /// Longest wait for a response before the attempt counts as failed.
    pub timeout: Duration,
    /// `CaFile`: a PEM bundle of CAs trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `AddressingStyle`.
    pub addressing: super::endpoint::Addressing,
    /// `Profile`: credentials from this profile of the shared files (when no keyfile).
    pub profile: Option<String>,
    /// `RoleArn`: the role assumed with the credentials above.
    pub role: Option<AssumeRole>,
    /// `ServerSideEncryption` (+ `KmsKeyId`): asked for on every object written.
    pub encryption: Option<Encryption>,
}

/// Server-side encryption S3 is asked for on every object s3nap writes (PutObject,
/// CreateMultipartUpload, CopyObject; parts inherit their upload's). SSE-C is not offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3: `AES256`.
    Aes256,
    /// SSE-KMS: `aws:kms`, with the key given, else the account's default `aws/s3` key.
    Kms { key_id: Option<String> },
}

impl Encryption {
    fn algorithm(&self) -> ServerSideEncryption {
        match self {
            Encryption::Aes256 => ServerSideEncryption::Aes256,
            Encryption::Kms { .. } => ServerSideEncryption::AwsKms,
        }
    }

    fn key_id(&self) -> Option<String> {
        match self {
            Encryption::Aes256 => None,
            Encryption::Kms { key_id } => key_id.clone(),
        }
    }
}

/// Adds the encryption headers to every request that creates an object, whichever code builds
/// it (the store's writes and a bucket set's copies share [`client`]), so no writer can forget
/// them: a bucket whose policy demands them would refuse that object.
#[derive(Debug)]
struct Encrypt(Encryption);

impl aws_sdk_s3::config::Intercept for Encrypt {
    fn name(&self) -> &'static str {
        "s3nap server-side encryption"
    }

    fn modify_before_serialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextMut<
            '_,
        >,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        use aws_sdk_s3::operation::{
            copy_object::CopyObjectInput, create_multipart_upload::CreateMultipartUploadInput,
            put_object::PutObjectInput,
        };
        let (algorithm, key_id) = (Some(self.0.algorithm()), self.0.key_id());
        let input = context.input_mut();
        if let Some(put) = input.downcast_mut::<PutObjectInput>() {
            (put.server_side_encryption, put.ssekms_key_id) = (algorithm, key_id);
        } else if let Some(create) = input.downcast_mut::<CreateMultipartUploadInput>() {
            (create.server_side_encryption, create.ssekms_key_id) = (algorithm, key_id);
        } else if let Some(copy) = input.downcast_mut::<CopyObjectInput>() {
            (copy.server_side_encryption, copy.ssekms_key_id) = (algorithm, key_id);
        }
        Ok(())
    }
}

pub use super::credentials::{parse_keyfile, AssumeRole, KeyPair};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty or ending in '/'.
    prefix: String,
    clock: ServerClock,
    /// Whether the bucket keeps versions (Object Lock): see the module comment.
    versioned: bool,
}

/// One version of a key, newest first as S3 lists them.
#[derive(Debug, Clone)]
struct Version {
    id: String,
    delete_marker: bool,
    size: u64,
    modified: Option<DateTime<Utc>>,
}

/// The `Date` header of the latest response: the server's clock, which ages of objects and
/// uploads (stamped by the server) must be measured with.
#[derive(Debug, Clone, Default)]
struct ServerClock(std::sync::Arc<std::sync::Mutex<Option<DateTime<Utc>>>>);

impl aws_sdk_s3::config::Intercept for ServerClock {
    fn name(&self) -> &'static str {
        "s3nap server clock"
    }

    fn read_after_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok());
        if let Some(date) = date {
            *self.0.lock().expect("not poisoned") = Some(date.with_timezone(&Utc));
        }
        Ok(())
    }
}

/// A client for `settings`: SDK retries off (callers retry through [`super::retry`]),
/// addressing as [`super::endpoint::Addressing`] says, us-east-1 when nothing names a region,
/// every request through [`super::endpoint::http_client`].
pub async fn client(settings: &S3Settings) -> anyhow::Result<Client> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(super::endpoint::http_client(settings.ca_file.as_deref())?);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = super::credentials::load(
        loader,
        settings.keyfile.as_deref(),
        settings.profile.as_deref(),
        settings.role.as_ref(),
    )
    .await?;
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10).min(settings.timeout))
                .read_timeout(settings.timeout)
                .build(),
        )
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    config = config.force_path_style(settings.addressing.path_style(settings.endpoint.is_some()));
    if let Some(encryption) = &settings.encryption {
        config = config.interceptor(Encrypt(encryption.clone()));
    }
    Ok(Client::from_conf(config.build()))
}

/// An SDK error as a [`StoreError`] about `target`, classified for retrying.
pub fn sdk_error<E>(
    operation: &'static str,
    target: String,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(refused) = super::endpoint::TlsRefused::find(&err) {
        return StoreError::new(ErrorKind::Other, operation, target, refused.to_string());
    }
    let kind = match &err {
        // No credentials to sign with (STS refused the role, a profile is missing…): the
        // providers retry their own calls; another attempt of the request would not help.
        SdkError::DispatchFailure(_) if super::credentials::is_credentials_error(&err) => {
            ErrorKind::Denied
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Transient
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or_default();
            match (status, code) {
                // 403, but no permission is missing: the object is archived (GLACIER,
                // DEEP_ARCHIVE) and has not been retrieved.
                (_, "InvalidObjectState") => ErrorKind::Other,
                (404, _) | (_, "NoSuchKey" | "NoSuchUpload" | "NoSuchBucket") => {
                    ErrorKind::NotFound
                }
                (401 | 403, _) => ErrorKind::Denied,
                // The conditional write (`If-None-Match: *`) met an existing key.
                (412, _) | (_, "PreconditionFailed") => ErrorKind::Exists,
                // The server lacks the call (S3-compatible servers answer so): asking again
                // cannot help, and must not cost a round of backoff.
                (501, _) | (_, "NotImplemented") => ErrorKind::NotImplemented,
                // The body's Content-MD5 (or its signed SHA-256) does not match the bytes the
                // server received: damaged on the way; the retry sends them again from memory.
                (_, "BadDigest" | "XAmzContentSHA256Mismatch") => ErrorKind::Transient,
                // 409 ConditionalRequestConflict: a conditional write of the same key is still
                // in flight (our own first attempt, whose reply was lost, perhaps): AWS says
                // to retry, and the retry then meets the finished object (412).
                (429 | 500..=599, _)
                | (_, "ConditionalRequestConflict")
                | (_, "SlowDown" | "Throttling" | "RequestTimeout" | "InternalError") => {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Other,
            }
        }
        _ => ErrorKind::Other,
    };
    let message = match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match (se.err().code(), se.err().message()) {
                (Some(code), Some(msg)) => format!("{code} (HTTP {status}): {msg}"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}: {}", super::cause_chain(se.err())),
            }
        }
        other => super::cause_chain(other),
    };
    // Signed for another region than the bucket's: no retry will change that.
    if let Some(region) = redirected_region(&err) {
        let message = format!("{message}; {}", super::endpoint::region_advice(&region));
        return StoreError::new(ErrorKind::Other, operation, target, message);
    }
    StoreError::new(kind, operation, target, message)
}

/// The region the server says the bucket is in, when it refused a request for being signed
/// for another one.
fn redirected_region<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    let raw = err.raw_response()?;
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or_default();
    super::endpoint::redirected_region(
        raw.status().as_u16(),
        code,
        raw.headers().get("x-amz-bucket-region"),
        raw.body().bytes().unwrap_or_default(),
    )
}

impl S3Store {
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
    ) -> anyhow::Result<Self> {
        let prefix = prefix.trim_matches('/');
        let clock = ServerClock::default();
        let client = client(settings).await?;
        let client = Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(clock.clone())
                .build(),
        );
        Ok(S3Store {
            clock,
            client,
            versioned: false,
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// This store on a bucket that keeps versions (Object Lock; see the module comment).
    pub fn versioned(mut self) -> Self {
        self.versioned = true;
        self
    }

    /// Whether the bucket keeps versions (versioning enabled, or suspended with versions kept
    /// from before): then a delete without a version id only lays a delete marker, and the
    /// bytes stay, billed, however the configuration is set.
    pub async fn keeps_versions(&self) -> Result<bool> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.error("get versioning of", "", e))?;
        Ok(out.status().is_some())
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Every version and delete marker of exactly `key`, newest first.
    async fn versions(&self, key: &str) -> Result<Vec<Version>> {
        Ok(self
            .versions_under(key)
            .await?
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect())
    }

    /// Every version and delete marker of the keys under `prefix` (relative keys), each key's
    /// newest first, keys in order.
    async fn versions_under(&self, prefix: &str) -> Result<Vec<(String, Version)>> {
        let mut out: Vec<(String, Version)> = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_key_marker(key_marker)
                .set_version_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| self.error("list versions", prefix, e))?;
            let relative = |k: Option<&str>| {
                k.and_then(|k| k.strip_prefix(&self.prefix))
                    .map(str::to_string)
            };
            let mut found = Vec::new();
            for v in page.versions() {
                if let (Some(key), Some(id)) = (relative(v.key()), v.version_id()) {
                    let version = Version {
                        id: id.to_string(),
                        delete_marker: false,
                        size: v.size().unwrap_or(0).max(0) as u64,
                        modified: v.last_modified().and_then(timestamp),
                    };
                    found.push((key, version));
                }
            }
            for m in page.delete_markers() {
                if let (Some(key), Some(id)) = (relative(m.key()), m.version_id()) {
                    let version = Version {
                        id: id.to_string(),
                        delete_marker: true,
                        size: 0,
                        modified: m.last_modified().and_then(timestamp),
                    };
                    found.push((key, version));
                }
            }
            out.extend(found);
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        // Versions and markers come in two lists: merge them per key, newest first (a stable
        // sort keeps S3's order among equal times).
        out.sort_by(|(a, va), (b, vb)| a.cmp(b).then(vb.modified.cmp(&va.modified)));
        Ok(out)
    }

    /// The version to read of `key` whose latest version is missing: the newest real version
    /// under a delete marker, on a versioned store; `None` otherwise.
    async fn under_marker(&self, key: &str) -> Result<Option<Version>> {
        if !self.versioned {
            return Ok(None);
        }
        Ok(self
            .versions(key)
            .await?
            .into_iter()
            .find(|v| !v.delete_marker))
    }

    async fn get_version(
        &self,
        key: &str,
        version: Option<&str>,
        range: Option<String>,
    ) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_version_id(version.map(str::to_string))
            .set_range(range)
            .send()
            .await
            .map_err(|e| self.error("get", key, e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| body_error(self.locate(key), e))?;
        Ok(body.into_bytes())
    }

    async fn get_seeing_through(&self, key: &str, range: Option<String>) -> Result<Bytes> {
        match self.get_version(key, None, range.clone()).await {
            Err(e) if e.kind == ErrorKind::NotFound => match self.under_marker(key).await? {
                Some(v) => self.get_version(key, Some(&v.id), range).await,
                None => Err(e),
            },
            other => other,
        }
    }

    async fn head_version(&self, key: &str, version: Option<&str>) -> Result<Option<ObjectInfo>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => {
                let lock = match (out.object_lock_mode(), out.object_lock_retain_until_date()) {
                    (Some(mode), Some(until)) => Some(ObjectLock {
                        mode: match mode {
                            ObjectLockMode::Compliance => LockMode::Compliance,
                            _ => LockMode::Governance,
                        },
                        until: timestamp(until).unwrap_or_default(),
                    }),
                    _ => None,
                };
                Ok(Some(ObjectInfo {
                    key: key.to_string(),
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    modified: out.last_modified().and_then(timestamp),
                    storage_class: class(out.storage_class().map(|c| c.as_str())),
                    restore: out.restore().map(RestoreStatus::parse).unwrap_or_default(),
                    lock,
                }))
            }
            Err(e) => {
                let err = self.error("head", key, e);
                // A delete marker answers HEAD with 405 (by version) or 404.
                if err.kind == ErrorKind::NotFound
                    || (version.is_some() && err.message.contains("405"))
                {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    fn error<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sdk_error(operation, self.locate(key), err)
    }
}

/// The `Content-MD5` of a body about to be sent: S3 recomputes it from the bytes it receives
/// and refuses the request (400 `BadDigest`) when they differ, so a byte damaged on the way
/// fails that request, which is retried from the same bytes in memory, instead of being found
/// at recovery. Content-MD5 rather than an `x-amz-checksum-*` value: every S3 implementation
/// takes it on PutObject and UploadPart alike, it satisfies Object Lock's demand for a
/// checksum, and it needs nothing at CreateMultipartUpload or CompleteMultipartUpload.
///
/// The body's SHA-256 is also signed (SigV4's `x-amz-content-sha256`), which S3 checks as well
/// (`XAmzContentSHA256Mismatch`): a second check independent of the first, on servers that
/// ignore Content-MD5 on UploadPart (s3s-fs) too. The SDK would hash the body itself, on the
/// runtime thread that sends the request, stalling the other parts' requests for as long
/// (and S3 uploads varied by half from run to run); it is hashed here instead, with the MD5,
/// and handed to the signer ([`SignedBody`]).
///
/// A part is up to hundreds of MiB: hashed off the runtime's threads, which carry the other
/// parts' requests. Small bodies (manifests) are hashed in place.
async fn digests(data: &Bytes) -> std::result::Result<Digests, tokio::task::JoinError> {
    fn digest(data: &[u8]) -> Digests {
        use md5::Digest;
        Digests {
            md5: aws_smithy_types::base64::encode(md5::Md5::digest(data)),
            sha256: SignedBody(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))),
        }
    }
    if data.len() < 1 << 20 {
        return Ok(digest(data));
    }
    let data = data.clone();
    tokio::task::spawn_blocking(move || digest(&data)).await
}

/// A body's digests: the Content-MD5 (base64) and its SHA-256 for the signature.
struct Digests {
    md5: String,
    sha256: SignedBody,
}

/// Hands the signer a body's SHA-256 (lowercase hex) computed beforehand, so that it does not
/// hash the body on the runtime thread ([`digests`]).
#[derive(Debug)]
struct SignedBody(String);

impl aws_sdk_s3::config::Intercept for SignedBody {
    fn name(&self) -> &'static str {
        "SignedBody"
    }

    fn modify_before_signing(
        &self,
        _context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(
                self.0.clone(),
            ));
        Ok(())
    }
}

fn body_error(target: String, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        ErrorKind::Transient,
        "get",
        target,
        format!("reading body: {e}"),
    )
}

#[async_trait]
impl Store for S3Store {
    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full(key))
    }

    async fn put_locked(&self, key: &str, data: Bytes, lock: Option<&ObjectLock>) -> Result<()> {
        let digests = digests(&data)
            .await
            .map_err(|e| StoreError::new(ErrorKind::Other, "put", self.locate(key), e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .if_none_match("*")
            .set_object_lock_mode(lock.map(|l| ObjectLockMode::from(l.mode.as_s3())))
            .set_object_lock_retain_until_date(lock.map(|l| s3_time(l.until)))
            // Checked by S3 on receipt (and required for a locked object): see `digests`.
            .content_md5(digests.md5)
            .body(ByteStream::from(data))
            .customize()
            .interceptor(digests.sha256)
            .send()
            .await
            .map_err(|e| self.error("put", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_seeing_through(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", range.start, range.end - 1);
        self.get_seeing_through(key, Some(range)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self.head_version(key, None).await? {
            Some(info) => Ok(Some(info)),
            None => match self.under_marker(key).await? {
                Some(v) => self.head_version(key, Some(&v.id)).await,
                None => Ok(None),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if self.versioned {
            // Each key's newest real version, whether or not a delete marker lies on top.
            let mut out: Vec<ObjectInfo> = Vec::new();
            for (key, v) in self.versions_under(prefix).await? {
                if v.delete_marker || out.last().is_some_and(|o| o.key == key) {
                    continue;
                }
                out.push(ObjectInfo {
                    key,
                    size: v.size,
                    modified: v.modified,
                    // The class as HEAD tells it is what readers decide by.
                    ..ObjectInfo::default()
                });
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.error("list", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object.last_modified().and_then(timestamp),
                    storage_class: class(object.storage_class().map(|c| c.as_str())),
                    restore: RestoreStatus::None,
                    lock: None,
                });
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() || page.is_truncated() == Some(false) {
                break;
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if !self.versioned {
            return self.delete_version(key, None).await;
        }
        // Every version by its id: without one, S3 only adds a delete marker.
        for v in self.versions(key).await? {
            self.delete_version(key, Some(&v.id)).await?;
        }
        Ok(())
    }

    async fn create_upload(&self, key: &str, options: &UploadOptions) -> Result<String> {
        // STANDARD is S3's default: not naming it keeps servers without classes working.
        let class = (options.storage_class != StorageClass::Standard)
            .then(|| aws_sdk_s3::types::StorageClass::from(options.storage_class.name()));
        let lock = options.lock.as_ref();
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_storage_class(class)
            .set_object_lock_mode(lock.map(|l| ObjectLockMode::from(l.mode.as_s3())))
            .set_object_lock_retain_until_date(lock.map(|l| s3_time(l.until)))
            .send()
            .await
            .map_err(|e| self.error("create upload", key, e))?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            StoreError::new(
                ErrorKind::Other,
                "create upload",
                self.locate(key),
                "no upload id returned",
            )
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        // Checked by S3 on receipt (and required for a part of a locked upload): see
        // `digests`.
        let digests = digests(&data)
            .await
            .map_err(|e| StoreError::new(ErrorKind::Other, "upload part", self.locate(key), e))?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_md5(digests.md5)
            .body(ByteStream::from(data))
            .customize()
            .interceptor(digests.sha256)
            .send()
            .await
            .map_err(|e| self.error("upload part", key, e))?;
        let etag = out.e_tag().map(str::to_string).ok_or_else(|| {
            StoreError::new(
                ErrorKind::Other,
                "upload part",
                self.locate(key),
                "no ETag returned",
            )
        })?;
        Ok(PartReceipt { number, etag })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<PartReceipt>,
    ) -> Result<()> {
        parts.sort_by_key(|p| p.number);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .into_iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number as i32)
                            .e_tag(p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| self.error("complete upload", key, e))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.error("abort upload", key, e);
                if err.kind == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let mut key_marker = None;
        let mut id_marker = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| self.error("list uploads", prefix, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(key) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    initiated: upload.initiated().and_then(timestamp),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn restore(&self, key: &str, days: u32, tier: RetrievalTier) -> Result<()> {
        let tier = match tier {
            RetrievalTier::Standard => Tier::Standard,
            RetrievalTier::Bulk => Tier::Bulk,
            RetrievalTier::Expedited => Tier::Expedited,
        };
        let request = RestoreRequest::builder()
            .days(days.min(i32::MAX as u32) as i32)
            .glacier_job_parameters(
                GlacierJobParameters::builder()
                    .tier(tier)
                    .build()
                    .expect("the tier is set"),
            )
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // 409: the retrieval asked for is on its way already (a retried request, or
            // another reader's).
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("RestoreAlreadyInProgress") =>
            {
                Ok(())
            }
            Err(e) => Err(self.error("restore", key, e)),
        }
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        // Any answer carries the server's Date; the cheapest one that needs no object.
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(""))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.error("read the clock of", "", e))?;
        self.clock.0.lock().expect("not poisoned").ok_or_else(|| {
            StoreError::new(
                ErrorKind::Other,
                "read the clock of",
                self.locate(""),
                "the server's answer has no Date header",
            )
        })
    }

    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()> {
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::from(lock.mode.as_s3()))
            .retain_until_date(s3_time(lock.until))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full(key))
            .retention(retention)
            .send()
            .await
            .map_err(|e| self.error("retain", key, e))?;
        Ok(())
    }

    async fn locks_enabled(&self) -> Result<bool> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled")),
            Err(e) => {
                let err = self.error("read the Object Lock configuration of", "", e);
                if err.message.contains("ObjectLockConfigurationNotFound") {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }
}

impl S3Store {
    async fn delete_version(&self, key: &str, version: Option<&str>) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("delete", key, e))?;
        Ok(())
    }
}

fn s3_time(t: DateTime<Utc>) -> aws_sdk_s3::primitives::DateTime {
    aws_sdk_s3::primitives::DateTime::from_secs(t.timestamp())
}

/// A storage class as S3 names it; `None` for STANDARD, which HEAD leaves out and LIST names.
fn class(name: Option<&str>) -> Option<String> {
    name.filter(|c| !c.is_empty() && *c != StorageClass::Standard.name())
        .map(str::to_string)
}

fn timestamp(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), 0)
}
