//! How the S3 client reaches its server: the TLS roots it trusts (`CaFile`), the addressing
//! style (`AddressingStyle`), and the two ways a server can refuse the connection that retrying
//! cannot fix — a certificate the client does not trust, and a bucket in another region than
//! the requests are signed for.
//!
//! Every request leaves through [`http_client`]: the SDK's own HTTPS client (rustls with
//! aws-lc, the native roots, proxies from the environment) with the configured CA bundle added
//! to the roots, and one wrapper on its connector that turns a failed TLS handshake into
//! [`TlsRefused`], which names the server (the SDK's error does not) and which
//! [`super::s3::sdk_error`] does not retry: an untrusted certificate stays untrusted.

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::{
    ConfigBag, HttpClient, RuntimeComponents, RuntimeComponentsBuilder, SharedHttpClient,
};
use aws_sdk_s3::error::BoxError;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// `AddressingStyle`: where the bucket's name goes in a request's URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Addressing {
    /// Virtual-hosted on AWS, path-style with a custom `Endpoint` (what S3-compatible servers
    /// reached by an address or a single host name need: `bucket.host` resolves nowhere).
    #[default]
    Auto,
    /// `https://host/bucket/key`.
    Path,
    /// `https://bucket.host/key`.
    Virtual,
}

impl Addressing {
    pub const NAMES: [(&'static str, Addressing); 3] = [
        ("auto", Addressing::Auto),
        ("path", Addressing::Path),
        ("virtual", Addressing::Virtual),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Addressing::Auto => "auto",
            Addressing::Path => "path",
            Addressing::Virtual => "virtual",
        }
    }

    /// Whether requests put the bucket in the path, with or without a custom endpoint.
    pub fn path_style(self, custom_endpoint: bool) -> bool {
        match self {
            Addressing::Auto => custom_endpoint,
            Addressing::Path => true,
            Addressing::Virtual => false,
        }
    }
}

/// The certificates of a PEM bundle, each checked as a trust anchor; an error names the file.
pub fn read_ca_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("CaFile {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("CaFile {}: not a PEM bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow::anyhow!(
            "CaFile {}: no certificate in it (a PEM bundle of BEGIN CERTIFICATE blocks)",
            path.display()
        ));
    }
    // What the SDK will do with them later, where a bad one panics instead of failing.
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            anyhow::anyhow!(
                "CaFile {}: certificate {} is not usable as a CA: {e}",
                path.display(),
                n + 1
            )
        })?;
    }
    Ok(pem)
}

/// The HTTPS client every request goes through: the SDK's default (rustls with aws-lc, the
/// system's roots, `HTTP(S)_PROXY`/`NO_PROXY` from the environment) plus the certificates of
/// `ca_file`, its handshake failures reported as [`TlsRefused`].
pub fn http_client(ca_file: Option<&Path>) -> anyhow::Result<SharedHttpClient> {
    let mut trust = TrustStore::default();
    if let Some(path) = ca_file {
        trust = trust.with_pem_certificate(read_ca_file(path)?);
    }
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    let inner = aws_smithy_http_client::Builder::new().build_with_connector_fn(
        move |settings, components| {
            let mut builder = aws_smithy_http_client::ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(context.clone());
            builder.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                builder.set_sleep_impl(components.sleep_impl());
            }
            builder.set_proxy_config(Some(ProxyConfig::from_env()));
            builder.build()
        },
    );
    Ok(SharedHttpClient::new(NamingTls {
        inner,
        ca_file: ca_file.map(Path::to_path_buf),
    }))
}

/// The client of [`http_client`]; its connectors wrap the SDK's.
#[derive(Debug)]
struct NamingTls {
    inner: SharedHttpClient,
    ca_file: Option<PathBuf>,
}

impl HttpClient for NamingTls {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(NamingConnector {
            inner: self.inner.http_connector(settings, components),
            ca_file: self.ca_file.clone(),
        })
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_base_client_config(components, cfg)
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct NamingConnector {
    inner: SharedHttpConnector,
    ca_file: Option<PathBuf>,
}

impl HttpConnector for NamingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let server = server_of(request.uri());
        let ca_file = self.ca_file.clone();
        let sent = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            sent.await.map_err(|e| match tls_failure(&e) {
                Some(reason) => ConnectorError::other(
                    Box::new(TlsRefused {
                        server,
                        reason,
                        ca_file,
                    }),
                    None,
                ),
                None => e,
            })
        })
    }
}

