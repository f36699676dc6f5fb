//! Where credentials may be sent, and how they get there.
//!
//! Credentials go only to a connector's declared API host, over https, and
//! never to private, loopback, link-local or metadata addresses, checked
//! after DNS resolution so a public name that resolves inward is caught too.
//! Tests and local providers opt in with [`EgressPolicy::allow_private`]
//! (the `--allow-insecure-upstreams` flag), which also permits plain http.
//!
//! Every outbound HTTP client is built by [`Egress::client`], and it never
//! reads `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` or `NO_PROXY`: a proxy
//! resolves the target's name itself, so the address check after DNS would
//! never run. An operator who needs a proxy names it (`--outbound-proxy`,
//! [`OutboundProxy`]); the client then resolves every target itself,
//! refuses it if any of its addresses is internal, and only then opens the
//! tunnel through the proxy. The proxy resolves the name again, so a name
//! whose answer changes between the two lookups (DNS rebinding) is stopped
//! only if the proxy refuses internal destinations too: configure it to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// How long a provider call may take in all, connect to last byte.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Ends the proxy host name under which the client's resolver is handed a
/// target (see [`OutboundProxy::route_for`]). `.invalid` (RFC 6761) is never
/// a real name, and this one never leaves the process.
const ROUTE_SUFFIX: &str = ".outbound-proxy.invalid";
/// Target bytes per label of a route name (two hex digits each: labels stay
/// within DNS's 63 characters).
const ROUTE_LABEL_BYTES: usize = 30;
/// Addresses named in a refusal; the rest are counted.
const MAX_NAMED_ADDRESSES: usize = 4;

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

    /// An HTTP client for provider calls under this policy, connecting
    /// directly (see [`Egress::client`]).
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        Egress::from(*self).client()
    }
}

/// How provider calls leave this process: the rules, and the route.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Which destinations credentials may reach.
    pub policy: EgressPolicy,
    /// The operator's proxy (`--outbound-proxy`); `None`: connect directly.
    /// The environment's proxy variables are never read.
    pub proxy: Option<OutboundProxy>,
}

impl From<EgressPolicy> for Egress {
    fn from(policy: EgressPolicy) -> Self {
        Self {
            policy,
            proxy: None,
        }
    }
}

impl Egress {
    /// The one constructor of outbound HTTP clients: no proxy from the
    /// environment, no redirects (a credential must never follow one),
    /// bounded time, and a resolver that refuses internal addresses, for the
    /// target itself or, with a proxy, before the tunnel to it is opened.
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("runtime/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy,
                proxy: self.proxy.clone(),
            }));
        let builder = match &self.proxy {
            None => builder,
            Some(proxy) => {
                let proxy = proxy.clone();
                builder.proxy(reqwest::Proxy::custom(move |target| {
                    proxy.route_for(target)
                }))
            }
        };
        builder.build()
    }
}

/// The proxy an operator sends provider calls through (`--outbound-proxy
/// http://[user:password@]host:port`). Its URL may carry credentials, so it
/// prints without them.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundProxy {
    url: Url,
}

impl OutboundProxy {
    /// Parses and checks a proxy URL: `http://`, a host, no path or query.
    /// Only http proxies: the client's tunnel through one carries TLS to the
    /// provider end to end.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text.trim()).map_err(|e| {
            format!("--outbound-proxy must be a URL like http://proxy.internal:3128 ({e})")
        })?;
        if url.scheme() != "http" {
            return Err(format!(
                "--outbound-proxy: `{}` proxies are not supported; give an http:// URL such as http://proxy.internal:3128 (https to providers is tunnelled through it with CONNECT, end to end)",
                url.scheme()
            ));
        }
        if url.host().is_none() {
            return Err("--outbound-proxy: the URL names no host".into());
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(
                "--outbound-proxy names only the proxy: http://[user:password@]host:port, no path or query"
                    .into(),
            );
        }
        Ok(Self { url })
    }

    /// Where `target`'s connection goes: to this proxy, under a host name
    /// that carries the target to the client's resolver. reqwest asks the
    /// resolver only for the proxy's name, never the target's, so the name
    /// is the only way the check can learn the target before the tunnel is
    /// opened. The port and credentials are the proxy's; the `CONNECT`
    /// line and `Host` header still name the target.
    fn route_for(&self, target: &Url) -> Option<Url> {
        let host = match target.host()? {
            Host::Domain(d) => d.to_string(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        let mut route = self.url.clone();
        route.set_host(Some(&route_name(&host))).ok()?;
        Some(route)
    }

    /// The proxy's own addresses. It is operator infrastructure, usually on
    /// an internal network, so they are not checked.
    async fn addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        match self.url.host() {
            Some(Host::Ipv4(ip)) => Ok(vec![SocketAddr::new(IpAddr::V4(ip), 0)]),
            Some(Host::Ipv6(ip)) => Ok(vec![SocketAddr::new(IpAddr::V6(ip), 0)]),
            Some(Host::Domain(d)) => Ok(tokio::net::lookup_host((d, 0)).await?.collect()),
            None => Err(std::io::Error::other("the outbound proxy URL has no host")),
        }
    }
}

