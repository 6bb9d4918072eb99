//! Counts every HTTP request the S3 client sends, retries included, by API operation and
//! status class (object stores bill per request), and notes the operation, status and attempt
//! on the `store.*` span the request runs in.

use crate::metrics::{S3Labels, known, metrics};
use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;

#[derive(Debug)]
pub struct RequestCounter;

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "cloudpop-request-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg.load::<Metadata>().map(Metadata::name).unwrap_or("other");
        let operation = known::S3_OPERATIONS.into_iter().find(|op| *op == name).unwrap_or("other");
        let status = context.response().map(|r| r.status().as_u16());
        let class = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
            None => "error",
        };
        metrics().s3_requests.get_or_create(&S3Labels { operation, status: class }).inc();
        crate::store::observed::count_call();
        let span = tracing::Span::current();
        span.record("s3.operation", operation);
        if let Some(status) = status {
            span.record("http.status_code", status);
        }
        if let Some(attempts) = cfg.load::<RequestAttempts>() {
            span.record("s3.attempt", attempts.attempts());
        }
        Ok(())
    }
}
