//! The list values `weft init` takes on its command line (and the injector
//! checks in annotations before it passes them on): ports and port
//! ranges (`4190,4191`, `8000-8100`) and IPv4 CIDRs (`10.0.0.0/8,192.0.2.7`).

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

/// Why a list value was refused. Clap puts the flag and the whole value in
/// front of this, so each message names only the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("empty entry (two commas in a row, or a comma at an end)")]
    EmptyEntry,
    #[error("`{0}` is not a port: ports are whole numbers from 1 to 65535")]
    NotAPort(String),
    #[error("`{0}` is not a port range: write low-high with ports from 1 to 65535")]
    NotARange(String),
    #[error("range `{0}` ends before it starts: write it low-high")]
    ReversedRange(String),
    #[error("`{value}` is not a CIDR like 10.0.0.0/8 or 2001:db8::/32, nor an IP address: {reason}")]
    NotACidr { value: String, reason: String },
    #[error("`{value}` has host bits set: the network is {network}")]
    HostBitsSet { value: String, network: IpNet },
}

/// One port or an inclusive range of ports, never containing port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// A single port. Port 0 is refused: it never appears on the wire.
    pub fn single(port: u16) -> Result<Self, ListError> {
        Self::new(port, port)
    }

    /// The ports `first..=last`.
    pub fn new(first: u16, last: u16) -> Result<Self, ListError> {
        if first == 0 {
            return Err(ListError::NotAPort("0".into()));
        }
        if last < first {
            return Err(ListError::ReversedRange(format!("{first}-{last}")));
        }
        Ok(Self { first, last })
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How this range is written for iptables' multiport match (`a:b`).
    pub fn to_iptables(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }

    /// The multiport match holds at most 15 "ports", and a range costs two.
    pub fn multiport_slots(&self) -> usize {
        if self.first == self.last {
            1
        } else {
            2
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn parse_port(text: &str) -> Result<u16, ListError> {
    // u16::from_str accepts a leading `+`; a port list never needs one.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ListError::NotAPort(text.to_owned()));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(ListError::NotAPort(text.to_owned())),
        Ok(port) => Ok(port),
    }
}

impl FromStr for PortRange {
    type Err = ListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ListError::EmptyEntry);
        }
        match s.split_once('-') {
            None => Self::single(parse_port(s)?),
            Some((first, last)) => {
                let side = |text: &str| {
                    parse_port(text.trim()).map_err(|_| ListError::NotARange(s.to_owned()))
                };
                let (first, last) = (side(first)?, side(last)?);
                Self::new(first, last).map_err(|_| ListError::ReversedRange(s.to_owned()))
            }
        }
    }
}

/// Splits a comma separated list; an empty (or all blank) value is the empty
/// list, so `--skip-inbound-ports ""` turns the default skips off.
fn parse_list<T>(
    s: &str,
    item: impl Fn(&str) -> Result<T, ListError>,
) -> Result<Vec<T>, ListError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|entry| item(entry.trim())).collect()
}

fn join<T: fmt::Display>(items: &[T], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// A comma separated list of ports and ranges, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<PortRange>);

impl FromStr for PortList {
    type Err = ListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s, PortRange::from_str).map(PortList)
    }
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(&self.0, f)
    }
}

