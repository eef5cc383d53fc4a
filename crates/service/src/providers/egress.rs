//! Where partner webhooks may go: an egress filter against server-side
//! request forgery. An admin registers an endpoint URL and Holdfast then
//! POSTs to it on every event, so by default a delivery never reaches
//! loopback, private (RFC 1918, RFC 4193, shared address space), link-local
//! (the cloud metadata address 169.254.169.254 among them), multicast,
//! broadcast or unspecified addresses, in IPv4 or IPv6, including IPv4
//! addresses embedded in IPv6 (mapped, compatible, NAT64).
//!
//! The check runs twice: on the URL's text when an endpoint is registered
//! (a literal address), and on every address a name resolves to when a
//! delivery connects ([`FilteringResolver`], the HTTP client's resolver), so
//! a name that later resolves to a blocked address (DNS rebinding) is refused
//! too, with the reason in the delivery log. Redirects are never followed, so
//! a partner cannot bounce a delivery elsewhere.
//!
//! `webhooks.allow_private_networks = true` turns the filter off, for
//! development and tests whose partners listen on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether deliveries may reach private and local addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The production default: public addresses only.
    PublicOnly,
    /// `webhooks.allow_private_networks = true`.
    AllowPrivate,
}

impl Egress {
    pub fn from_config(allow_private_networks: bool) -> Self {
        if allow_private_networks {
            Self::AllowPrivate
        } else {
            Self::PublicOnly
        }
    }

    /// Why `ip` may not be reached, or `None` when it may.
    pub fn refuses(self, ip: IpAddr) -> Option<&'static str> {
        match self {
            Self::AllowPrivate => None,
            Self::PublicOnly => blocked(ip),
        }
    }

    /// Refuses a URL whose host is a literal blocked address. A name is
    /// checked when a delivery resolves it.
    pub fn check_url(self, url: &url::Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) | None => return Ok(()),
        };
        match self.refuses(ip) {
            Some(reason) => Err(Refused { ip, reason }),
            None => Ok(()),
        }
    }
}

/// A blocked address and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub ip: IpAddr,
    pub reason: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "url_not_allowed: {} is a {} address, which webhooks may not reach \
             (webhooks.allow_private_networks is false)",
            self.ip, self.reason
        )
    }
}

impl std::error::Error for Refused {}

/// Why an address is blocked by default, or `None` for a public one.
pub fn blocked(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => blocked_v4(ip),
        IpAddr::V6(ip) => blocked_v6(ip),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // RFC 1918, and RFC 6598's shared address space behind carrier NAT.
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4);
    }
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        // RFC 4193 unique local addresses, fc00::/7.
        Some("private")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        // Link-local, and the deprecated site-local fec0::/10.
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|&x| x == 0) && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (compatible || nat64).then_some(tail)
}

/// The HTTP client's resolver: the system's resolution, with every blocked
/// address removed. A name that resolves only to blocked addresses fails the
/// connection with a [`Refused`] naming the first of them.
#[derive(Debug)]
pub struct FilteringResolver {
    egress: Egress,
}

impl FilteringResolver {
    pub fn new(egress: Egress) -> Arc<Self> {
        Arc::new(Self { egress })
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts in the URL's port.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| egress.refuses(addr.ip()).is_none());
            match (allowed.is_empty(), refused.first()) {
                (true, Some(first)) => {
                    let reason = egress.refuses(first.ip()).unwrap_or("blocked");
                    Err(Box::new(ResolvedToBlocked {
                        host,
                        refused: Refused { ip: first.ip(), reason },
                    }) as _)
                }
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// A name whose every address is blocked.
#[derive(Debug)]
pub struct ResolvedToBlocked {
    pub host: String,
    pub refused: Refused,
}

impl std::fmt::Display for ResolvedToBlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves to {}", self.host, self.refused)
    }
}

impl std::error::Error for ResolvedToBlocked {}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Option<&'static str> {
        let url = url::Url::parse(url).expect("test URL");
        Egress::PublicOnly.check_url(&url).err().map(|r| r.reason)
    }

    #[test]
    fn literal_addresses_are_refused_by_kind() {
        let table = [
            ("http://127.0.0.1:5432/", Some("loopback")),
            ("http://127.8.9.10/", Some("loopback")),
            ("http://169.254.169.254/latest/meta-data/", Some("link-local")),
            ("http://10.0.0.8/hook", Some("private")),
            ("http://172.16.5.4/", Some("private")),
            ("http://172.31.255.255/", Some("private")),
            ("http://192.168.1.1/", Some("private")),
            ("http://100.64.0.1/", Some("private")),
            ("http://0.0.0.0/", Some("unspecified")),
            ("http://224.0.0.1/", Some("multicast")),
            ("http://255.255.255.255/", Some("reserved")),
            ("http://[::1]/", Some("loopback")),
            ("http://[::]/", Some("unspecified")),
            ("http://[fd12:3456::1]/", Some("private")),
            ("http://[fe80::1]/", Some("link-local")),
            ("http://[ff02::1]/", Some("multicast")),
            ("http://[::ffff:127.0.0.1]/", Some("loopback")),
            ("http://[::ffff:169.254.169.254]/", Some("link-local")),
            ("http://[::ffff:10.1.2.3]/", Some("private")),
            ("http://[64:ff9b::a00:1]/", Some("private")),
            // Public addresses, and names (checked when they resolve).
            ("http://93.184.215.14/hook", None),
            ("http://172.32.0.1/", None),
            ("http://100.128.0.1/", None),
            ("https://[2606:4700::6810:84e5]/", None),
            ("https://partner.example.com/hook", None),
        ];
        for (url, expected) in table {
            assert_eq!(refused(url), expected, "{url}");
        }
    }

    #[test]
    fn allowing_private_networks_lets_everything_through() {
        let url = url::Url::parse("http://127.0.0.1:8080/").expect("test URL");
        assert!(Egress::AllowPrivate.check_url(&url).is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_when_it_resolves() {
        let resolver = FilteringResolver::new(Egress::PublicOnly);
        let name: Name = "localhost".parse().expect("a name");
        let error = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with("localhost resolves to url_not_allowed: "), "{error}");
        assert!(error.contains("loopback"), "{error}");

        let open = FilteringResolver::new(Egress::AllowPrivate);
        let name: Name = "localhost".parse().expect("a name");
        let addrs: Vec<SocketAddr> = open.resolve(name).await.expect("resolves").collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
