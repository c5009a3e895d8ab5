//! The header rewriting a proxy owes the next hop, as pure functions (RFC 9110 §7.6.1, RFC 7239).
//!
//! Towards the upstream: hop-by-hop fields are removed (`Connection` and every field it names,
//! `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`), then
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` are set. What a
//! client sent in those four is replaced, unless the client is a trusted proxy: then its values
//! are kept and this hop is appended. `Host` passes through.
//!
//! Two fields are re-declared for the next hop after removal, because this hop still needs them:
//! `Upgrade` + `Connection: upgrade` for a protocol switch (WebSocket), and `Trailer` when the
//! message carried one (hyper only sends the trailer fields a `Trailer` header announces).
//! `TE: trailers` is passed on when the client sent it, as RFC 9110 §10.1.4 allows.

use std::net::IpAddr;
use std::sync::Mutex;

use bytes::Bytes;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, FORWARDED, HOST, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// Fields that only concern one connection, whatever `Connection` says. (A static: a `const`
/// array of names is built and dropped again at every use.)
static HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Bits of [`hop_by_hop_present`], by position in [`HOP_BY_HOP`]; and one for `Expect`.
const CONNECTION_BIT: u8 = 1 << 0;
const TE_BIT: u8 = 1 << 3;
const TRAILER_BIT: u8 = 1 << 4;
const UPGRADE_BIT: u8 = 1 << 6;
const EXPECT_BIT: u8 = 1 << 7;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Who sent a request, as far as this hop knows.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    /// The peer's address; `None` for a unix-socket peer.
    pub addr: Option<&'a PeerAddress>,
    /// "http" or "https": how the request reached ondemand.
    pub proto: &'static str,
    /// The host the client asked for (Host or :authority) as it wrote it, if any: visible ASCII.
    pub host: Option<HeaderValue>,
    /// True when the peer is a configured trusted proxy: its X-Forwarded-* and Forwarded are kept.
    pub trusted: bool,
    /// The connection's last Forwarded element, for its next request; `None`: made anew.
    pub forwarded: Option<&'a ForwardedCache>,
}

/// The Forwarded element of a connection's last request and the host it names. The next request
/// on the connection nearly always names the same host (the address and protocol are the
/// connection's), and then gets the same element without making it again.
#[derive(Debug, Default)]
pub struct ForwardedCache(Mutex<Option<(Option<Bytes>, HeaderValue)>>);

impl ForwardedCache {
    /// The element for `host`: the last one if it named the same host, else `make`'s.
    fn get(
        &self,
        host: Option<&HeaderValue>,
        make: impl FnOnce() -> Option<HeaderValue>,
    ) -> Option<HeaderValue> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let host = host.map(HeaderValue::as_bytes);
        if let Some((last_host, element)) = &*last {
            if last_host.as_deref() == host {
                return Some(element.clone());
            }
        }
        let element = make()?;
        // A copy of the host: the Host field's value is a piece of hyper's read buffer, which
        // could not be reused while a reference to it is kept.
        *last = Some((host.map(Bytes::copy_from_slice), element.clone()));
        Some(element)
    }
}

/// A peer's address, with its text as X-Forwarded-For has it: made once per connection, not
/// once per request.
#[derive(Debug, Clone)]
pub struct PeerAddress {
    pub ip: IpAddr,
    pub text: HeaderValue,
}

impl PeerAddress {
    pub fn new(ip: IpAddr) -> PeerAddress {
        let text = HeaderValue::from_str(&address_text(ip))
            .unwrap_or_else(|_| unreachable!("an address is visible ASCII"));
        PeerAddress { ip, text }
    }

    fn as_str(&self) -> &str {
        self.text
            .to_str()
            .unwrap_or_else(|_| unreachable!("an address is visible ASCII"))
    }
}

/// True when the request asks to switch protocols (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The comma-separated tokens of every `Connection` field, trimmed, as sent.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> + '_ {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): those listed above and those `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let present = hop_by_hop_present(headers);
    remove_present(headers, present);
}

/// Which of [`HOP_BY_HOP`] (and `Expect`) `headers` has, one bit each. This runs twice for every
/// proxied request: the names are found in one pass over the map, and then only those present
/// are looked up or removed (a look-up hashes the name, present or not). The names are matched
/// as text, which for most names is a comparison of lengths.
fn hop_by_hop_present(headers: &HeaderMap) -> u8 {
    let mut present = 0;
    for name in headers.keys() {
        let bit = match name.as_str() {
            "connection" => 0,
            "keep-alive" => 1,
            "proxy-connection" => 2,
            "te" => 3,
            "trailer" => 4,
            "transfer-encoding" => 5,
            "upgrade" => 6,
            "expect" => 7,
            _ => continue,
        };
        present |= 1 << bit;
    }
    debug_assert!(HOP_BY_HOP
        .iter()
        .enumerate()
        .all(|(i, h)| headers.contains_key(h) == (present & (1 << i) != 0)));
    present
}

