//! The mock's cloud routes end to end over TLS: GitHub OIDC -> AWS STS -> Bedrock (JSON and
//! event streams), Google service-account / federated / impersonated tokens -> Vertex AI, Entra
//! ID -> Azure OpenAI, token expiry and the fail switch, and the `/mock/cloud/*` and
//! `/mock/requests` controls.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{call, client, TestClient};
use http::{Method, StatusCode};
use mock_upstream::{
    bedrock_usage, decode_event_stream, expected_text, google_service_account_json, CloudService,
    MockConfig, MockUpstream,
};
use serde_json::{json, Value};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";

fn v(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("json body")
}

/// The text of XML element `tag` (first occurrence).
fn xml_text<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).expect(tag) + open.len();
    let end = xml[start..].find('<').unwrap() + start;
    &xml[start..end]
}

/// `form_urlencoded`-style encoding good enough for the test's values.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    parts.join("&")
}

async fn oidc_token(c: &TestClient, audience: &str) -> String {
    let path = format!("/oidc/token?api-version=2.0&audience={audience}");
    let auth = [("authorization", "Bearer req-token")];
    let (st, _, body) = call(c, Method::GET, &path, &auth, "").await;
    assert_eq!(st, StatusCode::OK);
    v(&body)["value"].as_str().unwrap().to_owned()
}

async fn assume_role(c: &TestClient, jwt: &str) -> (StatusCode, String) {
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", "arn:aws:iam::123456789012:role/agent"),
        ("RoleSessionName", "keyproxy"),
        ("WebIdentityToken", jwt),
    ]);
    let ct = [("content-type", "application/x-www-form-urlencoded")];
    let (st, _, body) = call(c, Method::POST, "/sts/", &ct, body).await;
    (st, String::from_utf8(body).unwrap())
}