impl std::str::FromStr for OutboundProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or(80);
        write!(f, "http://{host}:{port}")?;
        if !self.url.username().is_empty() || self.url.password().is_some() {
            f.write_str(" (credentials redacted)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutboundProxy({self})")
    }
}

/// The route name carrying `target`: its bytes in hex, in labels, under
/// [`ROUTE_SUFFIX`].
fn route_name(target: &str) -> String {
    let mut name = String::with_capacity(target.len() * 2 + 32);
    for (i, chunk) in target.as_bytes().chunks(ROUTE_LABEL_BYTES).enumerate() {
        if i > 0 {
            name.push('.');
        }
        name.push_str(&hex::encode(chunk));
    }
    name.push_str(ROUTE_SUFFIX);
    name
}

/// The target a route name carries.
fn target_of(route: &str) -> Option<String> {
    let hexed = route.strip_suffix(ROUTE_SUFFIX)?.replace('.', "");
    String::from_utf8(hex::decode(hexed).ok()?).ok()
}

/// A destination the egress guard refused, and why. It travels inside
/// reqwest's error; [`refusal`] finds it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The guard's refusal among `error`'s causes, if that is why a request
/// failed: callers report it as a denial naming the address, not as a
/// network failure.
pub fn refusal<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refused> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

/// Lists addresses for a message, the first few by name.
fn named(ips: &[IpAddr]) -> String {
    let mut text = ips
        .iter()
        .take(MAX_NAMED_ADDRESSES)
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ips.len() > MAX_NAMED_ADDRESSES {
        text.push_str(&format!(" and {} more", ips.len() - MAX_NAMED_ADDRESSES));
    }
    text
}

/// Whether an address is one credentials must not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4, broadcast included
        || a == 0
}

/// IPv6 is checked by what is allowed rather than what is not: global
/// unicast (2000::/3) outside its special-purpose blocks, and addresses
/// that embed an IPv4 address when that one is allowed. Everything else
/// (loopback, unspecified, IPv4-compatible and IPv4-translated
/// `::ffff:0:0:0/96`, the local-use NAT64 prefix `64:ff9b:1::/48`, unique
/// local fc00::/7 with AWS's fd00:ec2::254, link-local fe80::/10,
/// site-local fec0::/10, multicast, unassigned space) is internal.
fn is_internal_v6(ip: Ipv6Addr) -> bool {
    // IPv4-mapped ::ffff:0:0/96: what a dual-stack socket reaches is the
    // IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7] = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): DNS64 puts public
    // IPv4 addresses here on IPv6-only networks, so refusing it wholesale
    // would cut those off; the translator reaches the last 32 bits.
    if [s0, s1, s2, s3, s4, s5] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded(s6, s7));
    }
    // 6to4 2002::/16 (RFC 3056): 2002:AABB:CCDD::/48 is the site behind
    // IPv4 AA.BB.CC.DD.
    if s0 == 0x2002 {
        return is_internal_v4(embedded(s1, s2));
    }
    let global_unicast = (s0 & 0xe000) == 0x2000;
    !global_unicast
        || (s0 == 0x2001 && s1 == 0) // Teredo 2001::/32: a tunnel to an obfuscated IPv4
        || (s0 == 0x2001 && s1 == 0x0002 && s2 == 0) // benchmarking 2001:2::/48
        || (s0 == 0x2001 && s1 == 0x0db8) // documentation 2001:db8::/32
        || (s0 == 0x3fff && (s1 & 0xf000) == 0) // documentation 3fff::/20
}

