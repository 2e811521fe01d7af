//! The SSRF guard: refuses tenant-supplied URLs (detection's `image_url`) that point at
//! private, loopback, link-local or otherwise non-public addresses, directly or through DNS.
//!
//! The upstream fetches `image_url` and `sourceImage[].path`, not us, so this check is best
//! effort against DNS rebinding and redirects; it stops the obvious probes of our network and
//! cloud metadata endpoints. URLs the gateway fetches itself are checked again at connect time.

mod ranges;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::{Host, Url};

pub use ranges::is_forbidden;

/// Longest wait for DNS; a tenant's slow resolver must not hold a gateway request long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for DNS when checking URLs the upstream fetches ([`SsrfGuard::check_upstream_fetched`]),
/// which pass when they do not resolve, so waiting longer would only slow the request.
pub const UPSTREAM_FETCHED_RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a check does with a host name that does not resolve from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unresolved {
    Refuse,
    Allow,
}

/// Why a URL was refused. The messages are tenant-facing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The text is not an absolute URL.
    #[error("image_url is not a valid URL: {0}")]
    InvalidUrl(String),
    /// The scheme is not http or https.
    #[error("image_url must be an http or https URL, not `{0}`")]
    Scheme(String),
    /// The URL has no host (http and https URLs always have one, so this guards other paths).
    #[error("image_url has no host")]
    NoHost,
    /// The host is, or resolves to, an address the gateway does not let tenants reach.
    #[error(
        "image_url host `{host}` resolves to {addr}, {}; only public addresses are allowed",
        ranges::forbidden_reason(*.addr).unwrap_or("an address outside the allow-list")
    )]
    Forbidden {
        /// The host as the URL names it.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// The host name did not resolve to any address.
    #[error("image_url host `{host}` could not be resolved: {reason}")]
    Unresolvable {
        /// The host as the URL names it.
        host: String,
        /// What the resolver said.
        reason: String,
    },
}

impl SsrfError {
    /// The tenant-facing message with `field` (e.g. `sourceImage[0].path`) naming the URL
    /// instead of `image_url`.
    pub fn message_for(&self, field: &str) -> String {
        self.to_string().replacen("image_url", field, 1)
    }
}