/// SigV4-shaped headers (the mock checks the shape, not the signature).
fn sigv4(akid: &str, session: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("authorization", format!("AWS4-HMAC-SHA256 Credential={akid}/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature={}", "ab".repeat(32))),
        ("x-amz-date", "20261204T080000Z".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    if let Some(s) = session {
        h.push(("x-amz-security-token", s.to_owned()));
    }
    h
}

async fn bedrock(
    c: &TestClient,
    op: &str,
    headers: &[(&'static str, String)],
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("/model/{MODEL}/{op}");
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[]}"#;
    call(c, Method::POST, &path, &h, body).await
}

#[tokio::test]
async fn oidc_to_sts_to_bedrock_with_expiry_and_failures() {
    let cfg = MockConfig {
        oidc_request_token: Some("req-token".into()),
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(cfg).await.unwrap();
    let c = client(&mock, true);

    let (st, _, _) = call(&c, Method::GET, "/oidc/token?audience=x", &[], "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let jwt = oidc_token(&c, "sts.amazonaws.com").await;
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["iss"], "https://token.actions.githubusercontent.com");

    let wrong_aud = oidc_token(&c, "api://AzureADTokenExchange").await;
    let (st, xml) = assume_role(&c, &wrong_aud).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(xml_text(&xml, "Code"), "InvalidIdentityToken");

    let (st, xml) = assume_role(&c, &jwt).await;
    assert_eq!(st, StatusCode::OK, "{xml}");
    let akid = xml_text(&xml, "AccessKeyId").to_owned();
    let session = xml_text(&xml, "SessionToken").to_owned();
    assert!(akid.starts_with("ASIAMOCK"), "{akid}");
    assert!(xml_text(&xml, "Expiration").ends_with('Z'));
    assert_eq!(
        xml_text(&xml, "SubjectFromWebIdentityToken"),
        "repo:o/r:ref:refs/heads/main"
    );
    let issued = mock.aws_issued_credentials();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].access_key_id, akid);
    assert_eq!(issued[0].session_token, session);
    assert_eq!(mock.issued_tokens(CloudService::AwsSts), 1);
    assert_eq!(mock.issued_tokens(CloudService::Oidc), 2);

    let (st, hdrs, body) = bedrock(&c, "invoke", &sigv4(&akid, Some(&session))).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (input, output) = bedrock_usage(5);
    assert_eq!(
        hdrs["x-amzn-bedrock-input-token-count"],
        input.to_string().as_str()
    );
    assert_eq!(
        hdrs["x-amzn-bedrock-output-token-count"],
        output.to_string().as_str()
    );
    let answer = v(&body);
    assert_eq!(answer["content"][0]["text"], expected_text(5).as_str());
    assert_eq!(answer["model"], "anthropic.claude-3-5-sonnet-20240620-v1:0");
    assert_eq!(answer["usage"]["output_tokens"], output);

    let (st, hdrs, _) = bedrock(&c, "invoke", &sigv4(&akid, Some("other"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(hdrs["x-amzn-errortype"], "UnrecognizedClientException");
    let (st, hdrs, _) = bedrock(&c, "invoke", &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        hdrs["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );

    mock.expire_issued_tokens();
    let (st, hdrs, body) = bedrock(&c, "invoke", &sigv4(&akid, Some(&session))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(hdrs["x-amzn-errortype"], "ExpiredTokenException");
    assert_eq!(
        v(&body)["message"],
        "The security token included in the request is expired"
    );

    mock.set_token_service_failure(true);
    let (st, xml) = assume_role(&c, &jwt).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(xml_text(&xml, "Code"), "ServiceUnavailable");
    mock.set_token_service_failure(false);

    // The stats remember the token-service requests, without the web identity token.
    let stats = mock.cloud_stats();
    assert_eq!(stats["issued"]["aws_sts"], 1);
    let last = &stats["requests"].as_array().unwrap().last().unwrap()["form"];
    assert_eq!(last["RoleSessionName"], "keyproxy");
    assert!(last.get("WebIdentityToken").is_none());
}

#[tokio::test]
async fn bedrock_static_key_and_event_streams() {
    let cfg = MockConfig {
        aws_access_key_id: Some("AKIASTATIC0000000001".into()),
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(cfg).await.unwrap();
    for h2 in [true, false] {
        let c = client(&mock, h2);
        let (st, hdrs, _) = bedrock(&c, "converse", &sigv4("AKIAOTHER00000000001", None)).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert_eq!(hdrs["x-amzn-errortype"], "UnrecognizedClientException");

        let mut h = sigv4("AKIASTATIC0000000001", None);
        h.push(("x-mock-chunks", "3".into()));
        h.push(("x-mock-gap-ms", "1".into()));
        let (input, output) = bedrock_usage(3);
        let (st, _, body) = bedrock(&c, "converse", &h).await;
        assert_eq!(st, StatusCode::OK);
        let conv = v(&body);
        assert_eq!(
            conv["output"]["message"]["content"][0]["text"],
            expected_text(3).as_str()
        );
        assert_eq!(conv["usage"]["totalTokens"], input + output);

        let mut plain = None;
        for split in ["0", "1"] {
            let mut hs = h.clone();
            hs.push(("x-mock-split-frames", split.into()));
            let (st, hdrs, body) = bedrock(&c, "invoke-with-response-stream", &hs).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(hdrs["content-type"], "application/vnd.amazon.eventstream");
            let msgs = decode_event_stream(&body).unwrap();
            let events: Vec<Value> = msgs
                .iter()
                .map(|m| {
                    assert_eq!(m.header(":event-type"), Some("chunk"));
                    assert_eq!(m.header(":message-type"), Some("event"));
                    let bytes = v(&m.payload)["bytes"].as_str().unwrap().to_owned();
                    v(&STANDARD.decode(bytes).unwrap())
                })
                .collect();
            let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
            assert_eq!(kinds.len(), 3 + 5, "{kinds:?}");
            assert_eq!(kinds[0], "message_start");
            assert_eq!(events[0]["message"]["usage"]["input_tokens"], input);
            let text: String = events[2..5]
                .iter()
                .map(|e| e["delta"]["text"].as_str().unwrap())
                .collect();
            assert_eq!(text, expected_text(3));
            assert_eq!(events[6]["usage"]["output_tokens"], output);
            let metrics = &events[7]["amazon-bedrock-invocationMetrics"];
            assert_eq!(metrics["inputTokenCount"], input);
            assert_eq!(metrics["outputTokenCount"], output);
            // Split frames carry the same bytes (ids aside), so they decode the same.
            let shape: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
            assert_eq!(plain.get_or_insert(shape.clone()), &shape);
        }

        let (st, _, body) = bedrock(&c, "converse-stream", &h).await;
        assert_eq!(st, StatusCode::OK);
        let msgs = decode_event_stream(&body).unwrap();
        let kinds: Vec<&str> = msgs
            .iter()
            .map(|m| m.header(":event-type").unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        let meta = v(&msgs[6].payload);
        assert_eq!(meta["usage"]["outputTokens"], output);
    }
}

/// A service-account assertion signed with the key in the mock's service-account JSON.
fn sa_assertion(sa: &Value, scope: &str) -> String {
    let pem = sa["private_key"].as_str().unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&STANDARD.decode(b64).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": sa["client_email"], "aud": sa["token_uri"], "scope": scope,
        "iat": now, "exp": now + 3600});
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let input = format!("{head}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0; pair.public().modulus_len()];
    let rng = ring::rand::SystemRandom::new();
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &rng,
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

const VERTEX: &str = "/v1/projects/p/locations/us-east5/publishers";

#[tokio::test]
async fn google_tokens_to_vertex() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let c = client(&mock, true);
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let sa: Value = serde_json::from_str(&google_service_account_json(&format!(
        "https://{}/google/token",
        mock.addr()
    )))
    .unwrap();
    let gemini = format!("{VERTEX}/google/models/gemini-2.5-flash:generateContent");

    let (st, _, body) = call(&c, Method::POST, &gemini, &[], "{}").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v(&body)["error"]["status"], "UNAUTHENTICATED");

    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let bad = form(&[
        ("grant_type", grant),
        ("assertion", &sa_assertion(&sa, "email")),
    ]);
    let (st, _, body) = call(&c, Method::POST, "/google/token", &[ct], bad).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v(&body)["error"], "invalid_grant");
    let scope = "https://www.googleapis.com/auth/cloud-platform";
    let good = form(&[
        ("grant_type", grant),
        ("assertion", &sa_assertion(&sa, scope)),
    ]);
    let (st, _, body) = call(&c, Method::POST, "/google/token", &[ct], good).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let token = v(&body)["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ya29.mock-1-"));

    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str()), ("x-mock-chunks", "2")];
    let (st, _, body) = call(&c, Method::POST, &gemini, &auth, "{}").await;
    assert_eq!(st, StatusCode::OK);
    let text = &v(&body)["candidates"][0]["content"]["parts"][0]["text"];
    assert_eq!(text, expected_text(2).as_str());
    let claude = format!("{VERTEX}/anthropic/models/claude-sonnet-4-5:streamRawPredict");
    let (st, hdrs, body) = call(&c, Method::POST, &claude, &auth, "{}").await;
    assert_eq!(st, StatusCode::OK);
    assert!(hdrs["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("event: message_stop"));

    // Workload identity federation: OIDC -> Google STS -> (direct, and impersonated) Vertex.
    let pool =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/gh";
    let jwt = oidc_token(&c, &format!("https:{pool}")).await;
    let sts = form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", pool),
        ("scope", scope),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token", &jwt),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ]);
    let (st, _, body) = call(&c, Method::POST, "/google/sts/v1/token", &[ct], sts).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let fed = v(&body)["access_token"].as_str().unwrap().to_owned();
    let fed_auth = format!("Bearer {fed}");
    let (st, _, _) = call(
        &c,
        Method::POST,
        &gemini,
        &[("authorization", &fed_auth)],
        "{}",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let imp = "/google/iam/v1/projects/-/serviceAccounts/agent@p.iam.gserviceaccount.com:generateAccessToken";
    let req = json!({"scope": [scope], "lifetime": "3600s"}).to_string();
    let (st, _, body) = call(&c, Method::POST, imp, &[("authorization", &fed_auth)], req).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let imp_token = v(&body)["accessToken"].as_str().unwrap().to_owned();
    assert!(v(&body)["expireTime"].as_str().unwrap().ends_with('Z'));
    let imp_auth = format!("Bearer {imp_token}");
    let (st, _, _) = call(
        &c,
        Method::POST,
        &gemini,
        &[("authorization", &imp_auth)],
        "{}",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    for s in [
        CloudService::GoogleToken,
        CloudService::GoogleSts,
        CloudService::GoogleIam,
    ] {
        assert_eq!(mock.issued_tokens(s), 1, "{s:?}");
    }

    // Tokens issued with lifetime 0 are expired at once; API-key mode still works.
    mock.set_token_lifetime(Duration::ZERO);
    let (_, _, body) = call(
        &c,
        Method::POST,
        imp,
        &[("authorization", &fed_auth)],
        "{\"scope\":[\"s\"]}",
    )
    .await;
    let dead = format!("Bearer {}", v(&body)["accessToken"].as_str().unwrap());
    let (st, _, _) = call(&c, Method::POST, &gemini, &[("authorization", &dead)], "{}").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = call(&c, Method::POST, &gemini, &[("x-goog-api-key", "k")], "{}").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn entra_to_azure_and_controls() {
    let cfg = MockConfig {
        expected_key: Some("azure-key".into()),
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(cfg).await.unwrap();
    let c = client(&mock, false);
    let chat = "/openai/deployments/gpt-4o/chat/completions";
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

    let (st, _, resp) = call(&c, Method::POST, chat, &[("api-key", "azure-key")], body).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "no api-version");
    assert_eq!(v(&resp)["error"]["message"], "Resource not found");
    let with_version = format!("{chat}?api-version=2024-10-21");
    let (st, _, _) = call(
        &c,
        Method::POST,
        &with_version,
        &[("api-key", "wrong")],
        body,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, resp) = call(
        &c,
        Method::POST,
        &with_version,
        &[("api-key", "azure-key")],
        body,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v(&resp)["choices"][0]["message"]["content"],
        expected_text(5).as_str()
    );

    let jwt = oidc_token(&c, "api://AzureADTokenExchange").await;
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let entra = "/entra/tenant-1/oauth2/v2.0/token";
    let grant = |assertion: &str| {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app-1"),
            ("scope", "https://cognitiveservices.azure.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
    };
    let sts_jwt = oidc_token(&c, "sts.amazonaws.com").await;
    let (st, _, resp) = call(&c, Method::POST, entra, &[ct], grant(&sts_jwt)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v(&resp)["error"], "invalid_client");
    let (st, _, resp) = call(&c, Method::POST, entra, &[ct], grant(&jwt)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let token = v(&resp)["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let stream = r#"{"stream":true,"messages":[]}"#;
    let v1 = "/openai/v1/chat/completions";
    let (st, _, resp) = call(
        &c,
        Method::POST,
        v1,
        &[("authorization", &auth), ("x-mock-gap-ms", "1")],
        stream,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(String::from_utf8(resp)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));

    // Controls over HTTP, as the Python tests use them.
    let (st, _, resp) = call(&c, Method::POST, "/mock/cloud/fail?on=1", &[], "").await;
    assert_eq!(
        (st, v(&resp)["fail"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (st, _, resp) = call(&c, Method::POST, entra, &[ct], grant(&jwt)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v(&resp)["error"], "temporarily_unavailable");
    call(&c, Method::POST, "/mock/cloud/fail?on=0", &[], "").await;
    let (_, _, resp) = call(&c, Method::POST, "/mock/cloud/lifetime?secs=7", &[], "").await;
    assert_eq!(v(&resp)["lifetime_secs"], 7);
    let (_, _, resp) = call(&c, Method::POST, entra, &[ct], grant(&jwt)).await;
    assert_eq!(v(&resp)["expires_in"], 7);
    let (_, _, resp) = call(&c, Method::GET, "/mock/cloud/stats", &[], "").await;
    assert_eq!(v(&resp)["issued"]["entra"], 2);
    assert_eq!(v(&resp)["issued"]["oidc"], 2);

    let (st, _, resp) = call(&c, Method::GET, "/mock/requests?last=3", &[], "").await;
    assert_eq!(st, StatusCode::OK);
    let list = v(&resp);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "control requests are left out");
    assert_eq!(list[1]["path_and_query"], entra);
    assert_eq!(list[2]["path_and_query"], entra);
    assert_eq!(list[0]["path_and_query"], v1);
    let sent = STANDARD
        .decode(list[0]["body_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(sent, stream.as_bytes());
    let headers = list[0]["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["x-mock-gap-ms", "1"])),
        "{headers:?}"
    );
}

#[tokio::test]
async fn default_certificate_covers_the_cloud_hosts() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let cfg = std::sync::Arc::new(common::client_config(&mock, b"h2"));
    for host in [
        "bedrock-runtime.us-east-1.amazonaws.com",
        "sts.amazonaws.com",
        "oauth2.googleapis.com",
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
        "us-east5-aiplatform.googleapis.com",
        "login.microsoftonline.com",
        "my-resource.openai.azure.com",
    ] {
        let tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg.clone());
        tls.connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
}
