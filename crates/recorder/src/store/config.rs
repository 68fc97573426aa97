//! `[recording.store]`: where recordings go, and how that becomes an
//! `object_store` client.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where recordings are stored.
///
/// ```toml
/// [recording.store]          # the default: <data dir>/recordings
/// kind = "local"
/// dir = "recordings"         # relative to the data dir, or absolute
///
/// [recording.store]          # any S3-compatible store
/// kind = "s3"
/// endpoint = "http://127.0.0.1:9000"   # omit for AWS
/// bucket = "lumen"
/// region = "us-east-1"
/// access_key_id = "…"        # omit to use AWS_ACCESS_KEY_ID etc.
/// secret_access_key = "…"
/// path_style = true          # default; false for virtual-hosted style
/// allow_http = true          # default false
/// sse = "s3"                 # or sse = { kms = { key_id = "arn:…" } }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreConfig {
    /// A directory on this machine.
    Local {
        /// The directory; relative paths are under the data dir. Default
        /// `recordings`.
        #[serde(default)]
        dir: Option<PathBuf>,
    },
    /// An S3-compatible object store.
    S3(S3Config),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Local { dir: None }
    }
}

/// An S3-compatible bucket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint URL; `None` for AWS itself (or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket, which must exist.
    pub bucket: String,
    /// The region; `None` reads `AWS_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// The access key id; `None` reads `AWS_ACCESS_KEY_ID` (or instance
    /// credentials).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret key; `None` reads `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), which MinIO, Ceph and moto
    /// need; false for virtual-hosted style. Default true.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Allow a plain `http://` endpoint. Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Server-side encryption by the store, as an alternative (or an
    /// addition) to lumen's own sealing.
    #[serde(default)]
    pub sse: Option<Sse>,
}

/// Server-side encryption requested from S3 on every upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Sse {
    /// SSE-S3: keys managed by the store (`AES256`).
    S3,
    /// SSE-KMS with this KMS key.
    Kms {
        /// The KMS key id or ARN.
        key_id: String,
    },
}

// The secret stays out of logs.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("sse", &self.sse)
            .finish()
    }
}

fn yes() -> bool {
    true
}

impl S3Config {
    /// A config for `bucket` at `endpoint` with static credentials, path
    /// style and plain HTTP allowed (a local S3-compatible server).
    pub fn local(endpoint: &str, bucket: &str, access_key_id: &str, secret: &str) -> S3Config {
        S3Config {
            endpoint: Some(endpoint.to_owned()),
            bucket: bucket.to_owned(),
            region: Some("us-east-1".to_owned()),
            access_key_id: Some(access_key_id.to_owned()),
            secret_access_key: Some(secret.to_owned()),
            path_style: true,
            allow_http: true,
            sse: None,
        }
    }
}

/// The `object_store` client for `cfg`, and whether it keeps user metadata.
pub(super) fn build(
    cfg: &StoreConfig,
    data_dir: &Path,
) -> Result<(Arc<dyn ObjectStore>, bool), StoreError> {
    match cfg {
        StoreConfig::Local { dir } => {
            let dir = data_dir.join(dir.as_deref().unwrap_or(Path::new("recordings")));
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
            let fs = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?
                .with_automatic_cleanup(true);
            Ok((Arc::new(fs), false))
        }
        StoreConfig::S3(s3) => Ok((Arc::new(build_s3(s3)?), true)),
    }
}

fn build_s3(cfg: &S3Config) -> Result<object_store::aws::AmazonS3, StoreError> {
    // from_env picks up AWS_* for whatever the config leaves out.
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&cfg.bucket)
        .with_virtual_hosted_style_request(!cfg.path_style)
        // Few, quick retries inside the client: the spool does the long
        // retrying, and it must learn of an outage in seconds, not after
        // the client's default three minutes.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(120)),
        )
        // After the client options, which would reset it.
        .with_allow_http(cfg.allow_http);
    if let Some(endpoint) = &cfg.endpoint {
        b = b.with_endpoint(endpoint);
    }
    match &cfg.region {
        Some(region) => b = b.with_region(region),
        None if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none() =>
        {
            b = b.with_region("us-east-1");
        }
        None => {}
    }
    if let Some(id) = &cfg.access_key_id {
        b = b.with_access_key_id(id);
    }
    if let Some(secret) = &cfg.secret_access_key {
        b = b.with_secret_access_key(secret);
    }
    match &cfg.sse {
        None => {}
        Some(Sse::S3) => {
            // object_store has no SSE-S3 method and does not export the
            // key enum: its config key name is the public way in.
            let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                .parse()
                .map_err(|e| StoreError::Config(format!("SSE-S3: {e}")))?;
            b = b.with_config(key, "AES256");
        }
        Some(Sse::Kms { key_id }) => b = b.with_sse_kms_encryption(key_id),
    }
    b.build()
        .map_err(|e| StoreError::Config(format!("S3 bucket {}: {e}", cfg.bucket)))
}
