//! One versioned bucket through aws-sdk-s3: the few calls bucket sets make beyond the store's
//! (version listings, server-side copies of exact versions, batch deletions of versions,
//! versioning and lifecycle settings), each retried with backoff and failing with an error that
//! names the bucket, key and version it concerns.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, Delete, ExpirationStatus,
    MetadataDirective, ObjectIdentifier, StorageClass,
};
use aws_sdk_s3::Client;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Version;
use crate::config::{BucketSpec, S3Spec};
use crate::store::retry::{with_retries, RetryPolicy};
use crate::store::s3::sdk_error;
use crate::store::{ErrorKind, Result, StoreError};

/// One page of a version listing, entries in listing order (key, then newest first).
#[derive(Debug, Default)]
pub struct VersionPage {
    pub entries: Vec<Version>,
    pub prefixes: Vec<String>,
    /// Where the next page starts (key marker, version id marker); `None` on the last page.
    pub next: Option<(String, Option<String>)>,
}

/// What a copy must carry over besides the bytes (CopyObject carries it by itself; a multipart
/// copy has to set it when the upload starts).
#[derive(Debug, Default)]
struct Head {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    metadata: Option<HashMap<String, String>>,
}

/// A lifecycle rule that expires noncurrent versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoncurrentExpiry {
    pub rule: String,
    pub prefix: String,
    pub days: u64,
}

#[derive(Debug, Clone)]
pub struct BucketClient {
    client: Client,
    pub bucket: String,
    retry: RetryPolicy,
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

/// `bucket/key?versionId=v`, URL-encoded as x-amz-copy-source wants it.
fn copy_source(bucket: &str, key: &str, version: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut source = format!("{bucket}/{}", utf8_percent_encode(key, KEY));
    if version != "null" {
        source.push_str("?versionId=");
        source.push_str(&utf8_percent_encode(version, NON_ALPHANUMERIC).to_string());
    }
    source
}

/// The versions and delete markers of one listing page, in listing order.
fn listed_versions(out: &ListObjectVersionsOutput) -> Vec<Version> {
    let mut entries: Vec<Version> = out
        .versions()
        .iter()
        .map(|v| Version {
            key: v.key().unwrap_or_default().to_string(),
            version_id: v.version_id().unwrap_or("null").to_string(),
            size: v.size().unwrap_or(0).max(0) as u64,
            etag: v.e_tag().unwrap_or_default().to_string(),
            last_modified: time(v.last_modified()),
            storage_class: v
                .storage_class()
                .map(|c| c.as_str().to_string())
                .unwrap_or_else(|| "STANDARD".into()),
            is_latest: v.is_latest().unwrap_or(false),
            delete_marker: false,
        })
        .chain(out.delete_markers().iter().map(|d| Version {
            key: d.key().unwrap_or_default().to_string(),
            version_id: d.version_id().unwrap_or("null").to_string(),
            size: 0,
            etag: String::new(),
            last_modified: time(d.last_modified()),
            storage_class: String::new(),
            is_latest: d.is_latest().unwrap_or(false),
            delete_marker: true,
        }))
        .collect();
    // The SDK splits versions and delete markers apart; put them back in listing order.
    entries.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(b.is_latest.cmp(&a.is_latest))
            .then(b.last_modified.cmp(&a.last_modified))
    });
    entries
}

impl BucketClient {
    pub fn new(client: Client, bucket: &str, retry: RetryPolicy) -> Self {
        BucketClient {
            client,
            bucket: bucket.to_string(),
            retry,
        }
    }

    /// A client for another bucket over the same connection.
    pub fn for_bucket(&self, bucket: &str) -> BucketClient {
        BucketClient::new(self.client.clone(), bucket, self.retry)
    }

