//! The client's address, and the IP allowlists it is checked against.
//!
//! A request's *peer* is the other end of its TCP connection. Its *client*
//! is the peer, unless the peer is one of the application's own reverse
//! proxies: then the client is the address that those proxies recorded in a
//! forwarding header. [`client_addr`] decides, and an [`IpAllowlist`] says
//! whether a key may be used from that address.
//!
//! ```
//! use std::net::IpAddr;
//! use tower_keyauth::client_addr::{IpAllowlist, PeerAddr, TrustedProxies, client_addr};
//!
//! // The load balancer is 10.0.0.5; it appends to X-Forwarded-For.
//! let trusted = TrustedProxies::parse(["10.0.0.0/24"]).unwrap();
//! let allowlist = IpAllowlist::parse(["203.0.113.0/24", "2001:db8::/32"]).unwrap();
//!
//! let mut request = http::Request::builder()
//!     .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
//!     .body(())
//!     .unwrap();
//! // A server inserts this (or axum's or tonic's connection info) for us.
//! request.extensions_mut().insert(PeerAddr("10.0.0.5".parse().unwrap()));
//! let (parts, ()) = request.into_parts();
//!
//! // 198.51.100.7 was written by the client itself: only the proxy's own
//! // entry, the rightmost, can be believed.
//! let client = client_addr(&parts, &trusted);
//! assert_eq!(client, Some("203.0.113.9".parse::<IpAddr>().unwrap()));
//! assert!(client.is_some_and(|ip| allowlist.contains(ip)));
//! ```
//!
//! # Where the peer address comes from
//!
//! [`peer_addr`] reads, in this order, the first of these request extensions
//! that is present:
//!
//! 1. [`PeerAddr`], inserted by the application itself: for a custom server,
//!    a PROXY-protocol acceptor, or tests;
//! 2. axum's `ConnectInfo<SocketAddr>` (feature `axum`), present when the app
//!    is served with `into_make_service_with_connect_info::<SocketAddr>()`;
//! 3. tonic's `TcpConnectInfo` (feature `tonic`), inserted by tonic's
//!    `Server` for plain TCP connections. Behind tonic's own TLS the
//!    extension is `TlsConnectInfo<TcpConnectInfo>`, which this crate does not
//!    name (it would pull in rustls); copy its address into a [`PeerAddr`] in
//!    a `map_request` in front of the layer.
//!
//! None of them present: the address is unknown and [`client_addr`] returns
//! `None`. A key with an allowlist is then refused: unknown is never
//! allowed.
//!
//! # Forwarding headers
//!
//! A client can send any `X-Forwarded-For` or `Forwarded` header it likes,
//! so they are read only when the peer is one of the [`TrustedProxies`], and
//! only from the right: each trusted proxy appends the address it saw, so the
//! rightmost entries are the only ones written by someone the application
//! trusts. The walk skips entries that are themselves trusted proxies and
//! stops at the first that is not: that is the client. See
//! [`client_addr`] for the rules on malformed headers and the bounds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::Extensions;
use http::header::{FORWARDED, HeaderMap, HeaderName};
use http::request::Parts;
use ipnet::IpNet;

// ---------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------

/// The IPv4 and IPv6 networks a key may be used from: at most
/// [`MAX_NETWORKS`](Self::MAX_NETWORKS) CIDR networks.
///
/// A bare address is a network of one (`/32`, `/128`). An IPv4-mapped IPv6
/// client address (`::ffff:192.0.2.1`, as dual-stack sockets report IPv4
/// peers) matches the IPv4 networks, and an IPv4 address matches an IPv6
/// network written in the mapped form.
///
/// ```
/// use std::net::IpAddr;
/// use tower_keyauth::client_addr::IpAllowlist;
///
/// let allowlist = IpAllowlist::parse(["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]).unwrap();
/// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
/// assert!(allowlist.contains(ip("192.0.2.200")));
/// assert!(allowlist.contains(ip("::ffff:192.0.2.200")));
/// assert!(allowlist.contains(ip("2001:db8:1::1")));
/// assert!(allowlist.contains(ip("198.51.100.7")));
/// assert!(!allowlist.contains(ip("198.51.100.8")));
/// assert_eq!(allowlist.to_string(), "192.0.2.0/24, 2001:db8::/32, 198.51.100.7/32");
///
/// // Bits after the prefix are a typo, not a network:
/// let error = IpAllowlist::parse(["10.0.0.1/8"]).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "invalid IP allowlist entry \"10.0.0.1/8\" (item 1): bits are set after the /8 prefix; \
///      write 10.0.0.0/8 for the network, or 10.0.0.1 for the one address",
/// );
/// ```
///
/// An empty allowlist contains no address. A key without restriction has no
/// allowlist at all (`Option<IpAllowlist>` is `None`), not an empty one.
///
/// With the `serde` feature it serializes as a list of strings
/// (`["192.0.2.0/24", "2001:db8::/32"]`) and deserializing checks every entry
/// as [`parse`](Self::parse) does.
///
/// Cloning is a reference count; checking an address reads every network
/// once and allocates nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IpAllowlist {
    networks: Arc<[IpNet]>,
}

impl IpAllowlist {
    /// The most networks a list may hold: 64.
    pub const MAX_NETWORKS: usize = 64;

    /// The longest entry accepted, in bytes: 64 (the longest IPv6 network
    /// with its prefix is 43).
    pub const MAX_ENTRY_BYTES: usize = 64;

    /// Parses CIDR networks (`192.0.2.0/24`, `2001:db8::/32`) and bare
    /// addresses, ignoring whitespace around each entry.
    ///
    /// Refused, with an error that names the entry: more than
    /// [`MAX_NETWORKS`](Self::MAX_NETWORKS) entries, an entry longer than
    /// [`MAX_ENTRY_BYTES`](Self::MAX_ENTRY_BYTES), an empty entry, an
    /// address that is not IPv4 or IPv6 (IPv4 octets with leading zeros and
    /// IPv6 zone ids are not addresses), a prefix that is not a number or is
    /// too long for the address, and bits set after the prefix
    /// (`10.0.0.1/8`).
    ///
    /// ```
    /// use tower_keyauth::client_addr::{InvalidAllowlistKind, IpAllowlist};
    ///
    /// let error = IpAllowlist::parse(["192.0.2.0/24", "192.0.2.300"]).unwrap_err();
    /// assert_eq!(error.kind(), InvalidAllowlistKind::NotAnAddress);
    /// assert_eq!(error.entry(), "192.0.2.300");
    /// assert_eq!(error.index(), 1);
    /// ```
    pub fn parse(
        items: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, InvalidAllowlist> {
        let mut list = ListBuilder::new(ListKind::Allowlist);
        for item in items {
            list.push(item.as_ref())?;
        }
        Ok(list.finish())
    }

    fn empty() -> Self {
        Self {
            networks: Arc::from([]),
        }
    }

    /// Whether `ip` lies in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        // An IPv4 client also matches a network written as mapped IPv6.
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.networks
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|mapped| net.contains(&mapped)))
    }

    /// The networks, as `192.0.2.0/24` or `2001:db8::/32`, in the order they
    /// were given; a bare address shows its full prefix (`/32`, `/128`).
    pub fn networks(&self) -> impl ExactSizeIterator<Item = String> + '_ {
        self.networks.iter().map(IpNet::to_string)
    }

    /// How many networks the list holds.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// Whether the list holds no network (and so contains no address).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