/// Parses one IPv4 or IPv6 network; a bare address means that host (`/32`,
/// `/128`).
pub fn parse_cidr(s: &str) -> Result<IpNet, ListError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ListError::EmptyEntry);
    }
    let not_a_cidr = |reason: String| ListError::NotACidr { value: s.to_owned(), reason };
    let net = if s.contains('/') {
        s.parse::<IpNet>().map_err(|e| not_a_cidr(e.to_string()))?
    } else {
        IpNet::from(s.parse::<std::net::IpAddr>().map_err(|e| not_a_cidr(e.to_string()))?)
    };
    // iptables would silently mask `10.1.2.3/8` to 10.0.0.0/8; that is far
    // more often a typo (a wrong prefix length) than what was meant.
    if net.trunc() != net {
        return Err(ListError::HostBitsSet {
            value: s.to_owned(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// A comma separated list of IPv4 and IPv6 CIDRs, as given on the command
/// line; each family's rules get that family's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpNet>);

impl FromStr for CidrList {
    type Err = ListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s, parse_cidr).map(CidrList)
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> Result<Vec<(u16, u16)>, ListError> {
        s.parse::<PortList>()
            .map(|l| l.0.iter().map(|r| (r.first(), r.last())).collect())
    }

    #[test]
    fn ports_and_ranges_parse() {
        assert_eq!(
            ports("4190,4191").unwrap(),
            vec![(4190, 4190), (4191, 4191)]
        );
        assert_eq!(
            ports(" 80 , 8000-8100,65535").unwrap(),
            vec![(80, 80), (8000, 8100), (65535, 65535)]
        );
        assert_eq!(ports("1-1").unwrap(), vec![(1, 1)]);
        assert_eq!(ports("").unwrap(), vec![]);
        assert_eq!(ports("  ").unwrap(), vec![]);
    }

    #[test]
    fn bad_ports_are_refused_naming_the_entry() {
        assert_eq!(ports("0").unwrap_err(), ListError::NotAPort("0".into()));
        assert_eq!(
            ports("80,65536").unwrap_err(),
            ListError::NotAPort("65536".into())
        );
        assert_eq!(
            ports("http").unwrap_err(),
            ListError::NotAPort("http".into())
        );
        assert_eq!(ports("+80").unwrap_err(), ListError::NotAPort("+80".into()));
        assert_eq!(ports("-5").unwrap_err(), ListError::NotARange("-5".into()));
        assert_eq!(ports("9-").unwrap_err(), ListError::NotARange("9-".into()));
        assert_eq!(
            ports("1-2-3").unwrap_err(),
            ListError::NotARange("1-2-3".into())
        );
        assert_eq!(
            ports("1-70000").unwrap_err(),
            ListError::NotARange("1-70000".into())
        );
        assert_eq!(
            ports("4191-4190").unwrap_err(),
            ListError::ReversedRange("4191-4190".into())
        );
        assert_eq!(ports("80,,81").unwrap_err(), ListError::EmptyEntry);
        assert_eq!(ports("80,").unwrap_err(), ListError::EmptyEntry);
        let message = ports("4191-4190").unwrap_err().to_string();
        assert!(message.contains("4191-4190"), "{message}");
    }

    #[test]
    fn port_lists_print_as_they_parse() {
        let list: PortList = "4190,8000-8100".parse().unwrap();
        assert_eq!(list.to_string(), "4190,8000-8100");
        assert_eq!(list.0[1].to_iptables(), "8000:8100");
        assert!(list.0[1].contains(8050) && !list.0[1].contains(8101));
    }

    #[test]
    fn cidrs_parse() {
        let list: CidrList = "10.0.0.0/8, 192.0.2.7,0.0.0.0/0,2001:db8::/32,2001:db8::7".parse().unwrap();
        assert_eq!(
            list.to_string(),
            "10.0.0.0/8,192.0.2.7/32,0.0.0.0/0,2001:db8::/32,2001:db8::7/128"
        );
        assert_eq!("".parse::<CidrList>().unwrap(), CidrList::default());
    }

    #[test]
    fn bad_cidrs_are_refused_naming_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "example.com",
            "10.0.0.0/",
        ] {
            match parse_cidr(bad) {
                Err(ListError::NotACidr { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let err = parse_cidr("10.1.2.3/8").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`10.1.2.3/8` has host bits set: the network is 10.0.0.0/8"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/32").unwrap_err().to_string(),
            "`2001:db8::1/32` has host bits set: the network is 2001:db8::/32"
        );
        assert_eq!(
            "10.0.0.0/8,,".parse::<CidrList>().unwrap_err(),
            ListError::EmptyEntry
        );
    }
}
