//! S3 settings of one location, and the two things `object_store`'s S3 client leaves out:
//! a bounded probe before falling back to the instance-metadata endpoint, and conditional
//! deletes (`If-Match` on DELETE).
//!
//! Settings are resolved at the edge (the CLI, from its flags and environment) and passed
//! to [`super::open_with`]; nothing in this crate reads the process environment, so one process
//! can hold two differently configured stores (a copy between repositories, a bucket source
//! beside its repository). `object_store` itself still reads `AWS_WEB_IDENTITY_TOKEN_FILE` and
//! `AWS_ROLE_ARN` when it chooses a web-identity provider.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::CredentialProvider;

use crate::{ErrorKind, Result, StorageError};

/// Settings of every backend kind for one location (only S3 needs any today; GCS and Azure
/// still take their credentials from `object_store`'s `from_env` builders).
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    pub s3: S3Settings,
}

/// How to reach one S3-compatible location.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Endpoint URL for S3-compatible servers (MinIO, R2, moto); `None` is AWS. An
    /// `http://` endpoint allows plain HTTP.
    pub endpoint: Option<String>,
    /// Region; `None` lets `object_store` default (`us-east-1`).
    pub region: Option<String>,
    pub credentials: S3Credentials,
    /// Further `object_store` S3 options by configuration name (`aws_…`, as listed by
    /// `AmazonS3ConfigKey`), applied before the fields above.
    pub options: Vec<(String, String)>,
}

/// Where the credentials of an S3 location come from.
#[derive(Clone, Default)]
pub enum S3Credentials {
    /// None configured: the first request fails at once, saying so.
    #[default]
    Missing,
    /// An access key (and, for temporary credentials, a session token).
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// A provider of the surroundings that `object_store` finds by itself: a web identity
    /// (EKS), container credentials (ECS, EKS Pod Identity; their URIs go in `options`).
    Provider,
    /// The instance-metadata endpoint (EC2). Before its first use the endpoint is probed with
    /// a one-second TCP connect, so a machine without one fails in a second, not after
    /// `object_store`'s retries (about 17 s).
    InstanceMetadata,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Credentials::Missing => write!(f, "Missing"),
            S3Credentials::Static { access_key_id, .. } => {
                write!(f, "Static {{ access_key_id: {access_key_id:?}, .. }}")
            }
            S3Credentials::Provider => write!(f, "Provider"),
            S3Credentials::InstanceMetadata => write!(f, "InstanceMetadata"),
        }
    }
}

/// Variables [`S3Settings::from_vars`] reads besides every `AWS_*` `object_store` knows.
pub const ENDPOINT_VAR: &str = "ARSIP_S3_ENDPOINT";
pub const REGION_VAR: &str = "ARSIP_S3_REGION";

impl S3Settings {
    /// Resolve settings from environment-like variables, as the AWS tools do: the caller (the
    /// CLI edge) passes `std::env::vars()`; tests pass their own. `ARSIP_S3_ENDPOINT` /
    /// `ARSIP_S3_REGION` win over `AWS_ENDPOINT` / `AWS_REGION`. Credentials: an access key
    /// pair if either half is set (both required), else a web identity or container provider
    /// if its variables are set, else the instance-metadata endpoint unless
    /// `AWS_EC2_METADATA_DISABLED=true`, else none.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<S3Settings> {
        let vars: std::collections::BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, v)| !v.is_empty() && (k.starts_with("AWS_") || k.starts_with("ARSIP_S3_")))
            .collect();
        let get = |k: &str| vars.get(k).cloned();
        let mut s = S3Settings {
            endpoint: get(ENDPOINT_VAR),
            region: get(REGION_VAR),
            ..Default::default()
        };
        const CREDENTIAL_KEYS: [&str; 3] = [
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
        ];
        for (k, v) in &vars {
            let name = k.to_ascii_lowercase();
            if k.starts_with("AWS_")
                && !CREDENTIAL_KEYS.contains(&name.as_str())
                && name.parse::<AmazonS3ConfigKey>().is_ok()
            {
                s.options.push((name, v.clone()));
            }
        }
        s.credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
            },
            (Some(_), None) | (None, Some(_)) => {
                return Err(StorageError::new(
                    ErrorKind::Permanent,
                    None,
                    "incomplete S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together",
                ))
            }
            (None, None) => {
                let web = get("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && get("AWS_ROLE_ARN").is_some();
                let container = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
                    || get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
                let imds_off = get("AWS_EC2_METADATA_DISABLED")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if web || container {
                    S3Credentials::Provider
                } else if imds_off {
                    S3Credentials::Missing
                } else {
                    S3Credentials::InstanceMetadata
                }
            }
        };
        Ok(s)
    }

    /// Build the `object_store` client for `bucket`.
    pub(crate) fn build(&self, bucket: &str) -> Result<AmazonS3> {
        let os_err = |e: object_store::Error| StorageError::from_object_store("", e);
        let mut b = AmazonS3Builder::new();
        for (k, v) in &self.options {
            let key: AmazonS3ConfigKey = k.parse().map_err(os_err)?;
            b = b.with_config(key, v);
        }
        b = b
            .with_bucket_name(bucket)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        if let Some(endpoint) = &self.endpoint {
            b = b
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            b = b.with_region(region);
        }
        match &self.credentials {
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                b = b
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key);
                if let Some(t) = session_token {
                    b = b.with_token(t);
                }
                b.build().map_err(os_err)
            }
            S3Credentials::Provider => b.build().map_err(os_err),
            S3Credentials::Missing => b
                .with_credentials(Arc::new(NoCredentials {
                    why: "no S3 credentials are configured (no access key, web identity or \
                          container credentials, and the instance metadata endpoint is disabled)"
                        .into(),
                }))
                .build()
                .map_err(os_err),
            S3Credentials::InstanceMetadata => {
                let endpoint = b
                    .get_config_value(&AmazonS3ConfigKey::MetadataEndpoint)
                    .unwrap_or_else(|| "http://169.254.169.254".into());
                let plain = b.clone().build().map_err(os_err)?;
                let probed = Probed {
                    inner: plain.credentials().clone(),
                    endpoint,
                    reachable: tokio::sync::OnceCell::new(),
                };
                b.with_credentials(Arc::new(probed)).build().map_err(os_err)
            }
        }
    }
}

