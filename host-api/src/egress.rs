//! Where credentials may be sent.
//!
//! Credentials go only to a connector's declared API host, over https, and
//! never to private, loopback, link-local or metadata addresses, checked
//! after DNS resolution so a public name that resolves inward is caught too.
//! Tests and local providers opt in with [`EgressPolicy::allow_private`]
//! (the `--allow-insecure-upstreams` flag), which also permits plain http.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How long a provider call may take in all, connect to last byte.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The egress rules in force for this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct EgressPolicy {
    /// Allow plain http and private/loopback destinations (tests, local
    /// providers). Off in production.
    pub allow_private: bool,
}

impl EgressPolicy {
    /// Checks a URL before any connection is made.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            other => {
                return Err(format!(
                    "`{other}` URLs are refused: credentials travel only over https (start the runtime with --allow-insecure-upstreams for local test providers)"
                ));
            }
        }
        match url.host() {
            None => Err("URL has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if !self.allow_private && is_internal(ip) {
            return Err(format!(
                "{ip} is a private, loopback or link-local address; credentials are not sent there (start with --allow-insecure-upstreams for local test providers)"
            ));
        }
        Ok(())
    }

    /// An HTTP client for provider calls under this policy: no redirects (a
    /// credential must never follow one), bounded time, guarded DNS.
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("runtime/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { policy: *self }))
            .build()
    }
}

/// Whether an address is one credentials must not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments().first().copied().unwrap_or(0);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) // AWS IMDS v6
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || a == 0
}

/// Resolves names, then drops internal addresses unless the policy allows them.
#[derive(Debug)]
struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| policy.allow_private || !is_internal(a.ip()))
                .collect();
            if allowed.is_empty() {
                let msg = if addrs.is_empty() {
                    format!("{host} did not resolve")
                } else {
                    format!("{host} resolves only to private or loopback addresses; refused")
                };
                return Err(msg.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["140.82.112.6", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let strict = EgressPolicy::default();
        assert!(
            strict
                .check_url(&"https://api.github.com/x".parse().unwrap())
                .is_ok()
        );
        assert!(
            strict
                .check_url(&"http://api.github.com/x".parse().unwrap())
                .is_err()
        );
        assert!(
            strict
                .check_url(&"https://127.0.0.1/x".parse().unwrap())
                .is_err()
        );
        assert!(
            strict
                .check_url(&"https://[::1]/x".parse().unwrap())
                .is_err()
        );
        let open = EgressPolicy {
            allow_private: true,
        };
        assert!(
            open.check_url(&"http://127.0.0.1:8080/x".parse().unwrap())
                .is_ok()
        );
        assert!(
            open.check_url(&"ftp://127.0.0.1/x".parse().unwrap())
                .is_err()
        );
    }
}
