//! AWS credentials and region as AWS users have them: the environment, then the profile of `~/.aws/config`
//! and `~/.aws/credentials` (static keys, `credential_process`, SSO, a role assumed from another profile, a web
//! identity token file), then object_store's own chain (a web identity token in the environment on EKS, the
//! container credentials endpoint on ECS and AWS Batch, the EC2 instance metadata service).
//!
//! Why this module exists: object_store reads keys from the environment and follows the instance and container
//! chains, but it does not read profiles, so a user signed in with `aws sso login` or a `credential_process`
//! would have to export keys first. AWS's own crate (`aws-config`) resolves profiles exactly as the AWS CLI
//! does; this module hands what it resolves to object_store (and to the Glue catalog, which signs its own
//! requests with the same credentials). The profile support is the cargo feature `aws-profiles` (on by
//! default): without it, only the environment and object_store's chain are used.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};

use crate::error::{Error, Result};

/// Where the AWS credential chain looks, in order.
pub const CREDENTIAL_SOURCES: &str = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the profile AWS_PROFILE \
     (or default) of ~/.aws/config and ~/.aws/credentials (keys, credential_process, SSO, role_arn), \
     AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (EKS), AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI \
     (ECS, AWS Batch), then the EC2 instance metadata service";

/// The region when neither the environment nor the profile names one.
const DEFAULT_REGION: &str = "us-east-1";

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty())
}

