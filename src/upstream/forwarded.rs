//! `X-Forwarded-For`, `-Proto` and `-Host`, so backends behind us still see the client, and
//! never a client's claim about itself.
//!
//! A client can send any `X-Forwarded-*` it likes; only a load balancer we were told to trust
//! (`trusted_proxies`) may speak for the client (cf. oauth2-proxy GHSA-7x63-xv5r-3p2x). From
//! anyone else every forwarding header is replaced by what we saw ourselves.

use std::net::IpAddr;

use http::header::{FORWARDED, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The address ranges of the load balancers allowed to set forwarding headers.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.0.iter().any(|range| range.contains(&peer))
    }

    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }
}

/// Sets the forwarding headers for the upstream request.
///
/// From a trusted load balancer: the peer is appended to `X-Forwarded-For` (repeated lines
/// joined into one list, as RFC 9110 §5.3 allows) and its `-Proto`/`-Host` are kept.
/// From anyone else: `X-Forwarded-For` is the peer alone, `-Proto` is our listener's (`https`
/// when the client's connection is TLS, else `http`),
/// `-Host` the request's `Host`, and `Forwarded`, `X-Forwarded-Port`, `-Prefix` and
/// `X-Real-IP` are removed.
pub fn apply(headers: &mut HeaderMap, peer: IpAddr, tls: bool, trusted: &TrustedProxies) {
    let peer = peer.to_canonical();
    if !trusted.trusts(peer) {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_FORWARDED_PORT,
            &X_FORWARDED_PREFIX,
            &X_REAL_IP,
            &FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let mut chain = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(text) = value.to_str() {
            chain.push_str(text.trim());
            chain.push_str(", ");
        }
    }
    chain.push_str(&peer.to_string());
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("2.2.2.2"));
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        h.insert(
            X_FORWARDED_HOST.clone(),
            HeaderValue::from_static("evil.example"),
        );
        h.insert(X_REAL_IP.clone(), HeaderValue::from_static("1.1.1.1"));
        h.insert(FORWARDED, HeaderValue::from_static("for=1.1.1.1"));
        h.insert(HOST, HeaderValue::from_static("app.example.com"));
        h
    }

    #[test]
    fn a_trusted_balancer_is_appended_to() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let mut h = request();
        apply(&mut h, "10.0.0.9".parse().expect("ip"), true, &trusted);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "evil.example");
        // IPv4-mapped IPv6 peers are matched as IPv4.
        let mut h = request();
        apply(
            &mut h,
            "::ffff:10.1.2.3".parse().expect("ip"),
            false,
            &trusted,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.1.2.3");
    }

    #[test]
    fn anyone_else_is_replaced() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        for peer in ["203.0.113.7", "11.0.0.1", "::1"] {
            let mut h = request();
            apply(&mut h, peer.parse().expect("ip"), false, &trusted);
            assert_eq!(h[&X_FORWARDED_FOR], peer);
            assert_eq!(h[&X_FORWARDED_PROTO], "http");
            // Over our own TLS listener the scheme is ours to say.
            let mut h = request();
            apply(&mut h, peer.parse().expect("ip"), true, &trusted);
            assert_eq!(h[&X_FORWARDED_PROTO], "https");
            assert_eq!(h[&X_FORWARDED_HOST], "app.example.com");
            assert!(!h.contains_key(&X_REAL_IP) && !h.contains_key(FORWARDED));
        }
        let mut h = request();
        apply(
            &mut h,
            "10.0.0.9".parse().expect("ip"),
            false,
            &TrustedProxies::default(),
        );
        assert_eq!(
            h[&X_FORWARDED_FOR], "10.0.0.9",
            "nobody is trusted by default"
        );
    }
}
