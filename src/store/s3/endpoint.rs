//! The S3 endpoint, resolved once per bucket instead of once per request.
//!
//! The SDK resolves every request's endpoint by running S3's rule set (bucket name checks,
//! access points, FIPS, dual-stack, ...) over the request's parameters, which include the
//! object key. Its own cache keeps the last parameters and their endpoint, so with a new key
//! on nearly every request it misses, resolves again and replaces itself each time. The rule
//! set of the SDK version in Cargo.lock never reads the key, the listing prefix or the copy
//! source (the test below compares its answers across keys), so this resolver keeps the
//! endpoint for the parameters without them and answers every request of the same bucket
//! from it.

use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_smithy_runtime_api::client::endpoint::EndpointFuture;
use aws_smithy_types::endpoint::Endpoint;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub(super) struct CachedEndpoint {
    rules: DefaultResolver,
    /// The last parameters resolved (without key, prefix and copy source) and their endpoint.
    last: RwLock<Option<(Params, Endpoint)>>,
}

impl ResolveEndpoint for CachedEndpoint {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        if let Some((seen, endpoint)) = self.last.read().unwrap_or_else(|e| e.into_inner()).as_ref()
            && same_but_object(seen, params)
        {
            return EndpointFuture::ready(Ok(endpoint.clone()));
        }
        let general = match without_object(params) {
            Ok(general) => general,
            Err(e) => return EndpointFuture::ready(Err(e.into())),
        };
        EndpointFuture::new(async move {
            let endpoint = self.rules.resolve_endpoint(&general).await?;
            *self.last.write().unwrap_or_else(|e| e.into_inner()) = Some((general, endpoint.clone()));
            Ok(endpoint)
        })
    }
}

/// Whether `a` and `b` agree on everything but the object key, the listing prefix and the copy
/// source.
fn same_but_object(a: &Params, b: &Params) -> bool {
    a.bucket() == b.bucket()
        && a.region() == b.region()
        && a.use_fips() == b.use_fips()
        && a.use_dual_stack() == b.use_dual_stack()
        && a.endpoint() == b.endpoint()
        && a.force_path_style() == b.force_path_style()
        && a.accelerate() == b.accelerate()
        && a.use_global_endpoint() == b.use_global_endpoint()
        && a.use_object_lambda_endpoint() == b.use_object_lambda_endpoint()
        && a.disable_access_points() == b.disable_access_points()
        && a.disable_multi_region_access_points() == b.disable_multi_region_access_points()
        && a.use_arn_region() == b.use_arn_region()
        && a.use_s3_express_control_endpoint() == b.use_s3_express_control_endpoint()
        && a.disable_s3_express_session_auth() == b.disable_s3_express_session_auth()
}

fn without_object(p: &Params) -> Result<Params, aws_sdk_s3::config::endpoint::InvalidParams> {
    Params::builder()
        .set_bucket(p.bucket().map(str::to_owned))
        .set_region(p.region().map(str::to_owned))
        .set_use_fips(p.use_fips())
        .set_use_dual_stack(p.use_dual_stack())
        .set_endpoint(p.endpoint().map(str::to_owned))
        .set_force_path_style(p.force_path_style())
        .set_accelerate(p.accelerate())
        .set_use_global_endpoint(p.use_global_endpoint())
        .set_use_object_lambda_endpoint(p.use_object_lambda_endpoint())
        .set_disable_access_points(p.disable_access_points())
        .set_disable_multi_region_access_points(p.disable_multi_region_access_points())
        .set_use_arn_region(p.use_arn_region())
        .set_use_s3_express_control_endpoint(p.use_s3_express_control_endpoint())
        .set_disable_s3_express_session_auth(p.disable_s3_express_session_auth())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bucket: &str, key: Option<&str>, prefix: Option<&str>, endpoint: Option<&str>) -> Params {
        Params::builder()
            .bucket(bucket)
            .region("eu-west-1")
            .set_endpoint(endpoint.map(str::to_owned))
            .force_path_style(endpoint.is_some())
            .set_key(key.map(str::to_owned))
            .set_prefix(prefix.map(str::to_owned))
            .build()
            .unwrap()
    }

    /// The rule set's answer does not depend on the key, the prefix or the copy source, for
    /// the shapes of request cloudpop sends (AWS and a custom path-style endpoint, odd keys
    /// included); and the cache answers as the rules do, bucket by bucket.
    #[tokio::test]
    async fn the_cached_endpoint_is_the_one_the_rules_give_for_every_key() {
        let rules = DefaultResolver::new();
        let cached = CachedEndpoint::default();
        let keys = [None, Some("pool/mail/3f/alice/01HZX"), Some("../weird key+%2F?"), Some("a/~late/x.12")];
        for endpoint in [None, Some("http://127.0.0.1:9000"), Some("https://s3.example.net:8443/base")] {
            for bucket in ["mail", "mail.example.com", "other-bucket"] {
                for key in keys {
                    for prefix in [None, Some("pool/index/3f/alice/")] {
                        let p = params(bucket, key, prefix, endpoint);
                        let want = rules.resolve_endpoint(&p).await.unwrap();
                        assert_eq!(cached.resolve_endpoint(&p).await.unwrap(), want, "{p:?}");
                        let general = without_object(&p).unwrap();
                        assert_eq!(rules.resolve_endpoint(&general).await.unwrap(), want, "{p:?}");
                    }
                }
            }
        }
    }
}
