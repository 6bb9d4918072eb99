//! The chart's `auth` section: directory and identity-provider settings reach the config, their
//! secrets become mounted files (never ConfigMap values), the NetworkPolicy lets the pods reach
//! them, and bad combinations are refused with messages that say what to do.

use crate::kubernetes::{assert_refused, find, render, validate};

fn config(objects: &[serde_json::Value]) -> String {
    find(objects, "ConfigMap", "cloudpop")["data"]["cloudpop.toml"].as_str().unwrap().to_owned()
}

fn assert_config_has(objects: &[serde_json::Value], lines: &[&str]) {
    let config = config(objects);
    for line in lines {
        assert!(config.contains(line), "{line} missing:\n{config}");
    }
}

#[test]
fn directory_settings_reach_the_config_as_mounted_secrets_with_egress() {
    let sets = [
        "auth.backend=ldap",
        "auth.ldap.url=ldaps://ldap.example.com",
        "auth.ldap.baseDN=ou=people\\,dc=example\\,dc=com",
        "auth.ldap.bindDN=cn=cloudpop\\,dc=example\\,dc=com",
        "auth.ldap.attributes=mailbox=mail",
        "auth.existingSecret=directory",
        "auth.caSecret=directory-ca",
        "auth.oauth.jwksUrl=https://login.example.com:8443/jwks.json",
        "auth.oauth.issuer=https://login.example.com",
        "auth.oauth.audience=cloudpop",
    ];
    let objects = render(&[], &sets);
    validate("auth", &objects);
    assert_config_has(
        &objects,
        &[
            "auth_backend = \"ldap\"",
            "ldap_url = \"ldaps://ldap.example.com\"",
            "ldap_bind_dn = \"cn=cloudpop,dc=example,dc=com\"",
            "ldap_bind_password_file = \"/var/run/secrets/cloudpop/auth/ldap-bind-password\"",
            "ldap_ca_file = \"/var/run/secrets/cloudpop/auth-ca/ca.crt\"",
            "oauth_jwks_url = \"https://login.example.com:8443/jwks.json\"",
            "oauth_ca_file = \"/var/run/secrets/cloudpop/auth-ca/ca.crt\"",
        ],
    );
    let volumes = find(&objects, "Deployment", "cloudpop")["spec"]["template"]["spec"]["volumes"].clone();
    let volume = |name: &str| volumes.as_array().unwrap().iter().find(|v| v["name"] == name).cloned();
    let secrets = volume("auth-secrets").expect("auth-secrets volume");
    assert_eq!(secrets["secret"]["secretName"], "directory");
    assert_eq!(volume("auth-ca").expect("auth-ca volume")["secret"]["secretName"], "directory-ca");
    let policy = find(&objects, "NetworkPolicy", "cloudpop");
    let egress_ports: Vec<u64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter().filter_map(|p| p["port"].as_u64()))
        .collect();
    assert!(egress_ports.contains(&636) && egress_ports.contains(&8443), "{egress_ports:?}");

    // The HTTP directory: its token and client certificate are files too.
    let sets = [
        "auth.backend=http",
        "auth.http.url=https://auth.internal:9443/pop3",
        "auth.existingSecret=directory",
        "auth.http.clientCertSecret=directory-client",
    ];
    let objects = render(&[], &sets);
    validate("auth-http", &objects);
    assert_config_has(
        &objects,
        &[
            "auth_http_token_file = \"/var/run/secrets/cloudpop/auth/http-token\"",
            "auth_http_client_cert = \"/var/run/secrets/cloudpop/auth-client/tls.crt\"",
            "auth_http_client_key = \"/var/run/secrets/cloudpop/auth-client/tls.key\"",
        ],
    );
    let defaults = render(&[], &[]);
    let config = config(&defaults);
    assert!(!config.contains("auth_backend") && !config.contains("ldap_url"), "local is the default:\n{config}");
}

#[test]
fn bad_authentication_values_are_refused_by_name() {
    let cases: &[(&[&str], &str)] = &[
        (&["auth.backend=kerberos"], "/auth/backend"),
        (&["auth.ldap.url=http://ldap.example.com"], "/auth/ldap/url"),
        (&["auth.http.url=http://auth.example.com"], "/auth/http/url"),
        (&["auth.ldap.userFilter=uid=%u"], "/auth/ldap/userFilter"),
        (&["auth.backend=ldap"], "auth.backend: ldap needs auth.ldap.url"),
        (
            &["auth.backend=ldap", "auth.ldap.url=ldaps://l", "auth.ldap.baseDN=dc=x", "auth.ldap.bindDN=cn=svc"],
            "auth.ldap.bindDN needs auth.existingSecret",
        ),
        (&["auth.backend=http"], "auth.backend: http needs auth.http.url"),
        (&["auth.oauth.jwksUrl=https://idp/jwks"], "auth.oauth.jwksUrl needs auth.oauth.issuer"),
        (&["auth.backend=http", "auth.http.url=https://a", "auth.scram.enabled=true"], "auth.scram.enabled needs"),
        (&["config.ldap_url=ldaps://x"], "ldap_url"),
        (&["config.auth_http_token=secret"], "auth_http_token"),
    ];
    assert_refused(cases);
}

/// Issue 24: the pool-wide verified-credential cache reaches the config with its key as a
/// mounted file, client-IP affinity reaches the Service, and the cache is refused without its
/// key or outside cloud mode.
#[test]
fn a_pool_wide_credential_cache_and_client_ip_affinity_render_as_asked() {
    let sets = [
        "mode=cloud",
        "s3.bucket=mail",
        "s3.endpoint=http://minio:9000",
        "auth.existingSecret=auth",
        "auth.sharedCredentialCacheSeconds=1800",
        "pop3.service.clientIPAffinity.enabled=true",
    ];
    let objects = render(&[], &sets);
    validate("shared credential cache", &objects);
    assert_config_has(
        &objects,
        &[
            "credential_cache_shared_secs = 1800",
            "credential_cache_shared_key_file = \"/var/run/secrets/cloudpop/auth/credential-cache-key\"",
        ],
    );
    let deployment = find(&objects, "Deployment", "cloudpop");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let auth = volumes.iter().find(|v| v["name"] == "auth-secrets").expect("the auth Secret is mounted");
    let items = auth["secret"]["items"].as_array().unwrap();
    assert!(items.iter().any(|i| i["key"] == "credential-cache-key"), "{items:?}");
    let service = find(&objects, "Service", "cloudpop-pop3");
    assert_eq!(service["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
    let defaults = render(&[], &[]);
    assert!(find(&defaults, "Service", "cloudpop-pop3")["spec"].get("sessionAffinity").is_none());
    assert!(!config(&defaults).contains("credential_cache_shared"));
    let cases: &[(&[&str], &str)] = &[
        (
            &["mode=cloud", "s3.bucket=mail", "auth.sharedCredentialCacheSeconds=600"],
            "auth.sharedCredentialCacheSeconds needs auth.existingSecret with the key credential-cache-key",
        ),
        (
            &["mode=embedded", "auth.existingSecret=auth", "auth.sharedCredentialCacheSeconds=600"],
            "it needs cloud mode",
        ),
        (&["auth.sharedCredentialCacheSeconds=-1"], "/auth/sharedCredentialCacheSeconds"),
    ];
    crate::kubernetes::assert_refused(cases);
}
