//! Egress settings: the CONNECT forward proxy (`upstream_proxy`, or HTTPS_PROXY / NO_PROXY).
//!
//! Parsed once into a `ProxyTarget` whose `Display` hides credentials; the CONNECT itself is
//! made by `upstream::connect`.

use std::fmt;
use std::net::IpAddr;

use http::HeaderValue;

/// A forward proxy reached with HTTP CONNECT.
#[derive(Clone)]
pub struct ProxyTarget {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization: Basic ...` from `user:pass@` in the URL, marked sensitive.
    pub authorization: Option<HeaderValue>,
}

impl ProxyTarget {
    /// Parses `http://[user:pass@]host:port[/]`.
    pub fn parse(text: &str) -> Result<ProxyTarget, String> {
        let shown = redact_url(text);
        let rest = text.trim().strip_prefix("http://").ok_or_else(|| {
            format!("`{shown}` must start with http:// (a CONNECT proxy spoken to in plain HTTP)")
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            return Err(format!("`{shown}` must be http://host:port with no path"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| {
            format!("`{shown}` needs a host and a port, e.g. http://172.30.0.10:3128")
        })?;
        let authorization = match userinfo {
            None => None,
            Some(u) => {
                let decoded = percent_decode(u)
                    .ok_or_else(|| format!("`{shown}` has badly encoded credentials"))?;
                let mut value =
                    HeaderValue::from_str(&format!("Basic {}", base64(decoded.as_bytes())))
                        .map_err(|_| format!("`{shown}` has credentials that cannot be sent"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(ProxyTarget {
            host: host.to_owned(),
            port,
            authorization,
        })
    }

    /// The proxy chosen by the environment for `hosts` (the upstream host and dialled host):
    /// `HTTPS_PROXY`, `https_proxy`, `HTTP_PROXY`, `http_proxy` in that order, unless `NO_PROXY`
    /// / `no_proxy` matches one of the hosts. Returns the variable it came from.
    pub fn from_env(
        lookup: &dyn Fn(&str) -> Option<String>,
        hosts: &[&str],
    ) -> Option<(&'static str, Result<ProxyTarget, String>)> {
        let (var, url) = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
            .into_iter()
            .find_map(|v| lookup(v).filter(|s| !s.trim().is_empty()).map(|s| (v, s)))?;
        let no_proxy = lookup("NO_PROXY")
            .filter(|s| !s.trim().is_empty())
            .or_else(|| lookup("no_proxy"))
            .unwrap_or_default();
        if hosts.iter().any(|h| no_proxy_matches(&no_proxy, h)) {
            return None;
        }
        Some((var, ProxyTarget::parse(&url)))
    }

    /// `host:port` for dialling.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ProxyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = if self.authorization.is_some() {
            "***@"
        } else {
            ""
        };
        write!(f, "http://{auth}{}", self.address())
    }
}

impl fmt::Debug for ProxyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A URL with any `user:pass@` replaced by `***@`, for messages.
pub fn redact_url(text: &str) -> String {
    // The userinfo starts after a real scheme (`letters://`), never at a `://` inside a password.
    let scheme_end = text
        .find("://")
        .filter(|&i| {
            i > 0
                && text[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        })
        .map_or(0, |i| i + 3);
    match text.rfind('@') {
        Some(at) if at >= scheme_end => format!("{}***{}", &text[..scheme_end], &text[at..]),
        _ => text.to_owned(),
    }
}

fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        (h, p.strip_prefix(':')?)
    } else {
        s.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

/// curl's NO_PROXY rules: `*`; a name matches itself and its subdomains (a leading `.` is
/// ignored); an IP matches exactly; `addr/len` matches an IP range; ports are ignored.
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, len)) = entry.split_once('/') {
                return match (net.parse::<IpAddr>(), len.parse::<u8>(), host_ip) {
                    (Ok(net), Ok(len), Some(ip)) => in_cidr(ip, net, len),
                    _ => false,
                };
            }
            let entry = entry.to_ascii_lowercase();
            if let (Ok(a), Some(b)) = (entry.parse::<IpAddr>(), host_ip) {
                return a == b;
            }
            let name = match split_host_port(&entry) {
                Some((h, _)) => h.to_owned(),
                None => entry
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            };
            if let (Ok(a), Some(b)) = (name.parse::<IpAddr>(), host_ip) {
                return a == b;
            }
            let name = name.trim_start_matches('.').trim_start_matches("*.");
            host == name || host.ends_with(&format!(".{name}"))
        })
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts() {
        let p = ProxyTarget::parse("http://user:p%40ss@squid.local:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("squid.local", 3128));
        assert_eq!(p.to_string(), "http://***@squid.local:3128");
        assert_eq!(
            p.authorization.unwrap().to_str().unwrap(),
            format!("Basic {}", base64(b"user:p@ss"))
        );
        let err = ProxyTarget::parse("https://u:secretpw@h:1").unwrap_err();
        assert!(!err.contains("secretpw"), "{err}");
        let err = ProxyTarget::parse("u:secretpw@h:1").unwrap_err();
        assert!(!err.contains("secretpw"), "{err}");
        let err = ProxyTarget::parse("user:pa://secretpw@squid:3128").unwrap_err();
        assert!(!err.contains("secretpw"), "{err}");
        assert_eq!(redact_url("http://u:p@h:1"), "http://***@h:1");
        assert!(ProxyTarget::parse("http://h").is_err());
        assert!(ProxyTarget::parse("http://h:1/path").is_err());
        assert_eq!(
            ProxyTarget::parse("http://[::1]:3128").unwrap().address(),
            "[::1]:3128"
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn no_proxy_rules() {
        let np = "localhost, .internal.example,api.anthropic.com:443, 10.0.0.0/8, 127.0.0.1,::1";
        assert!(no_proxy_matches(np, "localhost"));
        assert!(no_proxy_matches(np, "a.internal.example"));
        assert!(no_proxy_matches(np, "internal.example"));
        assert!(no_proxy_matches(np, "api.anthropic.com"));
        assert!(!no_proxy_matches(np, "api.openai.com"));
        assert!(!no_proxy_matches(np, "notinternal.example"));
        assert!(no_proxy_matches(np, "10.2.3.4"));
        assert!(!no_proxy_matches(np, "11.2.3.4"));
        assert!(no_proxy_matches(np, "127.0.0.1"));
        assert!(no_proxy_matches(np, "::1"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(!no_proxy_matches("", "anything"));
    }

    #[test]
    fn env_order_and_no_proxy() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = env(&[("HTTP_PROXY", "http://a:1"), ("https_proxy", "http://b:2")]);
        let (var, p) = ProxyTarget::from_env(&e, &["api.openai.com"]).unwrap();
        assert_eq!((var, p.unwrap().host.as_str()), ("https_proxy", "b"));
        let e = env(&[("HTTPS_PROXY", "http://a:1"), ("NO_PROXY", "openai.com")]);
        assert!(ProxyTarget::from_env(&e, &["api.openai.com"]).is_none());
        assert!(ProxyTarget::from_env(&env(&[]), &["x"]).is_none());
    }
}
