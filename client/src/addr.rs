//! SERVER arguments: `host`, `host:port`, `[v6addr]:port`, or a bare address.

use std::net::IpAddr;

use ft_protocol::DEFAULT_PORT;

use crate::error::UsageError;

/// Splits SERVER into a host to resolve and a port (7878 when none is given).
pub fn parse_server(server: &str) -> Result<(String, u16), UsageError> {
    let bad = || UsageError::Server(server.to_owned());
    if server.is_empty() {
        return Err(bad());
    }
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => after
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?,
        };
        return Ok((host.to_owned(), port));
    }
    match server.rsplit_once(':') {
        None => Ok((server.to_owned(), DEFAULT_PORT)),
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_users_write() {
        let ok = |s: &str, host: &str, port| {
            assert_eq!(parse_server(s).ok(), Some((host.into(), port)), "{s}")
        };
        ok("example.org", "example.org", 7878);
        ok("example.org:9000", "example.org", 9000);
        ok("127.0.0.1", "127.0.0.1", 7878);
        ok("127.0.0.1:0", "127.0.0.1", 0);
        ok("[::1]:8080", "::1", 8080);
        ok("[::1]", "::1", 7878);
        ok("::1", "::1", 7878);
        for bad in [
            "",
            "host:",
            "host:99999",
            "[::1",
            "[::1]8080",
            "[nothost]:1",
            ":80",
            "a:b:c",
        ] {
            assert!(
                matches!(parse_server(bad), Err(UsageError::Server(s)) if s == bad),
                "{bad}"
            );
        }
    }
}