/// `192.0.2.0/24, 2001:db8::/32`.
impl fmt::Display for IpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.networks.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(net, f)?;
        }
        Ok(())
    }
}

/// `IpAllowlist[192.0.2.0/24, 2001:db8::/32]`.
impl fmt::Debug for IpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpAllowlist[{self}]")
    }
}

/// Which list an error is about, for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Allowlist,
    TrustedProxies,
}

impl ListKind {
    fn name(self) -> &'static str {
        match self {
            Self::Allowlist => "IP allowlist",
            Self::TrustedProxies => "trusted proxy",
        }
    }
}

/// Checks entries one at a time, so that a list that is too long is refused
/// at its first extra entry (also while deserializing).
struct ListBuilder {
    kind: ListKind,
    networks: Vec<IpNet>,
    seen: usize,
}

impl ListBuilder {
    fn new(kind: ListKind) -> Self {
        Self {
            kind,
            networks: Vec::new(),
            seen: 0,
        }
    }

    fn push(&mut self, entry: &str) -> Result<(), InvalidAllowlist> {
        let index = self.seen;
        self.seen += 1;
        let refuse = |kind| InvalidAllowlist::new(self.kind, index, entry, kind);
        if index >= IpAllowlist::MAX_NETWORKS {
            return Err(refuse(InvalidAllowlistKind::TooManyEntries));
        }
        if entry.len() > IpAllowlist::MAX_ENTRY_BYTES {
            return Err(refuse(InvalidAllowlistKind::TooLong));
        }
        self.networks.push(parse_network(entry).map_err(refuse)?);
        Ok(())
    }

    fn finish(self) -> IpAllowlist {
        IpAllowlist {
            networks: Arc::from(self.networks),
        }
    }
}

fn parse_network(entry: &str) -> Result<IpNet, InvalidAllowlistKind> {
    let entry = entry.trim_ascii();
    if entry.is_empty() {
        return Err(InvalidAllowlistKind::Empty);
    }
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| InvalidAllowlistKind::NotAnAddress)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        // Digits only: `u8::from_str` would also take `+8`.
        Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u8>()
            .map_err(|_| InvalidAllowlistKind::InvalidPrefix)?,
        Some(_) => return Err(InvalidAllowlistKind::InvalidPrefix),
    };
    let net = IpNet::new(addr, prefix).map_err(|_| InvalidAllowlistKind::InvalidPrefix)?;
    if net.trunc() != net {
        return Err(InvalidAllowlistKind::HostBitsSet);
    }
    Ok(net)
}

/// Why a list of networks was refused: which entry, and what is wrong with
/// it. Returned by [`IpAllowlist::parse`] and [`TrustedProxies::parse`].
///
/// ```
/// use tower_keyauth::client_addr::{InvalidAllowlistKind, TrustedProxies};
///
/// let error = TrustedProxies::parse(["10.0.0.0/8", "10.0.0.0/33"]).unwrap_err();
/// assert_eq!(error.kind(), InvalidAllowlistKind::InvalidPrefix);
/// assert_eq!(
///     error.to_string(),
///     "invalid trusted proxy entry \"10.0.0.0/33\" (item 2): \
///      the prefix length must be a number from 0 to 32 for an IPv4 address",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAllowlist {
    list: ListKind,
    index: usize,
    entry: String,
    kind: InvalidAllowlistKind,
}

/// What is wrong with an entry of a list of networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidAllowlistKind {
    /// The list has more than [`IpAllowlist::MAX_NETWORKS`] entries; the
    /// error names the first one too many.
    TooManyEntries,
    /// The entry is longer than [`IpAllowlist::MAX_ENTRY_BYTES`].
    TooLong,
    /// The entry is empty or only whitespace.
    Empty,
    /// The part before any `/` is not an IPv4 or IPv6 address.
    NotAnAddress,
    /// The part after the `/` is not a number, or is longer than the address
    /// (32 for IPv4, 128 for IPv6).
    InvalidPrefix,
    /// Bits are set after the prefix (`10.0.0.1/8`): probably a typo, so not
    /// silently widened to the network.
    HostBitsSet,
}

impl InvalidAllowlist {
    fn new(list: ListKind, index: usize, entry: &str, kind: InvalidAllowlistKind) -> Self {
        // The message names the entry; a huge one is cut, not copied whole.
        const SHOWN: usize = IpAllowlist::MAX_ENTRY_BYTES;
        let entry = if entry.len() > SHOWN {
            let mut end = SHOWN;
            while !entry.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &entry[..end])
        } else {
            entry.to_owned()
        };
        Self {
            list,
            index,
            entry,
            kind,
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> InvalidAllowlistKind {
        self.kind
    }

    /// The entry as given (cut after [`IpAllowlist::MAX_ENTRY_BYTES`] bytes,
    /// with `…`, when it is longer).
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// The entry's position in the list, from 0 (the message counts from 1).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl fmt::Display for InvalidAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} entry {:?} (item {}): ",
            self.list.name(),
            self.entry,
            self.index + 1
        )?;
        match self.kind {
            InvalidAllowlistKind::TooManyEntries => write!(
                f,
                "a list holds at most {} networks",
                IpAllowlist::MAX_NETWORKS
            ),
            InvalidAllowlistKind::TooLong => {
                write!(f, "longer than {} bytes", IpAllowlist::MAX_ENTRY_BYTES)
            }
            InvalidAllowlistKind::Empty => f.write_str("empty"),
            InvalidAllowlistKind::NotAnAddress => f.write_str(
                "not an IPv4 or IPv6 address; expected a network such as \
                 192.0.2.0/24 or 2001:db8::/32, or a single address",
            ),
            InvalidAllowlistKind::InvalidPrefix => {
                match self
                    .entry
                    .split_once('/')
                    .map(|(a, _)| a.trim_ascii().parse::<IpAddr>())
                {
                    Some(Ok(IpAddr::V6(_))) => f.write_str(
                        "the prefix length must be a number from 0 to 128 for an IPv6 address",
                    ),
                    _ => f.write_str(
                        "the prefix length must be a number from 0 to 32 for an IPv4 address",
                    ),
                }
            }
            InvalidAllowlistKind::HostBitsSet => {
                // The entry parsed up to this check, so this succeeds.
                let net = self
                    .entry
                    .trim_ascii()
                    .split_once('/')
                    .and_then(|(addr, prefix)| {
                        IpNet::new(addr.parse().ok()?, prefix.parse().ok()?).ok()
                    });
                match net {
                    Some(net) => write!(
                        f,
                        "bits are set after the /{} prefix; write {} for the network, \
                         or {} for the one address",
                        net.prefix_len(),
                        net.trunc(),
                        net.addr()
                    ),
                    None => f.write_str("bits are set after the prefix"),
                }
            }
        }
    }
}