/// Removes the hop-by-hop fields of `present` (from [`hop_by_hop_present`]).
fn remove_present(headers: &mut HeaderMap, present: u8) {
    if present & CONNECTION_BIT != 0 {
        remove_named_by_connection(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & EXPECT_BIT != 0 {
        // The client may wait for 100 Continue; ondemand's server sends it when the body is
        // first read, so the upstream must not be asked to (hyper's client never waits for it).
        // (Only requests have it.)
        headers.remove(http::header::EXPECT);
    }
}

/// Removes the fields that `Connection` names. A token naming an end-to-end field we need (Host)
/// is ignored, as nginx does. The names are looked up as they are written (no `HeaderName` is
/// made, which for a name hyper does not know means a copy).
fn remove_named_by_connection(headers: &mut HeaderMap) {
    // The usual case, a single `Connection: keep-alive` (or `close`), names no field to remove.
    let mut values = headers.get_all(CONNECTION).iter();
    if let (Some(only), None) = (values.next(), values.next()) {
        let value = only.as_bytes();
        if value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close") {
            return;
        }
    }
    // Copies of the values (reference-counted) to read while the map changes; the second list is
    // for repeated Connection fields, and stays empty (no allocation) for the usual one.
    let mut values = headers.get_all(CONNECTION).iter();
    let first = values.next().cloned();
    let more: Vec<HeaderValue> = values.cloned().collect();
    for value in first.iter().chain(&more) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for token in value.split(',').map(str::trim) {
            // `close` and `keep-alive`, the usual tokens, name no field to remove here (the
            // Keep-Alive field goes as hop-by-hop anyway).
            let skip = ["", "host", "close", "keep-alive"];
            if !skip.iter().any(|s| token.eq_ignore_ascii_case(s)) {
                headers.remove(token);
            }
        }
    }
}

/// Rewrites a request's header fields for the upstream (see the module docs).
pub fn for_upstream(headers: &mut HeaderMap, client: &Client<'_>, upgrade: bool) {
    let present = hop_by_hop_present(headers);
    let te_trailers = present & TE_BIT != 0
        && headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    remove_hop_by_hop_present(headers, present, upgrade);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    set_forwarded(headers, client);
}

/// Rewrites a response's header fields for the client: hop-by-hop removed, except what a
/// protocol switch (101) needs, and the `Trailer` announcement (see the module docs).
pub fn for_client(headers: &mut HeaderMap, switching_protocols: bool) {
    let present = hop_by_hop_present(headers) & !EXPECT_BIT;
    if present == 0 {
        return;
    }
    remove_hop_by_hop_present(headers, present, switching_protocols);
    debug_assert!(!headers.contains_key(TRANSFER_ENCODING));
}

