//! Where the S3 client's credentials come from: the configuration's choices (`S3Keyfile`,
//! `Profile`, `RoleArn`) in, the SDK's shared configuration with its credentials provider out.
//!
//! Without any of them it is the AWS default chain (environment, shared files' default profile,
//! web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, ECS, IMDS). STS calls —
//! `RoleArn`'s AssumeRole, a profile's `role_arn`, web identity — go where the AWS SDK sends
//! them: AWS's STS, or `AWS_ENDPOINT_URL_STS` / the shared config file's `endpoint_url`
//! (`Endpoint` names the S3 server only). Secrets never reach a log line: every type here that
//! holds one prints `****` instead.

use std::path::Path;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::ConfigLoader;
use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};

/// Access key pair (and session token) read from an S3Keyfile. Debug output never shows the
/// secret or the token.
#[derive(Clone)]
pub struct KeyPair {
    pub access_key: String,
    pub secret_key: String,
    /// `aws_session_token`: temporary credentials (an STS session) need it.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.session_token.is_some() {
            ", token ****"
        } else {
            ""
        };
        write!(f, "KeyPair({}, ****{token})", self.access_key)
    }
}

/// `RoleArn` and its companions: AssumeRole on top of whatever the base credentials are.
/// Debug output shows only whether an `ExternalId` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub arn: String,
    /// `ExternalId`: what the role's trust policy may demand (`sts:ExternalId`). Not a secret
    /// by AWS's definition, but shown only as set / not set.
    pub external_id: Option<String>,
    /// `RoleSessionName` (default: the SDK's `assume-role-provider-TIME`).
    pub session_name: Option<String>,
}

impl std::fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let external_id = if self.external_id.is_some() {
            "set"
        } else {
            "none"
        };
        f.debug_struct("AssumeRole")
            .field("arn", &self.arn)
            .field("external_id", &format_args!("{external_id}"))
            .field("session_name", &self.session_name)
            .finish()
    }
}

/// Reads `key=…`, `secret=…` and optionally `token=…` lines (also AWS's
/// `aws_access_key_id` / `aws_secret_access_key` / `aws_session_token`, so a credentials file
/// of one profile as `aws configure` writes it works). One `[name]` section header is allowed
/// (and ignored); a second one is refused, naming its line: which profile to use is then a
/// question for `Profile`.
pub fn parse_keyfile(path: &Path, text: &str) -> anyhow::Result<KeyPair> {
    let mut access = None;
    let mut secret = None;
    let mut token = None;
    let mut section: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let name = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            if let Some((first, first_name)) = &section {
                return Err(anyhow::anyhow!(
                    "{}:{}: a second profile section [{name}] (the first, [{first_name}], is on \
                     line {first}): an S3Keyfile holds one key pair; to choose a profile of a \
                     shared credentials file, use `Profile NAME` (with AWS_SHARED_CREDENTIALS_FILE \
                     naming the file) instead",
                    path.display(),
                    n + 1,
                ));
            }
            section = Some((n + 1, name));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(anyhow::anyhow!(
                "{}:{}: expected key=value",
                path.display(),
                n + 1
            ));
        };
        let slot = match k.trim().to_ascii_lowercase().as_str() {
            "key" | "aws_access_key_id" | "access_key" => &mut access,
            "secret" | "aws_secret_access_key" | "secret_key" => &mut secret,
            "token" | "aws_session_token" | "session_token" => &mut token,
            other => {
                return Err(anyhow::anyhow!(
                    "{}:{}: unknown entry '{other}'",
                    path.display(),
                    n + 1
                ))
            }
        };
        if slot.is_some() {
            return Err(anyhow::anyhow!(
                "{}:{}: '{}' is given twice",
                path.display(),
                n + 1,
                k.trim()
            ));
        }
        *slot = Some(v.trim().to_string());
    }
    match (access, secret) {
        (Some(access_key), Some(secret_key)) => Ok(KeyPair {
            access_key,
            secret_key,
            session_token: token.filter(|t| !t.is_empty()),
        }),
        _ => Err(anyhow::anyhow!(
            "{}: needs both key= and secret= lines",
            path.display()
        )),
    }
}