    pub fn locate(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn locate_version(&self, key: &str, version: &str) -> String {
        format!("s3://{}/{key} (version {version})", self.bucket)
    }

    pub async fn versioning_enabled(&self) -> Result<bool> {
        let out = with_retries(&self.retry, || async {
            self.client
                .get_bucket_versioning()
                .bucket(&self.bucket)
                .send()
                .await
                .map_err(|e| sdk_error("get versioning of", self.locate(""), e))
        })
        .await?;
        Ok(out.status() == Some(&BucketVersioningStatus::Enabled))
    }

    /// The enabled rules that expire noncurrent versions (none when the bucket has no
    /// lifecycle configuration).
    pub async fn noncurrent_expiries(&self) -> Result<Vec<NoncurrentExpiry>> {
        let out = with_retries(&self.retry, || async {
            match self
                .client
                .get_bucket_lifecycle_configuration()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(out) => Ok(Some(out)),
                Err(e) => {
                    // NoSuchLifecycleConfiguration (HTTP 404): no rules.
                    let e = sdk_error("get lifecycle of", self.locate(""), e);
                    if e.kind == ErrorKind::NotFound {
                        Ok(None)
                    } else {
                        Err(e)
                    }
                }
            }
        })
        .await?;
        let Some(out) = out else {
            return Ok(Vec::new());
        };
        #[allow(deprecated)]
        let rules = out
            .rules()
            .iter()
            .filter(|r| r.status() == &ExpirationStatus::Enabled)
            .filter_map(|r| {
                let days = r.noncurrent_version_expiration()?.noncurrent_days()?;
                let prefix = r
                    .filter()
                    .and_then(|f| {
                        f.prefix()
                            .or_else(|| f.and().and_then(|a| a.prefix()))
                            .map(str::to_string)
                    })
                    .or_else(|| r.prefix().map(str::to_string))
                    .unwrap_or_default();
                Some(NoncurrentExpiry {
                    rule: r.id().unwrap_or("(unnamed)").to_string(),
                    prefix,
                    days: days.max(0) as u64,
                })
            })
            .collect();
        Ok(rules)
    }