/// A provider that refuses at once, naming why.
#[derive(Debug)]
struct NoCredentials {
    why: String,
}

#[async_trait]
impl CredentialProvider for NoCredentials {
    type Credential = AwsCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        Err(object_store::Error::Unauthenticated {
            path: String::new(),
            source: self.why.clone().into(),
        })
    }
}

/// `object_store`'s instance-metadata provider behind a one-time TCP probe of its endpoint.
#[derive(Debug)]
struct Probed {
    inner: Arc<dyn CredentialProvider<Credential = AwsCredential>>,
    endpoint: String,
    reachable: tokio::sync::OnceCell<std::result::Result<(), String>>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[async_trait]
impl CredentialProvider for Probed {
    type Credential = AwsCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let probe = self
            .reachable
            .get_or_init(|| async {
                let addr = host_port(&self.endpoint);
                match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&addr))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                }
            })
            .await;
        let why = match probe {
            // object_store has retried the endpoint itself by now.
            Ok(()) => match self.inner.get_credential().await {
                Ok(c) => return Ok(c),
                Err(e) => format!("gave none: {e}"),
            },
            Err(why) => format!("is unreachable: {why}"),
        };
        Err(object_store::Error::Unauthenticated {
            path: String::new(),
            source: format!(
                "no S3 credentials are configured (no access key, web identity or container \
                 credentials), and the instance metadata endpoint {} {why}",
                self.endpoint
            )
            .into(),
        })
    }
}

/// `host:port` of an `http://host[:port]/…` URL (port 80 by default).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    }
}

/// Does the bucket exist? A signed `HEAD` of the bucket (HeadBucket): 404 means no; any
/// other answer, or none, is not an answer to that question (`None`).
pub(crate) async fn bucket_exists(s3: &AmazonS3, http: &reqwest::Client) -> Option<bool> {
    use object_store::signer::Signer;
    let root = object_store::path::Path::from("");
    let url = s3
        .signed_url(reqwest::Method::HEAD, &root, Duration::from_secs(60))
        .await
        .ok()?;
    let resp = http.head(url).send().await.ok()?;
    match resp.status().as_u16() {
        404 => Some(false),
        200..=299 | 403 => Some(true),
        _ => None,
    }
}

/// `DELETE` with `If-Match`, signed by the store's own credentials (a presigned URL, valid
/// for a minute). `object_store` has no conditional delete; S3 has one.
pub(crate) async fn delete_if_match(
    s3: &AmazonS3,
    http: &reqwest::Client,
    path: &object_store::path::Path,
    key: &str,
    e_tag: &str,
) -> Result<()> {
    use object_store::signer::Signer;
    let url = s3
        .signed_url(reqwest::Method::DELETE, path, Duration::from_secs(60))
        .await
        .map_err(|e| StorageError::from_object_store(key, e))?;
    let resp = http
        .delete(url)
        .header(reqwest::header::IF_MATCH, e_tag)
        .send()
        .await
        .map_err(|e| {
            // Never print the URL: it carries a signature.
            StorageError::new(
                ErrorKind::Transient,
                Some(key),
                format!("conditional delete: {}", e.without_url()),
            )
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let kind = match status.as_u16() {
        412 => ErrorKind::PreconditionFailed,
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::PermissionDenied,
        501 => ErrorKind::NotSupported,
        408 | 409 | 429 => ErrorKind::Transient,
        s if s >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    Err(StorageError::new(
        kind,
        Some(key),
        format!("conditional delete: HTTP {status}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolves_credentials_from_variables() {
        let s = S3Settings::from_vars(vars(&[
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("ARSIP_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_REGION", "ap-southeast-3"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        assert!(matches!(s.credentials, S3Credentials::Static { .. }));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s
            .options
            .contains(&("aws_region".into(), "ap-southeast-3".into())));
        assert!(
            !format!("{s:?}").contains("secret"),
            "Debug must not show secrets"
        );
        let s = S3Settings::from_vars(vars(&[])).unwrap();
        assert!(matches!(s.credentials, S3Credentials::InstanceMetadata));
        let s = S3Settings::from_vars(vars(&[("AWS_EC2_METADATA_DISABLED", "true")])).unwrap();
        assert!(matches!(s.credentials, S3Credentials::Missing));
        let s = S3Settings::from_vars(vars(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ]))
        .unwrap();
        assert!(matches!(s.credentials, S3Credentials::Provider));
        assert!(S3Settings::from_vars(vars(&[("AWS_ACCESS_KEY_ID", "id")])).is_err());
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("http://169.254.169.254"), "169.254.169.254:80");
        assert_eq!(host_port("http://127.0.0.1:1234/latest"), "127.0.0.1:1234");
    }
}