/// The shared SDK configuration `loader` gives, with the credentials chosen: the key file's,
/// else `profile`'s (from the shared config and credentials files, with their `role_arn` +
/// `source_profile`, `credential_process`, …), else the default chain's; then, with `role`,
/// the role assumed with them.
pub async fn load(
    mut loader: ConfigLoader,
    keyfile: Option<&Path>,
    profile: Option<&str>,
    role: Option<&AssumeRole>,
) -> anyhow::Result<SdkConfig> {
    if let Some(path) = keyfile {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("S3Keyfile {}: {e}", path.display()))?;
        let keys = parse_keyfile(path, &text)?;
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            keys.access_key,
            keys.secret_key,
            keys.session_token,
            None,
            "s3nap-keyfile",
        ));
    } else if let Some(profile) = profile {
        // The profile's region too, unless Region says otherwise.
        loader = loader.profile_name(profile);
    }
    let mut shared = loader.load().await;
    if shared.region().is_none() {
        // STS's global endpoint is in us-east-1; the S3 client falls back to it as well.
        shared = shared
            .into_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    if let (None, Some(profile)) = (keyfile, profile) {
        // The profile alone, as `aws --profile` does: the default chain would let credentials
        // in the environment win over it.
        // The profile's STS calls (`role_arn`, web identity) over s3nap's HTTP client: its
        // CaFile and proxy settings, not the SDK's default client.
        let mut config = ProviderConfig::default().with_region(shared.region().cloned());
        if let Some(http) = shared.http_client() {
            config = config.with_http_client(http);
        }
        if let Some(sleep) = shared.sleep_impl() {
            config = config.with_sleep_impl(sleep);
        }
        let provider = ProfileFileCredentialsProvider::builder()
            .configure(&config)
            .profile_name(profile)
            .build();
        shared = shared
            .into_builder()
            .credentials_provider(Named::wrap(format!("Profile {profile}"), provider))
            .build();
    }
    if let Some(role) = role {
        // `configure(&shared)`: STS over the same HTTP client (CaFile, proxy) as S3.
        let mut builder = AssumeRoleProvider::builder(&role.arn).configure(&shared);
        if let Some(id) = &role.external_id {
            builder = builder.external_id(id);
        }
        if let Some(name) = &role.session_name {
            builder = builder.session_name(name);
        }
        let provider = builder.build().await;
        shared = shared
            .into_builder()
            .credentials_provider(Named::wrap(format!("RoleArn {}", role.arn), provider))
            .build();
    }
    Ok(shared)
}

/// A credentials provider whose failures say which setting they come from (`Profile backup:
/// …`, `RoleArn arn:…: …`), with their causes: the SDK's own message for a missing profile
/// is only "the credential provider was not enabled".
#[derive(Debug)]
struct Named {
    what: String,
    inner: SharedCredentialsProvider,
}

impl Named {
    fn wrap(what: String, inner: impl ProvideCredentials + 'static) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Named {
            what,
            inner: SharedCredentialsProvider::new(inner),
        })
    }
}

impl ProvideCredentials for Named {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.inner.provide_credentials().await.map_err(|e| {
                if let (CredentialsError::CredentialsNotLoaded(_), None) =
                    (&e, std::error::Error::source(&e))
                {
                    return CredentialsError::provider_error(format!(
                        "{}: no credentials for it in the shared AWS files (~/.aws/config and \
                         ~/.aws/credentials, or the files AWS_CONFIG_FILE and \
                         AWS_SHARED_CREDENTIALS_FILE name)",
                        self.what
                    ));
                }
                CredentialsError::provider_error(format!(
                    "{}: {}",
                    self.what,
                    super::cause_chain(&e)
                ))
            })
        })
    }
}

/// Whether `err` (or one of its causes) is a failure to get credentials, rather than to
/// reach the server.
pub fn is_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return !matches!(c, CredentialsError::ProviderTimedOut(_));
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<KeyPair> {
        parse_keyfile(Path::new("/etc/s3nap/keys"), text)
    }

    #[test]
    fn debug_output_shows_no_external_id() {
        let mut role = AssumeRole {
            arn: "arn:aws:iam::123456789012:role/backup".into(),
            external_id: Some("ext-4711".into()),
            session_name: Some("nightly".into()),
        };
        let shown = format!("{role:?}");
        assert!(!shown.contains("ext-4711"), "{shown}");
        assert!(shown.contains("external_id: set"), "{shown}");
        assert!(
            shown.contains("role/backup") && shown.contains("nightly"),
            "{shown}"
        );
        role.external_id = None;
        assert!(format!("{role:?}").contains("external_id: none"));
    }

    #[test]
    fn a_keyfile_reads_session_tokens_and_one_profile_section() {
        let keys = parse(
            "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s3cr3t\n\
             aws_session_token = T0KEN\n",
        )
        .unwrap();
        assert_eq!(keys.access_key, "AKIA1");
        assert_eq!(keys.secret_key, "s3cr3t");
        assert_eq!(keys.session_token.as_deref(), Some("T0KEN"));
        let keys = parse("key=AKIA2\nsecret=x\ntoken=y\n").unwrap();
        assert_eq!(keys.session_token.as_deref(), Some("y"));
        assert_eq!(parse("key=a\nsecret=b\n").unwrap().session_token, None);
    }

    #[test]
    fn a_second_profile_section_or_a_repeated_entry_is_refused_naming_the_line() {
        let e = parse("[default]\nkey=a\nsecret=b\n\n[other]\nkey=c\nsecret=d\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/s3nap/keys:5: a second profile section [other]"),
            "{e}"
        );
        assert!(e.contains("Profile NAME"), "{e}");
        let e = parse("key=a\nsecret=b\nsecret=c\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/s3nap/keys:3: 'secret' is given twice"),
            "{e}"
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret_or_the_token() {
        let keys = parse("key=AKIA1\nsecret=s3cr3t\ntoken=T0KEN\n").unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("AKIA1"), "{shown}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("T0KEN"),
            "{shown}"
        );
    }
}