impl std::error::Error for InvalidAllowlist {}

// ---------------------------------------------------------------------------
// The peer
// ---------------------------------------------------------------------------

/// The address of a connection's other end, as a request extension that any
/// server (or test) can insert; [`peer_addr`] prefers it to axum's and
/// tonic's connection info.
///
/// Use it where neither axum's `ConnectInfo` nor tonic's `TcpConnectInfo` is
/// there: a hyper server of your own, a PROXY-protocol acceptor (insert the
/// address the PROXY header gave), tonic behind its own TLS, or tests:
///
/// ```
/// use tower_keyauth::client_addr::{PeerAddr, peer_addr};
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(PeerAddr("192.0.2.1".parse().unwrap()));
/// assert_eq!(peer_addr(request.extensions()), Some("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub IpAddr);

/// The address of the request's peer, from the first of [`PeerAddr`],
/// axum's `ConnectInfo<SocketAddr>` (feature `axum`) and tonic's
/// `TcpConnectInfo` (feature `tonic`) found in `extensions`; `None` when
/// none is there.
///
/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is returned as the IPv4
/// address, so that one client has one address.
pub fn peer_addr(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(ip)) = extensions.get::<PeerAddr>() {
        return Some(ip.to_canonical());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<::axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(info.0.ip().to_canonical());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<::tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
    {
        return Some(addr.ip().to_canonical());
    }
    None
}

// ---------------------------------------------------------------------------
// Trusted proxies
// ---------------------------------------------------------------------------

/// Which forwarding header the trusted proxies write.
///
/// Only one is read: a proxy that appends to one of them passes the other
/// through as the client sent it, so reading "whichever is present" would let
/// a client choose its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: <client>, <proxy1>, <proxy2>`: what nginx, HAProxy,
    /// Envoy and the cloud load balancers write. The default.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=<client>, for=<proxy1>` (RFC 7239), the standard
    /// form, when the proxies are configured to write it.
    Forwarded,
}

impl ForwardingHeader {
    fn name(self) -> &'static HeaderName {
        static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
        match self {
            Self::XForwardedFor => &X_FORWARDED_FOR,
            Self::Forwarded => &FORWARDED,
        }
    }
}

/// The application's own reverse proxies and load balancers: the peers
/// whose forwarding header is believed. At most
/// [`IpAllowlist::MAX_NETWORKS`] CIDR networks or addresses.
///
/// The default, [`none`](Self::none), trusts no peer: the client is always
/// the connection's peer and forwarding headers are never read.
///
/// ```
/// use tower_keyauth::client_addr::{ForwardingHeader, TrustedProxies};
///
/// let trusted = TrustedProxies::parse(["10.0.0.0/8", "fd00::/8"])
///     .unwrap()
///     .header(ForwardingHeader::Forwarded);
/// assert!(trusted.contains("10.1.2.3".parse().unwrap()));
/// assert_eq!(trusted.forwarding_header(), ForwardingHeader::Forwarded);
/// assert!(TrustedProxies::none().is_none());
/// ```
///
/// # Warning
///
/// List only addresses that clients cannot connect from. Every address in
/// the list can set the client address of its requests to anything: a
/// network as wide as `0.0.0.0/0` lets every client choose its own address,
/// and allowlists then protect nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: IpAllowlist,
    header: ForwardingHeader,
}

impl TrustedProxies {
    /// The most entries of a forwarding header that are examined: 32.
    pub const MAX_HOPS: usize = 32;

    /// The most bytes of a forwarding header that are examined, counted from
    /// the right: 4 KiB.
    pub const MAX_HEADER_BYTES: usize = 4096;

    /// No trusted proxy: forwarding headers are never read.
    pub fn none() -> Self {
        Self {
            networks: IpAllowlist::empty(),
            header: ForwardingHeader::default(),
        }
    }

    /// The proxies' networks and addresses, with the rules and bounds of
    /// [`IpAllowlist::parse`]; they write `X-Forwarded-For` unless
    /// [`header`](Self::header) says otherwise.
    pub fn parse(
        items: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, InvalidAllowlist> {
        let mut list = ListBuilder::new(ListKind::TrustedProxies);
        for item in items {
            list.push(item.as_ref())?;
        }
        Ok(Self {
            networks: list.finish(),
            header: ForwardingHeader::default(),
        })
    }

    /// Which header the proxies write (`X-Forwarded-For` by default).
    #[must_use]
    pub fn header(mut self, header: ForwardingHeader) -> Self {
        self.header = header;
        self
    }

    /// The header that is read.
    pub fn forwarding_header(&self) -> ForwardingHeader {
        self.header
    }

    /// Whether `ip` is one of the proxies (IPv4-mapped addresses as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.contains(ip)
    }

    /// Whether no proxy is trusted.
    pub fn is_none(&self) -> bool {
        self.networks.is_empty()
    }

    /// The networks, as [`IpAllowlist::networks`] shows them.
    pub fn networks(&self) -> impl ExactSizeIterator<Item = String> + '_ {
        self.networks.networks()
    }
}