    /// One page of ListObjectVersions under `prefix`, grouped at `delimiter` when given.
    pub async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&(String, Option<String>)>,
    ) -> Result<VersionPage> {
        let out = with_retries(&self.retry, || async {
            self.client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_string))
                .set_key_marker(marker.map(|m| m.0.clone()))
                .set_version_id_marker(marker.and_then(|m| m.1.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list versions of", self.locate(prefix), e))
        })
        .await?;
        Ok(VersionPage {
            entries: listed_versions(&out),
            prefixes: out
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string))
                .collect(),
            next: self.next_marker(&out, prefix)?,
        })
    }

    /// Where the page after `out` (of a listing of `prefix`) starts; `None` after the last.
    fn next_marker(
        &self,
        out: &ListObjectVersionsOutput,
        prefix: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        if out.is_truncated() != Some(true) {
            return Ok(None);
        }
        match out.next_key_marker() {
            Some(k) => Ok(Some((
                k.to_string(),
                out.next_version_id_marker().map(String::from),
            ))),
            None => Err(StoreError::new(
                ErrorKind::Other,
                "list versions of",
                self.locate(prefix),
                "truncated listing without a next key marker",
            )),
        }
    }

    async fn head(&self, key: &str, version: &str, part: Option<i32>) -> Result<(Head, u64)> {
        let out = with_retries(&self.retry, || async {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id((version != "null").then(|| version.to_string()))
                .set_part_number(part)
                .send()
                .await
                .map_err(|e| sdk_error("head", self.locate_version(key, version), e))
        })
        .await?;
        let head = Head {
            content_type: out.content_type().map(str::to_string),
            cache_control: out.cache_control().map(str::to_string),
            content_disposition: out.content_disposition().map(str::to_string),
            content_encoding: out.content_encoding().map(str::to_string),
            content_language: out.content_language().map(str::to_string),
            metadata: out.metadata().cloned(),
        };
        Ok((head, out.content_length().unwrap_or(0).max(0) as u64))
    }

    /// Copies version `v` of `source` into `key` of this bucket, server-side, with its
    /// metadata, content type and storage class. An object that was uploaded in parts is copied
    /// part for part with the same boundaries, so the copy's ETag equals the source's (that is
    /// how later runs recognise it as identical); others above `single_limit` in parts of that
    /// size (at most 5 GiB). Returns the new version id, when the bucket is versioned.
    ///
    /// A multipart copy under way when `stop` is cancelled is aborted (its part copy in flight
    /// dropped), and fails; a single CopyObject, one request, is left to finish.
    pub async fn copy_from(
        &self,
        source: &BucketClient,
        v: &Version,
        key: &str,
        single_limit: u64,
        stop: &CancellationToken,
    ) -> Result<Option<String>> {
        let parts = v
            .etag
            .trim_matches('"')
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if parts.is_none() && v.size <= single_limit {
            return self.copy_whole(source, v, key).await;
        }
        let (head, _) = source.head(&v.key, &v.version_id, None).await?;
        let part_size = match parts {
            Some(n) if n > 1 => {
                let (_, first) = source.head(&v.key, &v.version_id, Some(1)).await?;
                if first > 0 && v.size.div_ceil(first) == n {
                    first
                } else {
                    single_limit.min(v.size.div_ceil(n).max(5 << 20))
                }
            }
            _ => single_limit.clamp(5 << 20, 5 << 30),
        };
        self.copy_parts(source, v, key, head, part_size, stop).await
    }

    async fn copy_whole(
        &self,
        source: &BucketClient,
        v: &Version,
        key: &str,
    ) -> Result<Option<String>> {
        let from = copy_source(&source.bucket, &v.key, &v.version_id);
        let class = (!v.storage_class.is_empty() && v.storage_class != "STANDARD")
            .then(|| StorageClass::from(v.storage_class.as_str()));
        let out = with_retries(&self.retry, || async {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(key)
                .copy_source(&from)
                .metadata_directive(MetadataDirective::Copy)
                .set_storage_class(class.clone())
                .send()
                .await
                .map_err(|e| sdk_error("copy to", self.locate(key), e))
        })
        .await?;
        Ok(out.version_id().map(str::to_string))
    }

    async fn copy_parts(
        &self,
        source: &BucketClient,
        v: &Version,
        key: &str,
        head: Head,
        part_size: u64,
        stop: &CancellationToken,
    ) -> Result<Option<String>> {
        let class = (!v.storage_class.is_empty() && v.storage_class != "STANDARD")
            .then(|| StorageClass::from(v.storage_class.as_str()));
        let upload = with_retries(&self.retry, || async {
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .set_content_type(head.content_type.clone())
                .set_cache_control(head.cache_control.clone())
                .set_content_disposition(head.content_disposition.clone())
                .set_content_encoding(head.content_encoding.clone())
                .set_content_language(head.content_language.clone())
                .set_metadata(head.metadata.clone())
                .set_storage_class(class.clone())
                .send()
                .await
                .map_err(|e| sdk_error("start multipart copy to", self.locate(key), e))
        })
        .await?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = self
            .copy_part_range(source, v, key, &upload_id, part_size, stop)
            .await;
        match result {
            Ok(version) => Ok(version),
            Err(e) => {
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(abort) = aborted {
                    log::warn!(
                        "{}",
                        sdk_error("abort multipart copy to", self.locate(key), abort)
                    );
                }
                Err(e)
            }
        }
    }

    async fn copy_part_range(
        &self,
        source: &BucketClient,
        v: &Version,
        key: &str,
        upload_id: &str,
        part_size: u64,
        stop: &CancellationToken,
    ) -> Result<Option<String>> {
        let from = copy_source(&source.bucket, &v.key, &v.version_id);
        let mut completed = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < v.size.max(1) {
            let end = (offset + part_size).min(v.size);
            let range = format!("bytes={offset}-{}", end.max(1) - 1);
            let part = with_retries(&self.retry, || async {
                self.client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(&from)
                    .copy_source_range(&range)
                    .send()
                    .await
                    .map_err(|e| sdk_error("copy part to", self.locate(key), e))
            });
            let out = tokio::select! {
                out = part => out?,
                () = stop.cancelled() => {
                    return Err(StoreError::new(
                        ErrorKind::Other,
                        "copy part to",
                        self.locate(key),
                        "stopped",
                    ))
                }
            };
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_string();
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
            offset = end.max(offset + 1);
            number += 1;
        }
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(completed))
            .build();
        let out = with_retries(&self.retry, || async {
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(parts.clone())
                .send()
                .await
                .map_err(|e| sdk_error("complete multipart copy to", self.locate(key), e))
        })
        .await?;
        Ok(out.version_id().map(str::to_string))
    }

    /// Deletes `items` in batches of 1000; returns the ones that were not deleted, with why.
    pub async fn delete_all(
        &self,
        items: &[(String, Option<String>)],
    ) -> Vec<(String, Option<String>, String)> {
        let mut refused = Vec::new();
        for batch in items.chunks(1000) {
            match self.delete_batch(batch).await {
                Ok(some) => refused.extend(some),
                Err(e) => refused.extend(
                    batch
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone(), e.message.clone())),
                ),
            }
        }
        refused
    }

    /// Deletes up to 1000 objects (`version` `None`: the current one, leaving a delete marker
    /// in a versioned bucket) in one request; returns the ones S3 refused, with its reason.
    async fn delete_batch(
        &self,
        items: &[(String, Option<String>)],
    ) -> Result<Vec<(String, Option<String>, String)>> {
        let objects: Vec<ObjectIdentifier> = items
            .iter()
            .map(|(key, version)| {
                ObjectIdentifier::builder()
                    .key(key)
                    .set_version_id(version.clone())
                    .build()
                    .expect("key is set")
            })
            .collect();
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .expect("objects are set");
        let out = with_retries(&self.retry, || async {
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete.clone())
                .send()
                .await
                .map_err(|e| sdk_error("delete objects in", self.locate(""), e))
        })
        .await?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_string(),
                    e.version_id().map(str::to_string),
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    ),
                )
            })
            .collect())
    }
}

