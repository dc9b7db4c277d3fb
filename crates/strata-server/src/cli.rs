//! The operator commands that talk to a running node's admin port: a minimal HTTP/1.1 client
//! (one request per connection), so the CLI needs no HTTP library.

use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest admin response the CLI reads.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// How the CLI reaches a node's admin port.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// `host:port`.
    pub addr: String,
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// With a CA file, the port speaks HTTPS and its certificate must chain to this CA.
    pub cacert: Option<std::path::PathBuf>,
}

/// Any stream the CLI's HTTP client can use.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn open(admin: &Admin) -> anyhow::Result<Box<dyn Io>> {
    let addr = &admin.addr;
    let tcp = TcpStream::connect(addr).await.with_context(|| {
        format!("cannot connect to the admin port at {addr}; is `strata serve` running?")
    })?;
    let Some(ca) = &admin.cacert else {
        return Ok(Box::new(tcp));
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(c.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(strata::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a host name or IP address"))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with the admin port at {addr}"))?;
    Ok(Box::new(tls))
}

/// Sends one request to the admin port and reads the whole response (the server closes
/// after it).
pub async fn http(admin: &Admin, method: &str, path: &str) -> anyhow::Result<HttpResponse> {
    let addr = &admin.addr;
    let token = admin.token.as_deref();
    let fut = async {
        let mut stream = open(admin).await?;
        if token.is_some_and(|t| t.contains(['\r', '\n'])) {
            bail!("the admin token must not contain line breaks");
        }
        let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("no answer from {addr} within 10 s"))?
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("malformed chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).context("malformed chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..n).context("truncated chunk")?;
        out.push_str(chunk);
        s = rest.get(n + 2..).context("truncated chunk")?;
    }
}

/// Percent-encodes a query value.
pub fn encode_query(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GETs `path` and pretty-prints its JSON; returns whether the status was 2xx.
pub async fn show(admin: &Admin, path: &str) -> anyhow::Result<bool> {
    let resp = http(admin, "GET", path).await?;
    match serde_json::from_str::<serde_json::Value>(&resp.body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{}", resp.body),
    }
    Ok((200..300).contains(&resp.status))
}

/// `strata invalidate`: exactly one of key, pattern or tag.
pub async fn invalidate(
    admin: &Admin,
    ns: &str,
    key: Option<&str>,
    pattern: Option<&str>,
    tag: Option<&str>,
) -> anyhow::Result<u64> {
    let q = match (key, pattern, tag) {
        (Some(k), None, None) => format!("key={}", encode_query(k)),
        (None, Some(p), None) => format!("pattern={}", encode_query(p)),
        (None, None, Some(t)) => format!("tag={}", encode_query(t)),
        _ => bail!("give exactly one of KEY, --pattern GLOB, --tag TAG"),
    };
    let resp = http(
        admin,
        "POST",
        &format!("/invalidate?ns={}&{q}", encode_query(ns)),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&resp.body).context("malformed answer")?;
    if resp.status != 200 {
        bail!("{}", v["error"].as_str().unwrap_or(&resp.body));
    }
    v["removed"].as_u64().context("malformed answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "{}"));
        let r = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, "abcde");
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(encode_query("a b&c*"), "a%20b%26c%2A");
    }
}
