//! Where a webhook may go. An endpoint's URL is an address chosen by whoever holds an API key,
//! so notify would otherwise call into its own network for them (server-side request forgery):
//! loopback, private, link-local, shared, multicast and unspecified addresses are refused unless
//! the operator allows them. The check is made on the addresses a name resolves to at the moment
//! of sending (the resolver below), so a name that later points inwards is refused too, and the
//! connection goes to the very address that was checked.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// The longest URL accepted.
pub const MAX_URL: usize = 2000;

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8 ("this network") and 100.64.0.0/10 (carrier-grade NAT, shared).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24 (protocol assignments) and 198.18.0.0/15 (benchmarking).
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // 64:ff9b::/96 (NAT64 reaches IPv4 addresses, private ones too) and 2001:db8::/32.
        || (first == 0x64 && ip.segments()[1] == 0xff9b)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// Checks an endpoint URL as registered: http(s), a host, no credentials, no fragment, and no
/// address literal or local name that is refused. Names are checked again at each send.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let host = url.host().ok_or("must name a host")?;
    if !allow_private {
        let refused = match host {
            url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost") || !name.contains('.')
            }
        };
        if refused {
            return Err("must be a public address: loopback, private and link-local ones are refused".into());
        }
    }
    Ok(url)
}

/// Resolves names with the system's resolver and keeps only the addresses allowed; a name with
/// none left fails to resolve, so nothing is sent.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client every delivery goes through: no redirects (a 3xx is a failed attempt), a
/// timeout for the whole exchange, the guarded resolver.
pub fn client(
    allow_private: bool,
    timeout: std::time::Duration,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(user_agent)
        .no_proxy()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inward_addresses_are_refused_and_public_ones_pass() {
        for inward in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = inward.parse().expect("address");
            assert!(!is_public(ip), "{inward} must be refused");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().expect("address");
            assert!(is_public(ip), "{public} must pass");
        }
    }

    #[test]
    fn urls_are_checked_before_they_are_stored() {
        assert!(check_url("https://partner.example.com/hooks", false).is_ok());
        for (bad, why) in [
            ("ftp://partner.example.com/", "http"),
            ("https://user:pw@partner.example.com/", "user name"),
            ("https://partner.example.com/#x", "fragment"),
            ("not a url", "not a URL"),
            ("http://127.0.0.1:8080/", "public"),
            ("http://[::1]/", "public"),
            ("http://localhost/", "public"),
            ("http://db.localhost/", "public"),
            ("http://intranet/", "public"),
            ("http://169.254.169.254/latest/meta-data", "public"),
        ] {
            let error = check_url(bad, false).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(check_url(&format!("https://a.example.com/{}", "x".repeat(MAX_URL)), true).is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_inwards_is_refused_at_send_time() {
        let guarded = GuardedResolver { allow_private: false };
        let name: Name = "localhost".parse().expect("name");
        assert!(guarded.resolve(name).await.is_err());
        let open = GuardedResolver { allow_private: true };
        let name: Name = "localhost".parse().expect("name");
        let addrs: Vec<SocketAddr> = open.resolve(name).await.expect("resolves").collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