/// `scheme://host[:port]` of a request's URI.
fn server_of(uri: &str) -> String {
    match uri.find("://") {
        Some(at) => {
            let rest = &uri[at + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            format!("{}{}", &uri[..at + 3], &rest[..end])
        }
        None => uri.to_string(),
    }
}

/// The TLS error (rustls's) that ended the handshake, if that is what `err` is.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    rustls_error(err).map(|e| e.to_string())
}

/// The `rustls::Error` in `err`'s chain. An `io::Error`'s `source` skips the error it wraps
/// (hyper-rustls nests the rustls error two `io::Error`s deep), so payloads are looked into.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let payload = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    payload
        .and_then(rustls_error)
        .or_else(|| err.source().and_then(rustls_error))
}

/// The TLS handshake with `server` failed: its certificate is not trusted (or not for its
/// name), or no protocol was agreed. Not transient.
#[derive(Debug, thiserror::Error)]
#[error("the TLS handshake with {server} failed ({reason}); {hint}", hint = self.hint())]
pub struct TlsRefused {
    pub server: String,
    pub reason: String,
    ca_file: Option<PathBuf>,
}

impl TlsRefused {
    fn hint(&self) -> String {
        match &self.ca_file {
            Some(path) => format!(
                "the server's certificate must be signed by a CA in CaFile {} (or a system \
                 one) and name the host",
                path.display()
            ),
            None => "if a private CA signed the server's certificate, name it with CaFile".into(),
        }
    }

    /// The refusal in `err`'s chain, if there is one.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsRefused> {
        let mut cause = Some(err);
        while let Some(e) = cause {
            if let Some(refused) = e.downcast_ref::<TlsRefused>() {
                return Some(refused);
            }
            cause = e.source();
        }
        None
    }
}

/// The region a refused request's bucket is in, when the server said so: S3 answers requests
/// signed for the wrong region with 301 PermanentRedirect (HEAD: no body) or 400
/// AuthorizationHeaderMalformed, naming the region in `x-amz-bucket-region` and in the body's
/// `<Region>`.
pub fn redirected_region(
    status: u16,
    code: &str,
    header: Option<&str>,
    body: &[u8],
) -> Option<String> {
    // Not 307: S3 sends it while a new bucket's DNS settles, and it passes by itself.
    let redirect = status == 301
        || matches!(
            code,
            "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException"
        );
    if !redirect {
        return None;
    }
    let from_body = || {
        let text = std::str::from_utf8(body).ok()?;
        let start = text.find("<Region>")? + "<Region>".len();
        let end = start + text[start..].find("</Region>")?;
        Some(text[start..end].trim().to_string())
    };
    header
        .map(|h| h.trim().to_string())
        .or_else(from_body)
        .filter(|r| !r.is_empty())
}

/// What to tell the user about a bucket in `region`.
pub fn region_advice(region: &str) -> String {
    format!(
        "the bucket is in region {region}: configure `Region {region}` (for a bucket set, \
         `MasterRegion` or `ReplicaRegion` in its <Bucket> block)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_addressing_is_path_style_only_with_a_custom_endpoint() {
        assert!(Addressing::Auto.path_style(true));
        assert!(!Addressing::Auto.path_style(false));
        assert!(Addressing::Path.path_style(false));
        assert!(!Addressing::Virtual.path_style(true));
    }

    #[test]
    fn servers_are_named_without_path_or_query() {
        assert_eq!(
            server_of("https://b.s3.example:8443/k/x?uploads"),
            "https://b.s3.example:8443"
        );
        assert_eq!(
            server_of("http://127.0.0.1:9/?list-type=2"),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn region_redirects_name_the_region() {
        let body = b"<Error><Code>PermanentRedirect</Code><Region>eu-west-1</Region></Error>";
        assert_eq!(
            redirected_region(301, "", None, body).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            redirected_region(400, "AuthorizationHeaderMalformed", Some("ap-south-1"), b"")
                .as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(
            redirected_region(400, "InvalidArgument", Some("x"), b""),
            None
        );
        assert_eq!(redirected_region(301, "", None, b""), None);
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = read_ca_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_ca_file(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = read_ca_file(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.pem"), "{err}");
    }
}
