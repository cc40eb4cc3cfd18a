//! The token services' HTTP client: one HTTP/1.1 request per call over the provider's egress
//! (direct or through its CONNECT proxy), TLS verified against the proxy's roots, the answer
//! read up to 256 KiB. Errors name the host and the service's error code, never a token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;

use crate::config::egress::ProxyTarget;
use crate::upstream::Connector;

/// Largest answer read from a token service.
const MAX_ANSWER: usize = 256 * 1024;
/// Longest a token call may take, connect included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a token service answered.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Client {
    connector: Connector,
}

impl Client {
    /// A client over `proxy` (the provider's egress), offering only HTTP/1.1.
    pub fn new(tls: &ClientConfig, proxy: Option<ProxyTarget>, connect_timeout: Duration) -> Self {
        let mut config = tls.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            connector: Connector::new(Arc::new(config), None, proxy, connect_timeout, None),
        }
    }

    /// Sends one request and reads the whole (bounded) answer, within `CALL_TIMEOUT`.
    pub async fn send(
        &self,
        method: Method,
        url: &Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        let host = url.host().unwrap_or_default().to_owned();
        match tokio::time::timeout(CALL_TIMEOUT, self.call(method, url, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{host} did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            )),
        }
    }

    async fn call(
        &self,
        method: Method,
        url: &Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        let host = url.host().unwrap_or_default().to_owned();
        let port = url.port_u16().unwrap_or(443);
        let conn = self
            .connector
            .connect(&host, port)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let authority = url.authority().map_or(host.clone(), |a| a.to_string());
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))
            .map_err(|e| format!("{host}: {e}"))?;
        let h = req.headers_mut();
        h.insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|_| format!("{host}: bad host"))?,
        );
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("llm-keyproxy/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in headers {
            h.insert(name, value);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| format!("{host}: the answer was cut or larger than {MAX_ANSWER} bytes"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// A form-encoded POST body and its content type.
pub fn form(pairs: &[(&str, &str)]) -> (Vec<(HeaderName, HeaderValue)>, Bytes) {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let headers = vec![(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    )];
    (headers, Bytes::from(s.finish()))
}

/// A bearer `authorization` header, marked sensitive.
pub fn bearer(token: &str) -> Result<(HeaderName, HeaderValue), String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token is not a valid header value".to_owned())?;
    v.set_sensitive(true);
    Ok((http::header::AUTHORIZATION, v))
}

/// An error answer summarised for logs: status, and the service's error code and message
/// (JSON `error`/`error_description`/`message`, or XML `<Code>`/`<Message>`), sanitised and
/// cut; never the body as such.
pub fn refusal(service: &str, answer: &Answer) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    let mut parts: Vec<String> = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
        let field =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let err = v.get("error");
        for s in [
            err.and_then(|e| e.as_str().map(str::to_owned)),
            err.and_then(|e| field(e, "status")),
            err.and_then(|e| field(e, "message")),
            field(&v, "error_description"),
            field(&v, "message"),
        ]
        .into_iter()
        .flatten()
        {
            parts.push(s);
        }
    } else {
        for tag in ["Code", "Message"] {
            if let Some(s) = xml_text(&text, tag) {
                parts.push(s);
            }
        }
    }
    let detail = crate::telemetry::logging::sanitize(&parts.join(": "), 200).into_owned();
    format!(
        "{service} answered {}{}",
        answer.status.as_u16(),
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        }
    )
}

/// The text of the first `<tag>...</tag>` in an XML document, entities decoded.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .trim()
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_codes_not_bodies() {
        let a = Answer {
            status: StatusCode::BAD_REQUEST,
            body: Bytes::from_static(b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Token expired</Message></Error></ErrorResponse>"),
        };
        assert_eq!(
            refusal("AWS STS", &a),
            "AWS STS answered 400 (InvalidIdentityToken: Token expired)"
        );
        let a = Answer {
            status: StatusCode::UNAUTHORIZED,
            body: Bytes::from_static(br#"{"error":"invalid_client","error_description":"AADSTS700213: no match","access_token":"x"}"#),
        };
        assert_eq!(
            refusal("Entra ID", &a),
            "Entra ID answered 401 (invalid_client: AADSTS700213: no match)"
        );
        assert_eq!(xml_text("<A>x &amp; y</A>", "A").as_deref(), Some("x & y"));
    }
}