/// Resolves names under the policy: directly, the target's allowed
/// addresses; through the proxy, the proxy's addresses once the target
/// carried in the route name has passed.
#[derive(Debug)]
struct GuardedResolver {
    policy: EgressPolicy,
    proxy: Option<OutboundProxy>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn refused(message: String) -> BoxError {
    Box::new(Refused(message))
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let proxy = self.proxy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addrs = match &proxy {
                None => resolve_direct(policy, host).await?,
                Some(proxy) => resolve_routed(policy, proxy, host).await?,
            };
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The target's addresses, internal ones dropped: the connection goes only
/// to addresses that were checked.
async fn resolve_direct(policy: EgressPolicy, host: &str) -> Result<Vec<SocketAddr>, BoxError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    if addrs.is_empty() {
        return Err(format!("{host} did not resolve").into());
    }
    let (allowed, internal): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
        .into_iter()
        .partition(|a| policy.allow_private || !is_internal(a.ip()));
    if allowed.is_empty() {
        let ips: Vec<IpAddr> = internal.iter().map(SocketAddr::ip).collect();
        return Err(refused(format!(
            "{host} resolves only to private, loopback or link-local addresses ({}); credentials are not sent there (start with --allow-insecure-upstreams for local test providers)",
            named(&ips)
        )));
    }
    Ok(allowed)
}

/// The proxy's addresses, once the target in `route` has passed
/// [`check_target`].
async fn resolve_routed(
    policy: EgressPolicy,
    proxy: &OutboundProxy,
    route: &str,
) -> Result<Vec<SocketAddr>, BoxError> {
    let Some(target) = target_of(route) else {
        return Err(refused(format!(
            "{route} was not routed through the outbound proxy {proxy}; refused"
        )));
    };
    check_target(policy, &target).await?;
    let addrs = proxy
        .addrs()
        .await
        .map_err(|e| format!("the outbound proxy {proxy} did not resolve: {e}"))?;
    if addrs.is_empty() {
        return Err(format!("the outbound proxy {proxy} did not resolve").into());
    }
    Ok(addrs)
}

/// Checks a target bound for the proxy: an IP literal as it is, a name by
/// every address it resolves to here (the proxy will pick one itself).
async fn check_target(policy: EgressPolicy, target: &str) -> Result<(), BoxError> {
    if let Ok(ip) = target.parse::<IpAddr>() {
        return policy.check_ip(ip).map_err(refused);
    }
    if policy.allow_private {
        return Ok(());
    }
    let unresolved = |why: String| -> BoxError {
        format!(
            "{target} did not resolve{why}; the runtime resolves provider names itself before sending a call through the outbound proxy"
        )
        .into()
    };
    let ips: Vec<IpAddr> = tokio::net::lookup_host((target, 0))
        .await
        .map_err(|e| unresolved(format!(" ({e})")))?
        .map(|a| a.ip())
        .collect();
    if ips.is_empty() {
        return Err(unresolved(String::new()));
    }
    let internal: Vec<IpAddr> = ips.into_iter().filter(|ip| is_internal(*ip)).collect();
    if !internal.is_empty() {
        return Err(refused(format!(
            "{target} resolves to {}, a private, loopback or link-local address; credentials are not sent there, through the outbound proxy or otherwise (start with --allow-insecure-upstreams for local test providers)",
            named(&internal)
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn internal(ip: &str) -> bool {
        is_internal(ip.parse().unwrap())
    }

    /// Each range with addresses just inside and just outside it (or the
    /// neighbour that is internal for another reason, named).
    #[test]
    fn internal_ranges_both_sides_of_each_boundary() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "private, loopback, link-local, CGNAT, this network",
                &[
                    "127.0.0.1",
                    "10.1.2.3",
                    "172.16.0.1",
                    "192.168.1.1",
                    "169.254.169.254",
                    "100.64.0.0",
                    "100.127.255.255",
                    "0.0.0.0",
                ],
                &["140.82.112.6", "8.8.8.8", "100.63.255.255", "100.128.0.0"],
            ),
            (
                "benchmarking 198.18.0.0/15",
                &["198.18.0.0", "198.19.255.255"],
                &["198.17.255.255", "198.20.0.0"],
            ),
            (
                // Below it lies multicast 224/4, internal as well.
                "reserved 240.0.0.0/4 and broadcast",
                &[
                    "240.0.0.0",
                    "255.255.255.254",
                    "255.255.255.255",
                    "239.255.255.255",
                ],
                &["223.255.255.255"],
            ),
            (
                "IPv6 loopback, unspecified, unique local, link-local, multicast, AWS IMDS",
                &[
                    "::1",
                    "::",
                    "fd00::1",
                    "fc00::",
                    "fe80::1",
                    "ff02::1",
                    "fd00:ec2::254",
                ],
                &["2606:4700::1111", "2a00:1450:4001::1"],
            ),
            (
                "site-local fec0::/10 (neighbours: link-local below, multicast above)",
                &[
                    "fec0::",
                    "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                    "febf::1",
                    "ff00::",
                ],
                &[],
            ),
            (
                "IPv4-mapped ::ffff:0:0/96: the embedded IPv4 decides",
                &[
                    "::ffff:127.0.0.1",
                    "::ffff:10.0.0.1",
                    "::ffff:198.18.0.1",
                    "::ffff:240.0.0.1",
                ],
                &["::ffff:8.8.8.8", "::ffff:140.82.112.6"],
            ),
            (
                // Refused wholesale, as is the rest of ::/8 outside the
                // mapped and NAT64 prefixes.
                "IPv4-translated ::ffff:0:0:0/96 and IPv4-compatible ::/96",
                &[
                    "::ffff:0:0:0",
                    "::ffff:0:808:808",
                    "::ffff:0:ffff:ffff",
                    "::fffe:ffff:ffff:ffff",
                    "::ffff:1:0:0",
                    "::8.8.8.8",
                    "::127.0.0.1",
                ],
                &[],
            ),
            (
                "NAT64 64:ff9b::/96: the embedded IPv4 (last 32 bits) decides",
                &[
                    "64:ff9b::7f00:1",
                    "64:ff9b::a00:1",
                    "64:ff9b::a9fe:a9fe",
                    "64:ff9b::ffff:ffff",
                    "64:ff9b::",
                    // Just past the /96: not the well-known prefix.
                    "64:ff9b::1:808:808",
                ],
                &["64:ff9b::808:808", "64:ff9b::8c52:7006"],
            ),
            (
                "local-use NAT64 64:ff9b:1::/48, refused wholesale",
                &[
                    "64:ff9b:1::",
                    "64:ff9b:1::808:808",
                    "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
                    "64:ff9b:0:ffff::",
                    "64:ff9b:2::",
                ],
                &[],
            ),
            (
                "6to4 2002::/16: the embedded IPv4 (bits 16-48) decides",
                &[
                    "2002:7f00:1::",
                    "2002:a00:1::1",
                    "2002:c0a8:101::1",
                    "2002:a9fe:a9fe::",
                    "2002::",
                    "2002:ffff:ffff::",
                ],
                &[
                    "2002:808:808::",
                    "2002:8c52:7006:1::1",
                    "2001:ffff::1",
                    "2003::1",
                ],
            ),
            (
                "special blocks of global unicast",
                &[
                    "2001::1",
                    "2001:0:ffff::1",
                    "2001:2::1",
                    "2001:db8::1",
                    "3fff::1",
                    "3fff:fff::1",
                ],
                &[
                    "2001:1::1",
                    "2001:3::1",
                    "2001:db9::1",
                    "3fff:1000::1",
                    "3ffe::1",
                ],
            ),
            (
                "outside 2000::/3",
                &["1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "4000::"],
                &["2000::1", "3fff:ffff::1"],
            ),
        ];
        for (range, inside, outside) in cases {
            for ip in *inside {
                assert!(internal(ip), "{range}: {ip} must be internal");
            }
            for ip in *outside {
                assert!(!internal(ip), "{range}: {ip} must be allowed");
            }
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
        assert!(
            strict
                .check_url(&"https://[64:ff9b::a00:1]/x".parse().unwrap())
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

    #[test]
    fn route_names_carry_the_target_back() {
        let long = format!("{}.example.com", "a".repeat(240));
        for target in ["api.github.com", "::1", "10.0.0.1", long.as_str()] {
            let name = route_name(target);
            assert!(name.ends_with(ROUTE_SUFFIX), "{name}");
            assert!(name.split('.').all(|l| l.len() <= 63), "{name}");
            assert_eq!(target_of(&name).as_deref(), Some(target));
        }
        assert_eq!(target_of("api.github.com"), None);
        assert_eq!(target_of(&format!("zz{ROUTE_SUFFIX}")), None);

        let proxy = OutboundProxy::parse("http://u:p@proxy.internal:3128").unwrap();
        let route = proxy
            .route_for(&"https://[::1]:8443/x".parse().unwrap())
            .unwrap();
        assert_eq!(route.port(), Some(3128));
        assert_eq!((route.username(), route.password()), ("u", Some("p")));
        assert_eq!(target_of(route.host_str().unwrap()).as_deref(), Some("::1"));
    }

    #[test]
    fn outbound_proxy_urls_are_checked_and_print_without_credentials() {
        let p = OutboundProxy::parse("http://alice:s3cret-proxy-pw@proxy.internal:3128/").unwrap();
        for shown in [p.to_string(), format!("{p:?}")] {
            assert!(!shown.contains("s3cret-proxy-pw"), "{shown}");
            assert!(shown.contains("proxy.internal:3128"), "{shown}");
        }
        assert_eq!(
            OutboundProxy::parse("http://10.0.0.5").unwrap().to_string(),
            "http://10.0.0.5:80"
        );
        for (bad, says) in [
            ("https://proxy.internal:3128", "http://"),
            ("socks5://proxy.internal:1080", "http://"),
            ("http://proxy.internal:3128/path", "no path"),
            ("http://proxy.internal:3128/?a=b", "no path"),
            ("proxy.internal:3128", "http://"),
            ("not a url", "URL"),
        ] {
            let err = OutboundProxy::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// A stand-in for an operator's proxy: records the head of every
    /// request it receives and answers `reply`.
    struct RecordingProxy {
        url: String,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl RecordingProxy {
        async fn start(reply: &'static str) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    record
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
            Self { url, seen }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn via(proxy: &str, allow_private: bool) -> reqwest::Client {
        Egress {
            policy: EgressPolicy { allow_private },
            proxy: Some(OutboundProxy::parse(proxy).unwrap()),
        }
        .client()
        .unwrap()
    }

    fn refusal_of(e: &reqwest::Error) -> String {
        refusal(e)
            .unwrap_or_else(|| panic!("not refused by the guard: {e:?}"))
            .to_string()
    }

    #[tokio::test]
    async fn a_private_target_is_refused_before_the_proxy_is_contacted() {
        let proxy = RecordingProxy::start("HTTP/1.1 200 OK\r\n\r\n").await;
        let client = via(&proxy.url, false);
        let e = client
            .get("https://localhost:9/x")
            .send()
            .await
            .unwrap_err();
        let why = refusal_of(&e);
        assert!(
            why.contains("localhost resolves to")
                && (why.contains("127.0.0.1") || why.contains("::1")),
            "{why}"
        );
        for literal in [
            "https://10.0.0.1/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://198.18.0.1/x",
        ] {
            let e = client.get(literal).send().await.unwrap_err();
            assert!(refusal_of(&e).contains("is a private"), "{literal}");
        }
        assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    }

    #[tokio::test]
    async fn allowed_targets_go_through_the_proxy_with_its_credentials() {
        let proxy =
            RecordingProxy::start("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        let with_auth = proxy.url.replace("http://", "http://alice:pw@");
        // A public IP literal needs no DNS here.
        let e = via(&with_auth, false)
            .get("https://93.184.215.14/x")
            .send()
            .await
            .unwrap_err();
        assert!(refusal(&e).is_none(), "{e:?}");
        let seen = proxy.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let head = seen[0].to_ascii_lowercase();
        assert!(
            head.starts_with("connect 93.184.215.14:443 http/1.1"),
            "{head}"
        );
        assert!(head.contains("host: 93.184.215.14:443"), "{head}");
        assert!(
            head.contains("proxy-authorization: basic ywxpy2u6chc="),
            "{head}"
        );
        assert!(!head.contains(ROUTE_SUFFIX), "{head}");

        // Local test providers (the flag): plain http is forwarded.
        let proxy = RecordingProxy::start(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        )
        .await;
        let answer = via(&proxy.url, true)
            .get("http://localhost:9/x")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.text().await.unwrap(), "ok");
        let seen = proxy.seen();
        assert!(
            seen[0].starts_with("GET http://localhost:9/x HTTP/1.1"),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_direct_refusal_names_the_address() {
        let e = EgressPolicy::default()
            .client()
            .unwrap()
            .get("https://localhost:9/x")
            .send()
            .await
            .unwrap_err();
        let why = refusal_of(&e);
        assert!(
            why.contains("localhost resolves only to private")
                && (why.contains("127.0.0.1") || why.contains("::1")),
            "{why}"
        );
    }
}