/// Clients for the master and the replica of `spec`: the set's Endpoint and AddressingStyle,
/// each bucket's region (`MasterRegion`, `ReplicaRegion`, else the set's `Region`), the
/// configuration's credentials and timeout. `ServerSideEncryption` is asked for only on the
/// replica's client: objects `bucket restore` writes through the master's belong to the site,
/// whose readers may be unable to use the backup's KMS key.
pub async fn connect(
    spec: &BucketSpec,
    s3: &S3Spec,
    retry: RetryPolicy,
) -> anyhow::Result<(Arc<BucketClient>, Arc<BucketClient>)> {
    let settings = |region, encrypt: bool| {
        let mut settings = crate::store::s3::S3Settings {
            addressing: spec.addressing,
            ..crate::connect::s3_settings(s3, &spec.endpoint, &region)
        };
        if !encrypt {
            settings.encryption = None;
        }
        settings
    };
    let (master_region, replica_region) = (spec.master_region(), spec.replica_region());
    // One client (connection pool, credentials) for both when nothing tells them apart.
    let shared = replica_region == master_region && s3.encryption.is_none();
    let master = crate::store::s3::client(&settings(master_region, false)).await?;
    let replica = if shared {
        master.clone()
    } else {
        crate::store::s3::client(&settings(replica_region, true)).await?
    };
    Ok((
        Arc::new(BucketClient::new(master, &spec.master.bucket, retry)),
        Arc::new(BucketClient::new(replica, &spec.replica, retry)),
    ))
}

#[cfg(test)]
mod tests {
    use super::copy_source;

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(copy_source("b", "a/b c+d.txt", "null"), "b/a/b%20c%2Bd.txt");
        assert_eq!(copy_source("b", "k", "3/L4kq"), "b/k?versionId=3%2FL4kq");
    }
}
