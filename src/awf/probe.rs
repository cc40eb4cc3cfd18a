//! `llm-keyproxy health [URL]`: a probe for container healthchecks in images without curl.
//! Plain HTTP/1.1 GET over TCP; no proxy environment variables apply; exit 0 iff 200.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `health` probes when no URL is given: the admin listener's readiness.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9901/ready";
/// How long the whole probe may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes `url`; `Ok(())` iff it answered 200, else one line saying why.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let (authority, path) = split_url(url)?;
    let attempt = async {
        let mut s = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: llm-keyproxy-health\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {authority}: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| format!("no answer from {authority}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line.split_whitespace().nth(1).unwrap_or("");
        match status {
            "200" => Ok(()),
            "" => Err(format!("{url} closed the connection without a status")),
            other => Err(format!("{url} answered {other}")),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{url} did not answer within {}",
            crate::config::show_duration(timeout)
        )),
    }
}

fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok((authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9901/ready"),
            Ok(("127.0.0.1:9901", "/ready"))
        );
        assert_eq!(split_url("http://h:1"), Ok(("h:1", "/")));
        assert!(split_url("https://h/").is_err());
    }
}