impl Default for TrustedProxies {
    fn default() -> Self {
        Self::none()
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// The client's address: the [peer's](peer_addr), or, when the peer is one
/// of the `trusted` proxies, the one their forwarding header names; `None`
/// when the peer's address is unknown (and a key with an allowlist is then to
/// be refused: an unknown address is in no list).
///
/// An IPv4-mapped IPv6 address is returned as the IPv4 address.
///
/// ```
/// use std::net::IpAddr;
/// use tower_keyauth::client_addr::{PeerAddr, TrustedProxies, client_addr};
///
/// let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
/// let request = |peer: &str| {
///     let mut request = http::Request::builder()
///         .header("x-forwarded-for", "192.0.2.1")
///         .body(())
///         .unwrap();
///     request.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
///     request.into_parts().0
/// };
/// let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
///
/// // Through the proxy: the address it recorded.
/// assert_eq!(client_addr(&request("10.0.0.5"), &trusted), ip("192.0.2.1"));
/// // Straight from the internet: the header is the client's own claim.
/// assert_eq!(client_addr(&request("198.51.100.7"), &trusted), ip("198.51.100.7"));
/// // No connection info at all.
/// assert_eq!(client_addr(&http::Request::new(()).into_parts().0, &trusted), None);
/// ```
///
/// # The walk
///
/// The header is the one [`TrustedProxies::forwarding_header`] names; all
/// of its lines, joined in order. Its entries are examined from the right;
/// trusted proxies are skipped, and the first address that is not a trusted
/// proxy is the client. When every entry is a trusted proxy, the leftmost is
/// the client; when there is no header, the peer is.
///
/// - `X-Forwarded-For` entries are addresses, optionally with a port
///   (`192.0.2.1:4711`, `[2001:db8::1]:4711`); IPv6 may also be bare.
/// - `Forwarded` elements are RFC 7239's: the `for=` parameter of each,
///   quoted or not (`for="[2001:db8::1]:4711"`), ports and obfuscated ports
///   allowed, other parameters checked for syntax and ignored.
/// - Empty entries (`a,,b`) are skipped, as HTTP's list syntax asks.
/// - An entry that is not an address, including `unknown` and obfuscated
///   identifiers (`for=_hidden`), a `Forwarded` element without `for=` or
///   with a quoted-string escape in it, ends the walk, and the last address
///   read before it (the one to its right, or the peer) is the client: the
///   walk never skips what it cannot read, since whoever wrote the entries to
///   its left can no longer be told apart from the client.
/// - Only the rightmost [`TrustedProxies::MAX_HOPS`] entries and
///   [`TrustedProxies::MAX_HEADER_BYTES`] bytes are examined. A walk that
///   would go past either bound has found only trusted proxies in a header
///   no real chain of proxies writes; it ends, and the peer is the client.
///
/// Whatever the headers say, the result is the peer or an address written in
/// the header, and the work is bounded by the two bounds above; nothing is
/// allocated.
pub fn client_addr(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    client_addr_from(&parts.headers, &parts.extensions, trusted)
}

/// [`client_addr`] for callers that hold a request rather than its
/// [`Parts`]: `client_addr_from(request.headers(), request.extensions(), …)`.
pub fn client_addr_from(
    headers: &HeaderMap,
    extensions: &Extensions,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer_addr(extensions)?;
    if !trusted.contains(peer) {
        return Some(peer);
    }
    Some(walk_forwarded(headers, trusted, peer))
}

/// The walk described on [`client_addr`]; `peer` is a trusted proxy.
fn walk_forwarded(headers: &HeaderMap, trusted: &TrustedProxies, peer: IpAddr) -> IpAddr {
    let parse_entry = match trusted.header {
        ForwardingHeader::XForwardedFor => parse_x_forwarded_for_entry,
        ForwardingHeader::Forwarded => parse_forwarded_element,
    };
    let mut last_good = peer;
    let mut hops = 0;
    let mut budget = TrustedProxies::MAX_HEADER_BYTES;
    for line in headers.get_all(trusted.header.name()).iter().rev() {
        let line = line.as_bytes();
        // Only the rightmost `budget` bytes of the line are looked at.
        let cut = line.len() > budget;
        let window = &line[line.len() - line.len().min(budget)..];
        budget -= window.len();
        let mut end = window.len();
        loop {
            let start = window[..end]
                .iter()
                .rposition(|&b| b == b',')
                .map_or(0, |comma| comma + 1);
            if start == 0 && cut {
                // This entry runs past the byte bound.
                return peer;
            }
            let entry = window[start..end].trim_ascii();
            hops += 1;
            if hops > TrustedProxies::MAX_HOPS {
                return peer;
            }
            if !entry.is_empty() {
                match parse_entry(entry) {
                    Some(ip) => {
                        let ip = ip.to_canonical();
                        if !trusted.contains(ip) {
                            return ip;
                        }
                        last_good = ip;
                    }
                    None => return last_good,
                }
            }
            if start == 0 {
                break;
            }
            end = start - 1;
        }
    }
    last_good
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`.
fn parse_x_forwarded_for_entry(entry: &[u8]) -> Option<IpAddr> {
    parse_node(entry, is_port)
}

/// One RFC 7239 element, `for=192.0.2.60;proto=http;by=203.0.113.43`: the
/// address of its `for` parameter.
///
/// Elements are split at every comma, even one inside a quoted string: no
/// address contains a comma, and a piece cut out of a quoted string does not
/// parse, so such a header ends the walk rather than misleading it.
fn parse_forwarded_element(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in element.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (&pair[..eq], &pair[eq + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        let (value, escaped) = forwarded_value(value)?;
        if name.eq_ignore_ascii_case(b"for") {
            // A parameter occurs once per element (RFC 7239 §4).
            if found.is_some() || escaped {
                return None;
            }
            found = Some(parse_node(value, is_forwarded_port)?);
        }
    }
    found
}

/// A parameter's value without its quotes, and whether it has a
/// quoted-pair (`\x`) in it. Unquoted values may also hold `:`, `[` and `]`,
/// which some proxies send unquoted against the RFC.
fn forwarded_value(value: &[u8]) -> Option<(&[u8], bool)> {
    if let [b'"', inner @ .., b'"'] = value {
        let mut escaped = false;
        let mut bytes = inner.iter();
        while let Some(&b) = bytes.next() {
            match b {
                b'\\' => {
                    bytes.next()?;
                    escaped = true;
                }
                b'"' => return None,
                _ => {}
            }
        }
        Some((inner, escaped))
    } else if !value.is_empty()
        && value
            .iter()
            .all(|&b| is_tchar(b) || matches!(b, b':' | b'[' | b']'))
    {
        Some((value, false))
    } else {
        None
    }
}

/// An address, IPv6 in brackets when a port follows; `unknown`,
/// obfuscated identifiers and anything else are `None`.
fn parse_node(node: &[u8], is_port: fn(&[u8]) -> bool) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        let ip: Ipv6Addr = std::str::from_utf8(&rest[..close]).ok()?.parse().ok()?;
        return match &rest[close + 1..] {
            [] => Some(IpAddr::V6(ip)),
            [b':', port @ ..] if is_port(port) => Some(IpAddr::V6(ip)),
            _ => None,
        };
    }
    let text = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv4 with a port; an unbracketed IPv6 address with a port is ambiguous.
    let (addr, port) = text.split_once(':')?;
    if !is_port(port.as_bytes()) {
        return None;
    }
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(port: &[u8]) -> bool {
    (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
}

/// RFC 7239's `node-port`: a port, or an obfuscated one (`_abc`).
fn is_forwarded_port(port: &[u8]) -> bool {
    is_port(port)
        || matches!(port, [b'_', rest @ ..] if !rest.is_empty()
            && rest.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
}

/// RFC 9110's `tchar`.
fn is_tchar(b: u8) -> bool {
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
}

// ---------------------------------------------------------------------------
// serde
// ---------------------------------------------------------------------------

#[cfg(feature = "serde")]
mod serde_impls {
    use std::fmt;

    use ::serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
    use ::serde::ser::{Serialize, SerializeSeq, Serializer};
    use ipnet::IpNet;

    use super::{IpAllowlist, ListBuilder, ListKind};

    /// As a list of strings: `["192.0.2.0/24", "2001:db8::/32"]`.
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for IpAllowlist {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            struct Network<'a>(&'a IpNet);
            impl Serialize for Network<'_> {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    serializer.collect_str(self.0)
                }
            }
            let mut list = serializer.serialize_seq(Some(self.networks.len()))?;
            for net in self.networks.iter() {
                list.serialize_element(&Network(net))?;
            }
            list.end()
        }
    }

    /// From a list of strings, each checked as [`IpAllowlist::parse`] does;
    /// a list that is too long is refused at its first extra entry.
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl<'de> Deserialize<'de> for IpAllowlist {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Networks;
            impl<'de> Visitor<'de> for Networks {
                type Value = IpAllowlist;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a list of IP networks such as \"192.0.2.0/24\"")
                }

                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IpAllowlist, A::Error> {
                    let mut list = ListBuilder::new(ListKind::Allowlist);
                    while let Some(entry) = seq.next_element::<String>()? {
                        list.push(&entry).map_err(de::Error::custom)?;
                    }
                    Ok(list.finish())
                }
            }
            deserializer.deserialize_seq(Networks)
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Request parts with `peer` as a [`PeerAddr`] and the given header
    /// lines.
    fn parts(peer: Option<&str>, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(PeerAddr(ip(peer)));
        }
        request.into_parts().0
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse(["10.0.0.0/8", "fd00::/8"]).unwrap()
    }

    fn xff(peer: &str, values: &[&str]) -> Option<IpAddr> {
        let headers: Vec<_> = values.iter().map(|v| ("x-forwarded-for", *v)).collect();
        client_addr(&parts(Some(peer), &headers), &proxies())
    }

    fn forwarded(peer: &str, values: &[&str]) -> Option<IpAddr> {
        let headers: Vec<_> = values.iter().map(|v| ("forwarded", *v)).collect();
        client_addr(
            &parts(Some(peer), &headers),
            &proxies().header(ForwardingHeader::Forwarded),
        )
    }

    // --- the allowlist ---

    #[test]
    fn ipv4_containment() {
        let list = IpAllowlist::parse(["192.0.2.0/24", "198.51.100.7", "0.0.0.0/32"]).unwrap();
        assert!(list.contains(ip("192.0.2.0")));
        assert!(list.contains(ip("192.0.2.255")));
        assert!(!list.contains(ip("192.0.3.0")));
        assert!(list.contains(ip("198.51.100.7")));
        assert!(!list.contains(ip("198.51.100.6")));
        assert!(!list.contains(ip("2001:db8::1")));
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn ipv6_containment() {
        let list = IpAllowlist::parse(["2001:db8::/32", "2001:db8:ffff::1/128"]).unwrap();
        assert!(list.contains(ip("2001:db8::")));
        assert!(list.contains(ip("2001:db8:ffff:ffff::1")));
        assert!(!list.contains(ip("2001:db9::1")));
        assert!(!list.contains(ip("192.0.2.1")));
        let one = IpAllowlist::parse(["::1"]).unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        assert!(!one.contains(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_addresses_match_ipv4_networks_and_back() {
        let v4 = IpAllowlist::parse(["192.0.2.0/24"]).unwrap();
        assert!(v4.contains(ip("::ffff:192.0.2.9")));
        assert!(!v4.contains(ip("::ffff:192.0.3.9")));
        // Not mapped: the IPv4-compatible form is a different address.
        assert!(!v4.contains(ip("::192.0.2.9")));
        let mapped = IpAllowlist::parse(["::ffff:192.0.2.0/120"]).unwrap();
        assert!(mapped.contains(ip("192.0.2.9")));
        assert!(mapped.contains(ip("::ffff:192.0.2.9")));
        assert!(!mapped.contains(ip("192.0.3.9")));
    }

    #[test]
    fn everything_and_nothing() {
        let all = IpAllowlist::parse(["0.0.0.0/0", "::/0"]).unwrap();
        assert!(all.contains(ip("203.0.113.1")) && all.contains(ip("2001:db8::1")));
        let none = IpAllowlist::parse(Vec::<String>::new()).unwrap();
        assert!(none.is_empty());
        assert!(!none.contains(ip("203.0.113.1")));
    }

    #[test]
    fn display_debug_and_networks() {
        let list = IpAllowlist::parse([" 192.0.2.0/24 ", "2001:DB8:0::/32", "10.0.0.1"]).unwrap();
        assert_eq!(list.to_string(), "192.0.2.0/24, 2001:db8::/32, 10.0.0.1/32");
        assert_eq!(
            format!("{list:?}"),
            "IpAllowlist[192.0.2.0/24, 2001:db8::/32, 10.0.0.1/32]"
        );
        assert_eq!(
            list.networks().collect::<Vec<_>>(),
            ["192.0.2.0/24", "2001:db8::/32", "10.0.0.1/32"]
        );
        // What it shows parses back to the same list.
        assert_eq!(IpAllowlist::parse(list.networks()).unwrap(), list);
    }

    fn refused(entries: &[&str]) -> InvalidAllowlist {
        IpAllowlist::parse(entries).unwrap_err()
    }

    #[test]
    fn parse_errors_name_the_entry() {
        use InvalidAllowlistKind::*;
        let cases: &[(&str, InvalidAllowlistKind)] = &[
            ("", Empty),
            ("   ", Empty),
            ("10.0.0", NotAnAddress),
            ("10.0.0.256", NotAnAddress),
            ("010.0.0.1", NotAnAddress),
            ("fe80::1%eth0", NotAnAddress),
            ("example.com", NotAnAddress),
            ("/8", NotAnAddress),
            ("10.0.0.0/", InvalidPrefix),
            ("10.0.0.0/33", InvalidPrefix),
            ("10.0.0.0/+8", InvalidPrefix),
            ("10.0.0.0/-1", InvalidPrefix),
            ("10.0.0.0/8/8", InvalidPrefix),
            ("10.0.0.0/1000", InvalidPrefix),
            ("2001:db8::/129", InvalidPrefix),
            ("10.0.0.1/8", HostBitsSet),
            ("2001:db8::1/32", HostBitsSet),
        ];
        for &(entry, kind) in cases {
            let error = refused(&["192.0.2.0/24", entry]);
            assert_eq!(error.kind(), kind, "{entry:?}");
            assert_eq!(error.entry(), entry);
            assert_eq!(error.index(), 1);
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("invalid IP allowlist entry {entry:?} (item 2): ")),
                "{message}"
            );
        }
    }

    #[test]
    fn parse_error_messages() {
        assert_eq!(
            refused(&["2001:db8::1/32"]).to_string(),
            "invalid IP allowlist entry \"2001:db8::1/32\" (item 1): bits are set after the /32 \
             prefix; write 2001:db8::/32 for the network, or 2001:db8::1 for the one address"
        );
        assert_eq!(
            refused(&["2001:db8::/129"]).to_string(),
            "invalid IP allowlist entry \"2001:db8::/129\" (item 1): the prefix length must be a \
             number from 0 to 128 for an IPv6 address"
        );
        assert_eq!(
            refused(&["localhost"]).to_string(),
            "invalid IP allowlist entry \"localhost\" (item 1): not an IPv4 or IPv6 address; \
             expected a network such as 192.0.2.0/24 or 2001:db8::/32, or a single address"
        );
        // Control characters are escaped in the message.
        assert!(refused(&["1.2.3.4\u{7}"]).to_string().contains("\\u{7}"));
    }

    #[test]
    fn parse_bounds() {
        let full: Vec<String> = (0..64).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(IpAllowlist::parse(&full).unwrap().len(), 64);

        let mut over = full.clone();
        over.push("192.0.2.1".into());
        let error = IpAllowlist::parse(&over).unwrap_err();
        assert_eq!(error.kind(), InvalidAllowlistKind::TooManyEntries);
        assert_eq!(error.index(), 64);
        assert_eq!(
            error.to_string(),
            "invalid IP allowlist entry \"192.0.2.1\" (item 65): a list holds at most 64 networks"
        );

        // The 65th entry ends the parse: an endless list is not read on.
        let endless = std::iter::repeat("10.0.0.0/8");
        assert_eq!(
            IpAllowlist::parse(endless).unwrap_err().kind(),
            InvalidAllowlistKind::TooManyEntries
        );

        let long = format!("{}1", " ".repeat(64));
        let error = refused(&[&long]);
        assert_eq!(error.kind(), InvalidAllowlistKind::TooLong);
        let huge = "é".repeat(10_000);
        let error = refused(&[&huge]);
        assert_eq!(error.kind(), InvalidAllowlistKind::TooLong);
        assert!(error.entry().len() <= 64 + '…'.len_utf8());
        assert!(error.entry().ends_with('…'));
    }

    #[test]
    fn trusted_proxies_errors_say_so() {
        let error = TrustedProxies::parse(["10.0.0.1/8"]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid trusted proxy entry \"10.0.0.1/8\" (item 1): "),
            "{error}"
        );
        assert!(TrustedProxies::default().is_none());
        assert!(!proxies().is_none());
        assert_eq!(
            proxies().networks().collect::<Vec<_>>(),
            ["10.0.0.0/8", "fd00::/8"]
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_round_trip_and_refusals() {
        let list = IpAllowlist::parse(["192.0.2.0/24", "2001:db8::/32"]).unwrap();
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"["192.0.2.0/24","2001:db8::/32"]"#);
        assert_eq!(serde_json::from_str::<IpAllowlist>(&json).unwrap(), list);
        assert_eq!(
            serde_json::from_str::<IpAllowlist>(r#"["10.0.0.1"]"#)
                .unwrap()
                .to_string(),
            "10.0.0.1/32"
        );

        let error = serde_json::from_str::<IpAllowlist>(r#"["10.0.0.0/8", "10.0.0.1/8"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid IP allowlist entry \"10.0.0.1/8\" (item 2)"),
            "{error}"
        );
        assert!(serde_json::from_str::<IpAllowlist>(r#""10.0.0.0/8""#).is_err());
        assert!(serde_json::from_str::<IpAllowlist>("[1]").is_err());
        let many = format!("[{}]", vec!["\"10.0.0.0/8\""; 65].join(","));
        let error = serde_json::from_str::<IpAllowlist>(&many)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most 64 networks"), "{error}");
    }

    // --- the peer ---

    #[test]
    fn no_peer_no_address() {
        let parts = parts(None, &[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(peer_addr(&parts.extensions), None);
        assert_eq!(client_addr(&parts, &proxies()), None);
        assert_eq!(client_addr(&parts, &TrustedProxies::none()), None);
    }

    #[test]
    fn own_extension() {
        let parts = parts(Some("192.0.2.1"), &[]);
        assert_eq!(peer_addr(&parts.extensions), Some(ip("192.0.2.1")));
        assert_eq!(
            client_addr(&parts, &TrustedProxies::none()),
            Some(ip("192.0.2.1"))
        );
        // Mapped peers come back as IPv4, and are recognised as proxies.
        let parts = self::parts(Some("::ffff:10.0.0.1"), &[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(peer_addr(&parts.extensions), Some(ip("10.0.0.1")));
        assert_eq!(client_addr(&parts, &proxies()), Some(ip("192.0.2.1")));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info() {
        use ::axum::extract::ConnectInfo;
        use std::net::SocketAddr;
        let mut parts = parts(None, &[("x-forwarded-for", "192.0.2.1")]);
        parts
            .extensions
            .insert(ConnectInfo("10.0.0.1:50000".parse::<SocketAddr>().unwrap()));
        assert_eq!(peer_addr(&parts.extensions), Some(ip("10.0.0.1")));
        assert_eq!(client_addr(&parts, &proxies()), Some(ip("192.0.2.1")));
        assert_eq!(
            client_addr(&parts, &TrustedProxies::none()),
            Some(ip("10.0.0.1"))
        );
        // The application's own extension wins.
        parts.extensions.insert(PeerAddr(ip("203.0.113.5")));
        assert_eq!(peer_addr(&parts.extensions), Some(ip("203.0.113.5")));
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_tcp_connect_info() {
        use ::tonic::transport::server::{Connected, TcpConnectInfo};
        let mut parts = parts(None, &[("x-forwarded-for", "192.0.2.1")]);
        // `TcpConnectInfo` has no public constructor: take it from a real
        // loopback connection, as tonic's server does.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let info: TcpConnectInfo = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            let _client = client.unwrap();
            accepted.unwrap().0.connect_info()
        });
        assert_eq!(info.remote_addr().map(|a| a.ip()), Some(ip("127.0.0.1")));
        parts.extensions.insert(info);
        assert_eq!(peer_addr(&parts.extensions), Some(ip("127.0.0.1")));
        assert_eq!(
            client_addr(&parts, &TrustedProxies::none()),
            Some(ip("127.0.0.1"))
        );
        let loopback = TrustedProxies::parse(["127.0.0.0/8"]).unwrap();
        assert_eq!(client_addr(&parts, &loopback), Some(ip("192.0.2.1")));
    }

    // --- X-Forwarded-For ---

    #[test]
    fn spoofed_header_from_an_untrusted_peer_is_ignored() {
        for header in ["x-forwarded-for", "forwarded"] {
            let parts = parts(
                Some("203.0.113.66"),
                &[(header, "for=10.0.0.1"), (header, "10.0.0.1")],
            );
            let trusted = proxies().header(ForwardingHeader::Forwarded);
            assert_eq!(client_addr(&parts, &proxies()), Some(ip("203.0.113.66")));
            assert_eq!(client_addr(&parts, &trusted), Some(ip("203.0.113.66")));
        }
        // No trusted proxies: never read.
        let parts = parts(Some("10.0.0.1"), &[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(
            client_addr(&parts, &TrustedProxies::none()),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn one_trusted_proxy() {
        assert_eq!(xff("10.0.0.1", &["192.0.2.1"]), Some(ip("192.0.2.1")));
        // What the client wrote itself is to the left of what the proxy saw.
        assert_eq!(
            xff("10.0.0.1", &["10.9.9.9, 6.6.6.6, 192.0.2.1"]),
            Some(ip("192.0.2.1"))
        );
        // A proxy talking to us without a header: the proxy is the client.
        assert_eq!(xff("10.0.0.1", &[]), Some(ip("10.0.0.1")));
    }

    #[test]
    fn two_trusted_proxies() {
        assert_eq!(
            xff("10.0.0.2", &["192.0.2.1, 10.0.0.1"]),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            xff("10.0.0.2", &["6.6.6.6, 192.0.2.1, 10.0.0.1"]),
            Some(ip("192.0.2.1"))
        );
        // Several lines are one list, in order.
        assert_eq!(
            xff("10.0.0.2", &["6.6.6.6", "192.0.2.1", "10.0.0.1"]),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            xff("10.0.0.2", &["6.6.6.6, 192.0.2.1", "10.0.0.1"]),
            Some(ip("192.0.2.1"))
        );
        // IPv6 proxies and client, ports and brackets.
        assert_eq!(
            xff("fd00::2", &["[2001:db8::7]:4711, fd00::1"]),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            xff("fd00::2", &["2001:db8::7, [fd00::1]"]),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            xff("10.0.0.2", &["192.0.2.1:4711 , 10.0.0.1:80"]),
            Some(ip("192.0.2.1"))
        );
        // Mapped entries count as IPv4.
        assert_eq!(
            xff("10.0.0.2", &["::ffff:192.0.2.1, ::ffff:10.0.0.1"]),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        assert_eq!(
            xff("10.0.0.3", &["10.0.0.1, 10.0.0.2"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            xff("10.0.0.3", &["fd00::9", "10.0.0.2"]),
            Some(ip("fd00::9"))
        );
    }

    #[test]
    fn malformed_entries_stop_at_the_last_good_address() {
        // The rightmost is malformed: the peer.
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1, garbage"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1, unknown"]),
            Some(ip("10.0.0.1"))
        );
        // Behind a trusted hop: that hop.
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1, 1.2.3, 10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1, [::1, 10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1, 1.2.3.4:99999, 10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            xff(
                "10.0.0.1",
                &["192.0.2.1, 2001:db8::1:80:1:1:1:1:1, 10.0.0.2"]
            ),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1, [2001:db8::1]x, 10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        // A good client after the malformed entry, to its right: found first.
        assert_eq!(
            xff("10.0.0.1", &["garbage, 192.0.2.1"]),
            Some(ip("192.0.2.1"))
        );
        // Empty entries are skipped, not malformed.
        assert_eq!(
            xff("10.0.0.1", &["192.0.2.1,, 10.0.0.2,"]),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(xff("10.0.0.1", &["192.0.2.1", ""]), Some(ip("192.0.2.1")));
        // A line that is not text stops the walk too.
        let mut parts = parts(Some("10.0.0.1"), &[("x-forwarded-for", "192.0.2.1")]);
        parts.headers.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff10.0.0.2").unwrap(),
        );
        assert_eq!(client_addr(&parts, &proxies()), Some(ip("10.0.0.1")));
    }

    #[test]
    fn hop_bound() {
        let hops = |n: usize| vec!["10.0.0.2"; n].join(", ");
        // 32 trusted entries: all examined, the leftmost is the client.
        assert_eq!(xff("10.0.0.1", &[&hops(32)]), Some(ip("10.0.0.2")));
        // 33: past the bound, the peer.
        assert_eq!(xff("10.0.0.1", &[&hops(33)]), Some(ip("10.0.0.1")));
        assert_eq!(
            xff("10.0.0.1", &[&format!("192.0.2.1, {}", hops(32))]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            xff("10.0.0.1", &[&format!("192.0.2.1, {}", hops(31))]),
            Some(ip("192.0.2.1"))
        );
        // Empty entries count as hops, as lines do.
        let lines: Vec<&str> = vec![""; 40];
        assert_eq!(xff("10.0.0.1", &lines), Some(ip("10.0.0.1")));
        // A long header whose untrusted entry is near the right is fine: what
        // the client wrote on the left is never read.
        let long = format!("{}, 192.0.2.1, 10.0.0.2", vec!["6.6.6.6"; 1000].join(", "));
        assert_eq!(xff("10.0.0.1", &[&long]), Some(ip("192.0.2.1")));
    }

    #[test]
    fn byte_bound() {
        // 4096 bytes exactly, all trusted: the leftmost.
        let padded = format!("{}10.0.0.2", " ".repeat(4096 - 8));
        assert_eq!(padded.len(), 4096);
        assert_eq!(xff("10.0.0.1", &[&padded]), Some(ip("10.0.0.2")));
        // One byte more: the entry runs past the bound, the peer.
        let over = format!(" {padded}");
        assert_eq!(xff("10.0.0.1", &[&over]), Some(ip("10.0.0.1")));
        // Over several lines.
        let half = format!("{}10.0.0.2", " ".repeat(2048 - 8));
        assert_eq!(xff("10.0.0.1", &[&half, &half]), Some(ip("10.0.0.2")));
        assert_eq!(
            xff("10.0.0.1", &["10.0.0.3", &half, &half]),
            Some(ip("10.0.0.1"))
        );
        // An untrusted entry inside the bound is the client, however long
        // the rest.
        let huge = format!("{}, 192.0.2.1", "x".repeat(100_000));
        assert_eq!(xff("10.0.0.1", &[&huge]), Some(ip("192.0.2.1")));
        assert_eq!(
            xff("10.0.0.1", &[&"x".repeat(100_000), "192.0.2.1"]),
            Some(ip("192.0.2.1"))
        );
    }

    // --- Forwarded ---

    #[test]
    fn forwarded_through_proxies() {
        assert_eq!(
            forwarded("10.0.0.1", &["for=192.0.2.60;proto=http;by=10.0.0.1"]),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            forwarded(
                "10.0.0.2",
                &["for=6.6.6.6, for=192.0.2.60, for=10.0.0.1;by=10.0.0.2"]
            ),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            forwarded("10.0.0.2", &["for=192.0.2.60", "For=10.0.0.1"]),
            Some(ip("192.0.2.60"))
        );
        // Parameter order, case and spacing do not matter.
        assert_eq!(
            forwarded(
                "10.0.0.1",
                &["proto=https ; FOR=192.0.2.60 ;host=example.com"]
            ),
            Some(ip("192.0.2.60"))
        );
        // Only the configured header is read.
        let parts = parts(Some("10.0.0.1"), &[("x-forwarded-for", "192.0.2.1")]);
        let trusted = proxies().header(ForwardingHeader::Forwarded);
        assert_eq!(client_addr(&parts, &trusted), Some(ip("10.0.0.1")));
    }

    #[test]
    fn forwarded_quoted_ipv6_and_ports() {
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for="[2001:db8:cafe::17]:4711""#]),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for="[2001:db8:cafe::17]""#]),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for="192.0.2.43:47011""#]),
            Some(ip("192.0.2.43"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for="192.0.2.43""#]),
            Some(ip("192.0.2.43"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for="[2001:db8::1]:_obf-port""#]),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            forwarded(
                "fd00::1",
                &[r#"for="[2001:db8::1]:4711", for="[fd00::9]";proto=https"#]
            ),
            Some(ip("2001:db8::1"))
        );
        // Leniency for unquoted forms some proxies send.
        assert_eq!(
            forwarded("10.0.0.1", &["for=[2001:db8::1]"]),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &["for=192.0.2.43:4711"]),
            Some(ip("192.0.2.43"))
        );
        // An unbracketed value that is an IPv6 address is read as one, port or not.
        assert_eq!(
            forwarded("10.0.0.1", &["for=2001:db8::1:80"]),
            Some(ip("2001:db8::1:80"))
        );
    }

    #[test]
    fn forwarded_unknown_and_obfuscated_stop_the_walk() {
        assert_eq!(
            forwarded("10.0.0.1", &["for=192.0.2.1, for=unknown"]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &["for=192.0.2.1, for=_hidden, for=10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for=192.0.2.1, for="_hidden:80""#]),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn forwarded_malformed_elements() {
        let stops_at_peer = [
            "proto=https",                 // no for=
            "for=192.0.2.1;for=192.0.2.2", // for= twice
            "for",                         // no value
            "for=",                        // empty value
            "=192.0.2.1",                  // no name
            "f@r=192.0.2.1",               // not a token
            r#"for="192.0.2.1"#,           // unterminated quote
            r#"for="192.0.\2.1""#,         // an escape in the address
            r#"for="192.0.2.1" x"#,        // junk after the quote
            "for=192.0.2.1 ;by",           // a parameter without a value
            r#"for=192.0.2.1;ext="a"b""#,  // a stray quote
            "for=[2001:db8::1]:80:80",     // two ports
            "for=192.0.2.1:",              // an empty port
            "for=192.0.2.1:_",             // an empty obfuscated port
        ];
        for element in stops_at_peer {
            assert_eq!(
                forwarded("10.0.0.1", &[&format!("for=198.51.100.1, {element}")]),
                Some(ip("10.0.0.1")),
                "{element}"
            );
        }
        // Other parameters may be quoted and escaped.
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for=192.0.2.1;ext="a\"b""#]),
            Some(ip("192.0.2.1"))
        );
        // A comma inside a quoted string cuts it: the walk stops there rather
        // than reading a piece of it as an element.
        assert_eq!(
            forwarded("10.0.0.1", &[r#"for=192.0.2.1;ext="a, for=6.6.6.6""#]),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            forwarded(
                "10.0.0.1",
                &[r#"for=192.0.2.1;ext="a, for=6.6.6.6", for=10.0.0.2"#]
            ),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn forwarded_bounds() {
        let hops = |n: usize| vec!["for=10.0.0.2"; n].join(", ");
        assert_eq!(forwarded("10.0.0.1", &[&hops(32)]), Some(ip("10.0.0.2")));
        assert_eq!(forwarded("10.0.0.1", &[&hops(33)]), Some(ip("10.0.0.1")));
        let over = format!("for=10.0.0.2;ext={}", "x".repeat(4096));
        assert_eq!(forwarded("10.0.0.1", &[&over]), Some(ip("10.0.0.1")));
    }

    // --- whatever the input ---

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Addresses: trusted, untrusted, IPv4, IPv6, mapped.
        fn address() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("10.0.0.1".to_owned()),
                Just("10.0.0.2".to_owned()),
                Just("fd00::1".to_owned()),
                Just("::ffff:10.0.0.3".to_owned()),
                Just("192.0.2.1".to_owned()),
                Just("2001:db8::1".to_owned()),
                Just("::ffff:192.0.2.9".to_owned()),
                any::<u32>().prop_map(|n| std::net::Ipv4Addr::from(n).to_string()),
                any::<u128>().prop_map(|n| std::net::Ipv6Addr::from(n).to_string()),
            ]
        }

        /// One header entry: an address in some dress, or debris.
        fn entry() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => address(),
                2 => (address(), 0u32..70000).prop_map(|(a, p)| if a.contains(':') {
                    format!("[{a}]:{p}")
                } else {
                    format!("{a}:{p}")
                }),
                2 => address().prop_map(|a| format!("for={a}")),
                2 => (address(), 0u32..70000).prop_map(|(a, p)| format!("for=\"[{a}]:{p}\";proto=https")),
                1 => Just("unknown".to_owned()),
                1 => Just("for=_hidden".to_owned()),
                1 => Just(String::new()),
                2 => "[ -~]{0,12}",
            ]
        }

        fn header_line() -> impl Strategy<Value = String> {
            proptest::collection::vec(entry(), 0..8).prop_map(|entries| entries.join(", "))
        }

        /// Every address written anywhere in `text`, as [`IpAddr::to_canonical`] gives it.
        fn addresses_in(text: &str) -> Vec<IpAddr> {
            let mut found = Vec::new();
            for start in 0..text.len() {
                for end in start + 1..=text.len().min(start + 45) {
                    if let Some(Ok(ip)) = text.get(start..end).map(str::parse::<IpAddr>) {
                        found.push(ip.to_canonical());
                    }
                }
            }
            found
        }

        proptest! {
            #[test]
            fn the_client_is_the_peer_or_written_in_the_header(
                peer in proptest::option::of(address()),
                lines in proptest::collection::vec(header_line(), 0..4),
                use_forwarded in any::<bool>(),
                trust in any::<bool>(),
            ) {
                let name = if use_forwarded { "forwarded" } else { "x-forwarded-for" };
                let headers: Vec<_> = lines.iter().map(|l| (name, l.as_str())).collect();
                let parts = parts(peer.as_deref(), &headers);
                let trusted = if trust { proxies() } else { TrustedProxies::none() };
                let trusted = trusted.header(if use_forwarded {
                    ForwardingHeader::Forwarded
                } else {
                    ForwardingHeader::XForwardedFor
                });
                let client = client_addr(&parts, &trusted);
                let peer = peer.map(|p| ip(&p).to_canonical());
                match (peer, client) {
                    (None, client) => prop_assert_eq!(client, None),
                    (Some(peer), None) => prop_assert!(false, "peer {} known, no client", peer),
                    (Some(peer), Some(client)) => {
                        if !trusted.contains(peer) {
                            prop_assert_eq!(client, peer);
                        } else if client != peer {
                            prop_assert!(
                                addresses_in(&lines.join(",")).contains(&client),
                                "{} is neither the peer nor in {:?}", client, lines
                            );
                        }
                    }
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(
                lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
                use_forwarded in any::<bool>(),
            ) {
                let mut parts = parts(Some("10.0.0.1"), &[]);
                let name = if use_forwarded { FORWARDED } else { HeaderName::from_static("x-forwarded-for") };
                for line in &lines {
                    if let Ok(value) = http::HeaderValue::from_bytes(line) {
                        parts.headers.append(name.clone(), value);
                    }
                }
                let header = if use_forwarded { ForwardingHeader::Forwarded } else { ForwardingHeader::XForwardedFor };
                prop_assert!(client_addr(&parts, &proxies().header(header)).is_some());
            }
        }
    }
}