/// Removes the hop-by-hop fields `present` found, then puts back what passes through: the
/// `Trailer` announcement, and for a protocol switch (`upgrade`) the `Upgrade` field with
/// `Connection: upgrade`.
fn remove_hop_by_hop_present(headers: &mut HeaderMap, present: u8, upgrade: bool) {
    let protocol = (upgrade && present & UPGRADE_BIT != 0)
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    let trailer = (present & TRAILER_BIT != 0)
        .then(|| headers.get(TRAILER).cloned())
        .flatten();
    remove_present(headers, present);
    if let Some(protocol) = protocol {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(trailer) = trailer {
        headers.insert(TRAILER, trailer);
    }
}

fn set_forwarded(headers: &mut HeaderMap, client: &Client<'_>) {
    let host = client
        .host
        .clone()
        .or_else(|| headers.get(HOST).filter(|h| h.to_str().is_ok()).cloned());
    let host_text = host.as_ref().and_then(|h| h.to_str().ok());
    let proto = HeaderValue::from_static(client.proto);
    if client.trusted {
        if let Some(addr) = &client.addr {
            append_list(headers, X_FORWARDED_FOR, addr.as_str());
        }
        set_if_absent(headers, X_FORWARDED_PROTO, proto);
        append_list(headers, FORWARDED, &forwarded_element(client, host_text));
        if let Some(value) = host {
            set_if_absent(headers, X_FORWARDED_HOST, value);
        }
        return;
    }
    // The String's bytes become the value's without a copy (its capacity is its length).
    let make =
        || HeaderValue::from_maybe_shared(Bytes::from(forwarded_element(client, host_text))).ok();
    let forwarded = match client.forwarded {
        Some(cache) => cache.get(host.as_ref(), make),
        None => make(),
    };
    // What the client sent in these is replaced.
    match &client.addr {
        Some(addr) => {
            headers.insert(X_FORWARDED_FOR, addr.text.clone());
        }
        None => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
    headers.insert(X_FORWARDED_PROTO, proto);
    match host {
        Some(value) => headers.insert(X_FORWARDED_HOST, value),
        None => headers.remove(X_FORWARDED_HOST),
    };
    match forwarded {
        Some(value) => headers.insert(FORWARDED, value),
        None => headers.remove(FORWARDED),
    };
}

/// An address as X-Forwarded-For has it. An IPv4 address (the common case, on every proxied
/// request) is written by hand: `Display` through `fmt` costs several times more.
fn address_text(addr: IpAddr) -> String {
    let IpAddr::V4(v4) = addr else {
        return addr.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// One `Forwarded` element (RFC 7239 §4): `for=...;proto=...;host=...`, in a String exactly as
/// long as its capacity.
fn forwarded_element(client: &Client<'_>, host: Option<&str>) -> String {
    let (open, addr, close) = match &client.addr {
        Some(addr) if addr.ip.is_ipv6() => ("\"[", addr.as_str(), "]\""),
        Some(addr) => ("", addr.as_str(), ""),
        None => ("", "unknown", ""),
    };
    let host_len = host.map_or(0, |h| ";host=".len() + quoted_len(h));
    let len = "for=".len() + open.len() + addr.len() + close.len() + ";proto=".len();
    let mut element = String::with_capacity(len + client.proto.len() + host_len);
    for part in ["for=", open, addr, close, ";proto=", client.proto] {
        element.push_str(part);
    }
    if let Some(host) = host {
        element.push_str(";host=");
        push_quoted_if_needed(&mut element, host);
    }
    element
}

/// True for a token (RFC 9110 §5.6.2), which a parameter value may be without quotes.
fn is_token(value: &str) -> bool {
    // A match, not a search of a list of the punctuation (a call per byte).
    let tchar = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    };
    !value.is_empty() && value.bytes().all(tchar)
}

/// The length of `value` as [`push_quoted_if_needed`] writes it.
fn quoted_len(value: &str) -> usize {
    if is_token(value) {
        return value.len();
    }
    let escapes = value.bytes().filter(|b| matches!(b, b'\\' | b'"')).count();
    2 + value.len() + escapes
}

/// Appends a token as is; anything else as a quoted-string (RFC 7230 §3.2.6).
fn push_quoted_if_needed(out: &mut String, value: &str) {
    if is_token(value) {
        out.push_str(value);
    } else {
        out.push('"');
        for c in value.chars() {
            if matches!(c, '\\' | '"') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

/// Appends `item` to the comma-separated list in field `name` (merging repeated fields).
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let existing: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if existing.is_empty() {
        item.to_string()
    } else {
        format!("{}, {item}", existing.join(", "))
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    if let http::header::Entry::Vacant(slot) = headers.entry(name) {
        slot.insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn peer(ip: &str) -> &'static PeerAddress {
        Box::leak(Box::new(PeerAddress::new(ip.parse().unwrap())))
    }

    fn client(trusted: bool) -> Client<'static> {
        Client {
            addr: Some(peer("192.0.2.7")),
            proto: "http",
            host: Some(HeaderValue::from_static("app.example")),
            trusted,
            forwarded: None,
        }
    }

    #[test]
    fn a_connection_reuses_its_forwarded_element_for_the_same_host() {
        let cache = ForwardedCache::default();
        let mut c = client(false);
        c.forwarded = Some(&cache);
        let forwarded = |c: &Client<'_>| {
            let mut h = headers(&[("host", "ignored.example")]);
            for_upstream(&mut h, c, false);
            h.get("forwarded").unwrap().clone()
        };
        let first = forwarded(&c);
        assert_eq!(first, "for=192.0.2.7;proto=http;host=app.example");
        let again = forwarded(&c);
        assert_eq!(
            again.as_bytes().as_ptr(),
            first.as_bytes().as_ptr(),
            "the same value, not a new one"
        );
        c.host = Some(HeaderValue::from_static("other.example:8080"));
        assert_eq!(
            forwarded(&c),
            "for=192.0.2.7;proto=http;host=\"other.example:8080\""
        );
        c.host = None;
        assert_eq!(
            forwarded(&c),
            "for=192.0.2.7;proto=http;host=ignored.example",
            "without a host of its own, the Host field's"
        );
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret , close"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "app.example"),
            ("x-end-to-end", "stays"),
        ]);
        for_upstream(&mut h, &client(false), false);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} must be removed");
        }
        assert_eq!(get(&h, "host"), Some("app.example"));
        assert_eq!(get(&h, "x-end-to-end"), Some("stays"));
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut h = headers(&[("connection", "host"), ("host", "app.example")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(get(&h, "host"), Some("app.example"));
    }

    #[test]
    fn untrusted_forwarding_fields_are_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        for_upstream(&mut h, &client(false), false);
        assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("app.example"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=192.0.2.7;proto=http;host=app.example")
        );
    }

    #[test]
    fn trusted_forwarding_fields_are_kept_and_appended_to() {
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
            ("forwarded", "for=203.0.113.9;proto=https"),
        ]);
        for_upstream(&mut h, &client(true), false);
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("203.0.113.9, 198.51.100.1, 192.0.2.7")
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("public.example"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=203.0.113.9;proto=https, for=192.0.2.7;proto=http;host=app.example")
        );
    }

    #[test]
    fn ipv4_addresses_are_written_like_display_does() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
        ] {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(address_text(addr), text);
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_text(v6), "2001:db8::1");
    }

    #[test]
    fn ipv6_and_unix_peers_in_forwarded() {
        let mut c = client(false);
        c.addr = Some(peer("2001:db8::1"));
        c.host = Some(HeaderValue::from_static("app.example:8080"));
        let mut h = HeaderMap::new();
        for_upstream(&mut h, &c, false);
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=\"[2001:db8::1]\";proto=http;host=\"app.example:8080\"")
        );
        c.addr = None;
        let mut h = HeaderMap::new();
        for_upstream(&mut h, &c, false);
        assert!(!h.contains_key("x-forwarded-for"));
        assert!(get(&h, "forwarded").unwrap().starts_with("for=unknown;"));
    }

    #[test]
    fn a_forwarded_element_is_made_in_one_allocation_of_its_exact_length() {
        let mut c = client(false);
        let hosts = [None, Some("app.example"), Some("a b"), Some("q\"uo\\te")];
        for addr in [Some("192.0.2.7"), Some("2001:db8::1"), None] {
            c.addr = addr.map(peer);
            for host in hosts {
                let element = forwarded_element(&c, host);
                assert_eq!(element.len(), element.capacity(), "{element}");
            }
        }
        assert_eq!(
            forwarded_element(&c, Some("q\"uo\\te")),
            "for=unknown;proto=http;host=\"q\\\"uo\\\\te\""
        );
    }

    #[test]
    fn repeated_connection_fields_all_name_fields_to_remove() {
        let mut h = headers(&[
            ("connection", "X-One"),
            ("connection", "close, x-two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-three", "3"),
        ]);
        remove_hop_by_hop(&mut h);
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("x-one"));
        assert!(!h.contains_key("x-two"));
        assert_eq!(get(&h, "x-three"), Some("3"));
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_fields() {
        let mut h = headers(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(wants_upgrade(&h));
        for_upstream(&mut h, &client(false), true);
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert_eq!(get(&h, "connection"), Some("upgrade"));
        assert_eq!(get(&h, "sec-websocket-key"), Some("abc"));
        assert!(!wants_upgrade(&headers(&[("upgrade", "websocket")])));
    }

    #[test]
    fn trailers_are_announced_again_and_te_trailers_passed_on() {
        let mut h = headers(&[
            ("trailer", "x-checksum"),
            ("te", "trailers, deflate"),
            ("expect", "100-continue"),
        ]);
        for_upstream(&mut h, &client(false), false);
        assert_eq!(get(&h, "trailer"), Some("x-checksum"));
        assert_eq!(get(&h, "te"), Some("trailers"));
        assert!(!h.contains_key("expect"));
    }

    #[test]
    fn responses_lose_hop_by_hop_except_on_a_switch() {
        let mut h = headers(&[
            ("connection", "x-foo"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
        ]);
        for_client(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut h = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        for_client(&mut h, true);
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
    }
}