/// Checks URLs and addresses against the forbidden ranges, minus an operator allow-list.
#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl SsrfGuard {
    /// A guard that lets through the given exceptions, for local setups where the image host
    /// is on a private network. Each entry is a CIDR (`127.0.0.0/8`, `::1/128`), a bare IP
    /// (`127.0.0.1`), or a host name (`localhost`, matched exactly, case-insensitively).
    pub fn new(allow: &[String]) -> Result<Self, String> {
        let mut guard = Self::default();
        for raw in allow {
            let entry = raw.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                guard.nets.push(net.trunc());
            } else if let Ok(ip) = entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                guard.nets.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                guard.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "SSRF allow-list entry `{raw}` is not a CIDR, an IP address or a host name"
                ));
            }
        }
        Ok(guard)
    }

    /// Parses `raw_url` and checks where it points. An allow-listed host name passes without
    /// resolving; any other name must resolve (within 2 s) to addresses that are all allowed,
    /// since the fetcher may pick any of them.
    pub async fn check(&self, raw_url: &str) -> Result<Url, SsrfError> {
        self.check_with(raw_url, RESOLVE_TIMEOUT, Unresolved::Refuse)
            .await
    }

    /// Checks a URL that the upstream fetches from its own network (`sourceImage[].path`),
    /// as [`Self::check`] does, except that a host name that does not resolve from here
    /// (within `UPSTREAM_FETCHED_RESOLVE_TIMEOUT`) passes.
    ///
    /// Why unresolvable names pass: the gateway's DNS view is not the upstream's. A name that
    /// fails here may well resolve there (and tenants' examples and tests use made-up public
    /// names such as `https://example.com/face.jpg`), so refusing it would refuse valid calls
    /// while protecting nothing of ours: the fetch happens on the upstream's network, not
    /// ours. What is refused is every literal spelling of a forbidden address (decimal, octal
    /// and hex IPv4, IPv6 including IPv4-mapped), every name that does resolve here to
    /// forbidden space, and `localhost` / `*.localhost`, which are loopback wherever they are
    /// resolved (RFC 6761). Names under `.example` and `.invalid` pass without a query.
    pub async fn check_upstream_fetched(&self, raw_url: &str) -> Result<Url, SsrfError> {
        self.check_with(raw_url, UPSTREAM_FETCHED_RESOLVE_TIMEOUT, Unresolved::Allow)
            .await
    }

    /// [`Self::check_upstream_fetched`] for several URLs at once, resolving concurrently (so
    /// the whole check takes at most one resolve timeout). On refusal, the index of the first
    /// refused URL in `urls` and why.
    pub async fn check_all_upstream_fetched(
        &self,
        urls: &[&str],
    ) -> Result<Vec<Url>, (usize, SsrfError)> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, raw) in urls.iter().enumerate() {
            let (guard, raw) = (self.clone(), (*raw).to_owned());
            tasks.spawn(async move { (i, guard.check_upstream_fetched(&raw).await) });
        }
        let mut results: Vec<Option<Result<Url, SsrfError>>> = vec![None; urls.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, result)) => results[i] = Some(result),
                // A check does not panic; should one, the URL is refused rather than let through.
                Err(e) => {
                    return Err((
                        0,
                        SsrfError::InvalidUrl(format!("the check did not complete: {e}")),
                    ));
                }
            }
        }
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| Err(SsrfError::InvalidUrl("not checked".into())))
                    .map_err(|e| (i, e))
            })
            .collect()
    }

    async fn check_with(
        &self,
        raw_url: &str,
        timeout: Duration,
        unresolved: Unresolved,
    ) -> Result<Url, SsrfError> {
        // The url crate normalises the decimal, octal and hex IPv4 spellings
        // (`http://2130706433/`, `http://0x7f.1/`) into Host::Ipv4, so they cannot slip past.
        let url = Url::parse(raw_url).map_err(|e| SsrfError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SsrfError::Scheme(url.scheme().to_owned()));
        }
        let host_str = url.host_str().unwrap_or_default().to_owned();
        let with_host = |addr| SsrfError::Forbidden {
            host: host_str.clone(),
            addr,
        };
        match url.host() {
            None => return Err(SsrfError::NoHost),
            Some(Host::Ipv4(ip)) => self
                .check_addr(ip.into())
                .map_err(|_| with_host(ip.into()))?,
            Some(Host::Ipv6(ip)) => self
                .check_addr(ip.into())
                .map_err(|_| with_host(ip.into()))?,
            Some(Host::Domain(name)) => {
                if !self.allows_host(name) {
                    let port = url.port_or_known_default().unwrap_or(80);
                    for addr in addrs_of(name, port, timeout, unresolved).await? {
                        self.check_addr(addr).map_err(|_| with_host(addr))?;
                    }
                }
            }
        }
        Ok(url)
    }

    /// Whether `name` is an allow-listed host name.
    pub fn allows_host(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Checks one address: allowed when inside an allow-listed network or not forbidden.
    /// Meant for connect time too, where DNS may have changed since [`Self::check`].
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), SsrfError> {
        // An IPv4-mapped address reaches the IPv4 host, so an IPv4 allow entry covers it.
        let canonical = addr.to_canonical();
        let allowed = self
            .nets
            .iter()
            .any(|net| net.contains(&addr) || net.contains(&canonical));
        if allowed || !is_forbidden(addr) {
            Ok(())
        } else {
            Err(SsrfError::Forbidden {
                host: addr.to_string(),
                addr,
            })
        }
    }
}

/// `localhost`, `*.localhost`, with or without the final dot: loopback by definition.
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The addresses a host name stands for, as far as this check is concerned: an empty list
/// lets it pass.
async fn addrs_of(
    name: &str,
    port: u16,
    timeout: Duration,
    unresolved: Unresolved,
) -> Result<Vec<IpAddr>, SsrfError> {
    let loopback = vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
    // `x.localhost` and `localhost.` are loopback by definition; few resolvers list them, and
    // asking DNS would only wait for a refusal. Plain `localhost` is resolved like any name.
    if is_localhost(name) && !name.eq_ignore_ascii_case("localhost") {
        return Ok(loopback);
    }
    if unresolved == Unresolved::Allow && never_resolves(name) {
        return Ok(Vec::new());
    }
    match resolve(name, port, timeout).await {
        Ok(addrs) => Ok(addrs),
        Err(_) if unresolved == Unresolved::Allow && is_localhost(name) => Ok(loopback),
        Err(_) if unresolved == Unresolved::Allow => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Names under `.example` and `.invalid` (RFC 2606, 6761), which no public resolver answers:
/// they pass as unresolvable without a query that could only fail (or stall on a slow resolver).
fn never_resolves(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    ["example", "invalid"]
        .iter()
        .any(|tld| name == *tld || name.ends_with(&format!(".{tld}")))
}

async fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<IpAddr>, SsrfError> {
    let unresolvable = |reason: String| SsrfError::Unresolvable {
        host: name.to_owned(),
        reason,
    };
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| unresolvable(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|e| unresolvable(e.to_string()))?;
    let addrs: Vec<IpAddr> = found.map(|sa| sa.ip()).collect();
    if addrs.is_empty() {
        return Err(unresolvable("no addresses".to_owned()));
    }
    Ok(addrs)
}

/// A DNS name: dot-separated labels of letters, digits and hyphens, not all digits (which
/// would be a mistyped IP address rather than a name).
fn is_host_name(s: &str) -> bool {
    let labels_ok = s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    labels_ok && s.len() <= 253 && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests;