/// True when `AWS_EC2_METADATA_DISABLED` (AWS's own variable) says not to call the instance metadata service.
fn metadata_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// True when the environment itself holds credentials or a source object_store follows (keys, a web identity
/// token, the container endpoint, or unsigned requests).
fn environment_has_credentials() -> bool {
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || (set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN"))
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The endpoint the environment gives for S3 (`AWS_ENDPOINT_URL`, or object_store's `AWS_ENDPOINT`).
pub fn endpoint() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok()
        .filter(|e| !e.is_empty())
}

/// An S3 store builder for `bucket` configured as the AWS CLI would be: keys and endpoint from the
/// environment, else the profile's credentials; the region from the environment, else the profile, else
/// us-east-1. Refuses (exit 2) a location with no way to get credentials, and (exit 1) a profile that fails.
pub fn s3_builder(url: &str, bucket: &str) -> Result<AmazonS3Builder> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // An S3-compatible endpoint given over plain HTTP (a local server) is the user's choice.
    if endpoint().is_some_and(|e| e.starts_with("http://")) {
        b = b.with_allow_http(true);
    }
    let region_set = set("AWS_REGION") || set("AWS_DEFAULT_REGION");
    let from_env = environment_has_credentials();
    let profile = if from_env {
        None
    } else {
        profile::credentials(url)?
    };
    if !region_set {
        let region = profile::region().unwrap_or_else(|| DEFAULT_REGION.to_string());
        b = b.with_region(region);
    }
    match profile {
        Some(provider) => b = b.with_credentials(provider),
        None if !from_env && metadata_disabled() => {
            return Err(Error::Usage(format!(
                "{url}: no AWS credentials found. Looked at {CREDENTIAL_SOURCES}; the instance metadata \
                 service is disabled by AWS_EC2_METADATA_DISABLED=true. Set credentials (e.g. AWS_PROFILE, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )));
        }
        None => {}
    }
    Ok(b)
}

/// The credentials and region an S3 location of `bucket` signs with: what the AWS catalog (Glue) calls use.
pub fn credentials_and_region(url: &str, bucket: &str) -> Result<(AwsCredentialProvider, String)> {
    let b = s3_builder(url, bucket)?;
    let region = b
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let store = b.build().map_err(|e| Error::Usage(format!("{url}: {e}")))?;
    Ok((Arc::clone(store.credentials()), region))
}

/// Turns a resolved credential into object_store's.
#[cfg(feature = "aws-profiles")]
fn to_object_store(c: &aws_credential_types::Credentials) -> object_store::aws::AwsCredential {
    object_store::aws::AwsCredential {
        key_id: c.access_key_id().to_string(),
        secret_key: c.secret_access_key().to_string(),
        token: c.session_token().map(str::to_string),
    }
}

#[cfg(feature = "aws-profiles")]
mod profile {
    //! The profile link of the chain, through `aws-config`.
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, SystemTime};

    use aws_config::meta::region::ProvideRegion;
    use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
    use aws_config::provider_config::ProviderConfig;
    use aws_credential_types::provider::ProvideCredentials;
    use aws_credential_types::provider::error::CredentialsError;
    use object_store::aws::{AwsCredential, AwsCredentialProvider};

    use super::to_object_store;
    use crate::error::{Error, Result};
    use crate::store::block_on;

    /// Credentials are fetched again this long before they expire (SSO and assumed roles last an hour or
    /// more; a long run outlives them).
    const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

    /// The profile the chain reads: `AWS_PROFILE`, else `default`.
    fn name() -> String {
        std::env::var("AWS_PROFILE")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".to_string())
    }

    /// The region of the profile, if it names one (read once a process: the profile files do not change
    /// during a run).
    pub fn region() -> Option<String> {
        static REGION: OnceLock<Option<String>> = OnceLock::new();
        REGION
            .get_or_init(|| {
                let provider = ProfileFileRegionProvider::builder()
                    .profile_name(name())
                    .build();
                block_on(provider.region()).map(|r| r.to_string())
            })
            .clone()
    }

    /// The profile's credentials as an object_store provider, or `None` when no profile file defines
    /// credentials for the profile. Resolved once a process, before any work (so that a profile that fails
    /// is reported at once, and a `credential_process` runs once however many stores and catalogs sign with
    /// it); the provider fetches them again before they expire.
    pub fn credentials(url: &str) -> Result<Option<AwsCredentialProvider>> {
        static RESOLVED: OnceLock<Option<AwsCredentialProvider>> = OnceLock::new();
        if let Some(resolved) = RESOLVED.get() {
            return Ok(resolved.clone());
        }
        let profile = name();
        let mut config = ProviderConfig::default();
        if let Some(r) = region() {
            config = config.with_region(Some(aws_types::region::Region::new(r)));
        }
        let provider = ProfileFileCredentialsProvider::builder()
            .configure(&config)
            .profile_name(&profile)
            .build();
        let resolved: Option<AwsCredentialProvider> = match block_on(provider.provide_credentials())
        {
            Ok(c) => Some(Arc::new(Profile {
                provider,
                cache: tokio::sync::Mutex::new(Cached {
                    credential: Arc::new(to_object_store(&c)),
                    expiry: c.expiry(),
                }),
                profile,
            })),
            Err(CredentialsError::CredentialsNotLoaded(_)) if !super::set("AWS_PROFILE") => None,
            Err(e) => return Err(Error::Usage(format!("{url}: {}", failed(&profile, &e)))),
        };
        Ok(RESOLVED.get_or_init(|| resolved).clone())
    }

    /// Why a profile gives no credentials, with AWS's own reason.
    fn failed(profile: &str, e: &CredentialsError) -> String {
        format!(
            "the AWS profile {profile} (AWS_PROFILE, in AWS_CONFIG_FILE or ~/.aws/config and \
             AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials) gives no credentials: {}. Fix the profile (for \
             SSO, run aws sso login --profile {profile}), or set AWS_PROFILE to one that works",
            crate::error::redact(&format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            ))
        )
    }

    struct Cached {
        credential: Arc<AwsCredential>,
        expiry: Option<SystemTime>,
    }

    /// The profile's credentials, fetched again when they are about to expire.
    struct Profile {
        provider: ProfileFileCredentialsProvider,
        profile: String,
        cache: tokio::sync::Mutex<Cached>,
    }

    impl std::fmt::Debug for Profile {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "AWS profile {}", self.profile)
        }
    }

    #[async_trait::async_trait]
    impl object_store::CredentialProvider for Profile {
        type Credential = AwsCredential;

        async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
            let mut cache = self.cache.lock().await;
            let fresh = cache
                .expiry
                .is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
            if !fresh {
                // (The store's error names the URL of the request.)
                let c = self.provider.provide_credentials().await.map_err(|e| {
                    object_store::Error::Generic {
                        store: "S3",
                        source: failed(&self.profile, &e).into(),
                    }
                })?;
                *cache = Cached {
                    credential: Arc::new(to_object_store(&c)),
                    expiry: c.expiry(),
                };
            }
            Ok(Arc::clone(&cache.credential))
        }
    }
}

#[cfg(not(feature = "aws-profiles"))]
mod profile {
    //! Built without the `aws-profiles` feature: profiles are not read, and a run that names one is refused.
    use object_store::aws::AwsCredentialProvider;

    use crate::error::{Error, Result};

    pub fn region() -> Option<String> {
        None
    }

    pub fn credentials(url: &str) -> Result<Option<AwsCredentialProvider>> {
        match std::env::var("AWS_PROFILE") {
            Ok(p) if !p.is_empty() => Err(Error::Usage(format!(
                "{url}: AWS_PROFILE={p} is set, but this build of group-loader reads no AWS profiles (it was \
                 built without the aws-profiles feature): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 use a build with the feature"
            ))),
            _ => Ok(None),
        }
    }
}
