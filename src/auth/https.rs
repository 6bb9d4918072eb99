//! A small HTTPS client for the services authentication calls out to: the HTTP directory and
//! an identity provider's JWKS. Connections are pooled and kept alive (a TLS handshake per
//! login would cost the directory more than the check itself); every call has one deadline
//! covering connect, TLS, request and the whole response, and responses are capped in size.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Largest response body read; directory answers and key sets are a few kilobytes.
const MAX_BODY: usize = 1024 * 1024;

/// Why a call failed; the text names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

/// Pooled HTTPS (and, for loopback only, HTTP) calls with a deadline.
#[derive(Clone)]
pub struct HttpsClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpsClient {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(connector);
        Self { client, timeout }
    }

    /// GET `url`: the status and body.
    pub async fn get(&self, url: &str) -> Result<(http::StatusCode, Bytes), CallError> {
        let request = http::Request::get(url).body(Full::default()).map_err(|e| CallError(e.to_string()))?;
        self.call(request).await
    }

    /// POST `body` as JSON to `url`, with `bearer` as the Authorization token when given.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, Bytes), CallError> {
        let mut request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| CallError(e.to_string()))?;
        self.call(request).await
    }

    async fn call(&self, request: http::Request<Full<Bytes>>) -> Result<(http::StatusCode, Bytes), CallError> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| CallError(describe(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError(format!("reading the response: {e}")))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError(format!("no answer within {} ms", self.timeout.as_millis())))?
    }
}

/// The error and its causes in one line (hyper's own text is only "client error (Connect)").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A configured URL that cloudpop will not call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{key} = {url:?} is not a URL")]
    NotUrl { key: &'static str, url: String },
    #[error("{key} must be https:// (plain http is allowed only to loopback)")]
    Cleartext { key: &'static str },
    #[error("{key} = {url:?} must be an https:// URL")]
    Scheme { key: &'static str, url: String },
}

/// Checks a configured URL: HTTPS anywhere, plain HTTP only to a loopback address.
pub fn check_url(key: &'static str, url: &str) -> Result<(), UrlError> {
    let parsed: http::Uri = url.parse().map_err(|_| UrlError::NotUrl { key, url: url.to_owned() })?;
    let host = parsed.host().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if loopback => Ok(()),
        Some("http") => Err(UrlError::Cleartext { key }),
        _ => Err(UrlError::Scheme { key, url: url.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_except_to_loopback() {
        assert!(check_url("k", "https://directory.example/auth").is_ok());
        assert!(check_url("k", "http://127.0.0.1:8080/auth").is_ok());
        assert!(check_url("k", "http://[::1]:8080/auth").is_ok());
        assert_eq!(check_url("k", "http://directory.example/auth"), Err(UrlError::Cleartext { key: "k" }));
        assert!(matches!(check_url("k", "ftp://x/"), Err(UrlError::Scheme { .. })));
        assert!(matches!(check_url("k", "not a url"), Err(UrlError::NotUrl { .. })));
    }
}
