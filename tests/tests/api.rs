//! Accounts, lands, health/metrics and the WebSocket's gatekeeping (tokens, Origin, frame size,
//! rate limits) over real HTTP and WebSocket, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use futures_util::SinkExt;
use landworld_tests::{Closed, WsClient, both_backends};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn forge(claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

both_backends!(register_login_me, |app| {
    let (s, body) = app
        .post(
            "/api/v1/auth/register",
            &json!({"username": "Ada.L", "password": "analytical", "display_name": "Ada"}),
            None,
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["username"], "Ada.L");
    assert_eq!(body["display_name"], "Ada");
    assert_eq!(body["role"], "user");
    assert!(body.get("password_hash").is_none());
    // Duplicate, case-insensitively.
    let (s, body) =
        app.post("/api/v1/auth/register", &json!({"username": "ada.l", "password": "analytical"}), None).await?;
    assert_eq!(s, 409);
    assert_eq!(body["error"]["code"], "conflict");
    // Validation.
    for (u, p) in [("ab", "longenough"), ("bad name", "longenough"), ("okname", "short")] {
        let (s, body) = app.post("/api/v1/auth/register", &json!({"username": u, "password": p}), None).await?;
        assert_eq!(s, 422, "{u}/{p}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (s, _) = app.post("/api/v1/auth/register", &json!({"username": "x"}), None).await?;
    assert_eq!(s, 422);
    let res = app
        .http
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 400);
    let body: serde_json::Value = res.json().await?;
    assert_eq!(body["error"]["code"], "bad_request");
    // Login.
    let (s, body) =
        app.post("/api/v1/auth/login", &json!({"username": "Ada.L", "password": "analytical"}), None).await?;
    assert_eq!(s, 200);
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let token = body["access_token"].as_str().unwrap().to_string();
    let (s, _) =
        app.post("/api/v1/auth/login", &json!({"username": "Ada.L", "password": "wrong-password"}), None).await?;
    assert_eq!(s, 401);
    let (s, _) = app.post("/api/v1/auth/login", &json!({"username": "nobody", "password": "whatever1"}), None).await?;
    assert_eq!(s, 401);
    let (s, me) = app.get("/api/v1/auth/me", Some(&token)).await?;
    assert_eq!(s, 200);
    assert_eq!(me["username"], "Ada.L");
    let (s, body) = app.get("/api/v1/auth/me", None).await?;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (s, _) = app.get("/api/v1/auth/me", Some("garbage")).await?;
    assert_eq!(s, 401);
    // Unknown routes and methods are JSON errors too.
    let (s, body) = app.get("/api/v1/nope", None).await?;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let res = app.http.delete(app.url("/api/v1/auth/me")).send().await?;
    assert_eq!(res.status().as_u16(), 405);
    // Oversized body.
    let big = "x".repeat(200 * 1024);
    let (s, _) = app.post("/api/v1/auth/register", &json!({"username": "big", "password": big}), None).await?;
    assert_eq!(s, 413);
    Ok(())
});

both_backends!(lands_are_seeded_and_admins_edit_them, |app| {
    let user = app.user("citizen").await?;
    let (s, body) = app.get("/api/v1/lands", Some(&user.token)).await?;
    assert_eq!(s, 200);
    let lands = body["lands"].as_array().unwrap();
    assert!(lands.len() >= 9, "{body}");
    assert!(lands.iter().all(|l| l["name"].as_str().is_some_and(|n| !n.is_empty())));
    let first = lands[0]["id"].as_str().unwrap();
    let (s, one) = app.get(&format!("/api/v1/lands/{first}"), Some(&user.token)).await?;
    assert_eq!(s, 200);
    assert_eq!(one["id"], first);
    let (s, _) = app.get(&format!("/api/v1/lands/{}", uuid::Uuid::new_v4()), Some(&user.token)).await?;
    assert_eq!(s, 404);
    let (s, _) = app.get("/api/v1/lands/not-a-uuid", Some(&user.token)).await?;
    assert!(s == 404 || s == 400, "{s}");
    let (s, _) = app.get("/api/v1/lands", None).await?;
    assert_eq!(s, 401);
    // Users may not create; admins may, inside the map and without overlap.
    let new_land = json!({"name": "Test Plot", "x": 0, "y": 0, "width": 2, "height": 2});
    let (s, _) = app.post("/api/v1/lands", &new_land, Some(&user.token)).await?;
    assert_eq!(s, 403);
    let admin = app.admin().await?;
    // Find a free 2x2 spot: try corners until one does not overlap.
    let mut created = None;
    for (x, y) in [(0, 0), (254, 0), (0, 254), (254, 254), (128, 0), (0, 128)] {
        let (s, body) = app
            .post(
                "/api/v1/lands",
                &json!({"name": "Test Plot", "x": x, "y": y, "width": 2, "height": 2}),
                Some(&admin.token),
            )
            .await?;
        if s == 201 {
            created = Some(body);
            break;
        }
        assert_eq!(s, 409, "{body}");
    }
    let created = created.expect("a free corner");
    let id = created["id"].as_str().unwrap();
    let (s, body) = app
        .post(
            "/api/v1/lands",
            &json!({"name": "Outside", "x": 250, "y": 250, "width": 10, "height": 10}),
            Some(&admin.token),
        )
        .await?;
    assert_eq!(s, 422, "{body}");
    let (s, _) = app
        .post("/api/v1/lands", &json!({"name": "", "x": 1, "y": 1, "width": 1, "height": 1}), Some(&admin.token))
        .await?;
    assert_eq!(s, 422);
    let overlap = json!({"name": "Overlap", "x": created["x"], "y": created["y"], "width": 1, "height": 1});
    let (s, _) = app.post("/api/v1/lands", &overlap, Some(&admin.token)).await?;
    assert_eq!(s, 409);
    let (s, patched) = app
        .patch(&format!("/api/v1/lands/{id}"), &json!({"name": "Renamed", "description": "tiny"}), Some(&admin.token))
        .await?;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["description"], "tiny");
    let (s, _) = app.patch(&format!("/api/v1/lands/{id}"), &json!({"name": "Nope"}), Some(&user.token)).await?;
    assert_eq!(s, 403);
    let (s, _) = app.patch(&format!("/api/v1/lands/{id}"), &json!({"width": -3}), Some(&admin.token)).await?;
    assert_eq!(s, 422);
    let (_, all) = app.get("/api/v1/lands", Some(&user.token)).await?;
    assert_eq!(all["lands"].as_array().unwrap().len(), lands.len() + 1);
    Ok(())
});

both_backends!(health_ready_metrics, |app| {
    let (s, body) = app.get("/health", None).await?;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")));
    let (s, body) = app.get("/ready", None).await?;
    assert_eq!(s, 200, "{body}");
    let user = app.user("gauge").await?;
    let (_ws, _) = app.ws(&user).await?;
    let text = app.http.get(app.url("/metrics")).send().await?.text().await?;
    for name in [
        "landworld_ws_connections",
        "landworld_avatars",
        "landworld_tick_duration_seconds_bucket",
        "landworld_tick_duration_seconds_count",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let stats = app
        .eventually("the world to publish a ticking snapshot", || async {
            let (s, stats) = app.get("/api/v1/ws/stats", Some(&user.token)).await?;
            assert_eq!(s, 200);
            Ok((stats["tick"].as_u64().unwrap() > 0 && stats["connections"].as_u64() == Some(1)).then_some(stats))
        })
        .await?;
    assert_eq!(stats["users_online"], 1);
    assert_eq!(stats["avatars"], 1);
    assert_eq!(stats["tick_hz"], 20);
    Ok(())
});

both_backends!(websocket_refuses_bad_tokens_with_4001, |app| {
    let user = app.user("keyholder").await?;
    let secret = std::fs::read_to_string(app.config.data_dir.join("jwt.key"))?;
    let secret = base64::engine::general_purpose::STANDARD.decode(secret.trim())?;
    let now = chrono::Utc::now().timestamp();
    let expired = forge(
        json!({"sub": user.id, "name": user.username, "role": "user", "iat": now - 7200, "exp": now - 3600}),
        &secret,
    );
    let wrong_key = forge(
        json!({"sub": user.id, "name": user.username, "role": "user", "iat": now, "exp": now + 3600}),
        b"0123456789abcdef0123456789abcdef",
    );
    let unknown_user = forge(
        json!({"sub": uuid::Uuid::new_v4(), "name": "ghost", "role": "user", "iat": now, "exp": now + 3600}),
        &secret,
    );
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": user.id, "name": user.username, "role": "admin", "iat": now, "exp": now + 3600}))
    );
    let mut tampered = user.token.clone();
    let mid = tampered.find('.').unwrap() + 3;
    let flipped = if &tampered[mid..=mid] == "A" { "B" } else { "A" };
    tampered.replace_range(mid..=mid, flipped);
    let base = format!("ws://{}/api/v1/ws/connect", app.addr);
    for (what, url) in [
        ("missing", base.clone()),
        ("empty", format!("{base}?token=")),
        ("garbage", format!("{base}?token=not.a.jwt")),
        ("expired", format!("{base}?token={expired}")),
        ("wrong key", format!("{base}?token={wrong_key}")),
        ("alg none", format!("{base}?token={alg_none}")),
        ("tampered", format!("{base}?token={tampered}")),
        ("unknown user", format!("{base}?token={unknown_user}")),
    ] {
        let mut ws = WsClient::connect(&url).await?;
        assert_eq!(ws.closed().await?, Closed::Code(4001), "{what}");
    }
    // The real token works.
    let (_ws, connected) = app.ws(&user).await?;
    assert_eq!(connected["type"], "connected");
    Ok(())
});

both_backends!(websocket_checks_origin, |app| {
    let user = app.user("browser").await?;
    let url = app.ws_url(&user.token);
    let mut req = url.clone().into_client_request()?;
    req.headers_mut().insert("origin", "http://evil.example".parse()?);
    let err = tokio_tungstenite::connect_async(req).await.expect_err("foreign origin refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status().as_u16(), 403),
        other => panic!("expected HTTP 403, got {other}"),
    }
    let mut req = url.clone().into_client_request()?;
    req.headers_mut().insert("origin", format!("http://{}", app.addr).parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut client = WsClient { stream: ws };
    client.expect("connected").await?;
    ws = client.stream;
    drop(ws);
    Ok(())
});

both_backends!(oversized_frames_close_with_1009, |app| {
    let user = app.user("shouter").await?;
    let (mut ws, _) = app.ws(&user).await?;
    let huge = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    // The server may close before the whole frame is written.
    let _ = ws.stream.send(tokio_tungstenite::tungstenite::Message::Text(huge.into())).await;
    assert_eq!(ws.closed().await?, Closed::Code(1009));
    // Just under the limit is fine (an error frame for the unknown field? no: extra fields pass).
    let (mut ws, _) = app.ws(&user).await?;
    let fine = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(60 * 1024));
    ws.send_text(&fine).await?;
    ws.expect("pong").await?;
    Ok(())
});

both_backends!(move_floods_are_rate_limited_then_closed_with_4008, |app| {
    let user = app.user("spammer").await?;
    let (mut ws, connected) = app.ws(&user).await?;
    let (x, y) = (connected["position"]["x"].as_i64().unwrap(), connected["position"]["y"].as_i64().unwrap());
    let frame = json!({"type": "update_location", "x": x, "y": y}).to_string();
    for _ in 0..60 {
        ws.send_text(&frame).await?;
    }
    let limited = ws.expect_where("error", |f| f["code"] == "rate_limited").await?;
    assert_eq!(limited["ref"], "update_location");
    // Keep flooding: sustained abuse closes the connection with 4008.
    for _ in 0..400 {
        if ws.send_text(&frame).await.is_err() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ws.closed().await {
            Ok(Closed::Code(code)) => {
                assert_eq!(code, 4008);
                break;
            }
            Ok(Closed::NoCode) => panic!("closed without a code"),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => {}
        }
    }
    Ok(())
});

/// Every route the router serves, as `(method, OpenAPI path)`. Adding a route to the router means
/// adding it here and to `ApiDoc` (server/src/api/mod.rs); the test below fails until the three
/// agree. The Swagger UI's static files (`/api/docs/…`) are not API routes and are left out.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("get", "/api/v1/auth/me"),
    ("get", "/api/v1/lands"),
    ("post", "/api/v1/lands"),
    ("get", "/api/v1/lands/{id}"),
    ("patch", "/api/v1/lands/{id}"),
    ("get", "/api/v1/chat/sessions"),
    ("get", "/api/v1/chat/sessions/{id}/messages"),
    ("post", "/api/v1/chat/sessions/{id}/messages"),
    ("delete", "/api/v1/chat/sessions/{id}/messages/{message_id}"),
    ("post", "/api/v1/chat/private"),
    ("post", "/api/v1/chat/groups"),
    ("post", "/api/v1/chat/groups/{id}/members"),
    ("delete", "/api/v1/chat/groups/{id}/members"),
    ("delete", "/api/v1/chat/groups/{id}/members/{user_id}"),
    ("post", "/api/v1/chat/land/{land_id}/session"),
    ("get", "/api/v1/chat/land/{land_id}/participants"),
    ("get", "/api/v1/chat/stats"),
    ("post", "/api/v1/game/connect-token"),
    ("get", "/api/v1/ws/connect"),
    ("get", "/api/v1/ws/online-users"),
    ("get", "/api/v1/ws/stats"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/docs"),
];

/// The OpenAPI document lists exactly the served routes, with the bearer scheme and the JSON
/// error shape; probing each documented operation anonymously finds a real route whose answer
/// is one of the documented statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() -> anyhow::Result<()> {
    let app = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await?.expect("sqlite");
    let res = app.http.get(app.url("/api/openapi.json")).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str()?.starts_with("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&res.text().await?)?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string());
    let description = doc["info"]["description"].as_str().unwrap_or_default();
    assert!(description.contains("/api/v1/ws/connect") && description.contains("4001"), "{description}");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert!(error["properties"]["error"].is_object(), "{error}");

    // Exactly the routes above, no more, no fewer.
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: std::collections::BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
    assert!(extra.is_empty(), "documented but not in ROUTES: {extra:?}");

    for (method, path) in ROUTES {
        let op = &doc["paths"][*path][*method];
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        // Every error response has the JSON error shape.
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
        }
        let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if secured {
            assert!(responses.contains_key("401"), "{method} {path}: secured without a 401");
        }
        // Probe: anonymous, empty JSON object for bodies, a random id for path parameters.
        let mut concrete = path.to_string();
        while let (Some(a), Some(b)) = (concrete.find('{'), concrete.find('}')) {
            concrete.replace_range(a..=b, &uuid::Uuid::new_v4().to_string());
        }
        let url = app.url(&concrete);
        let req = match *method {
            "get" => app.http.get(url),
            "post" => app.http.post(url).json(&json!({})),
            "patch" => app.http.patch(url).json(&json!({})),
            "delete" => app.http.delete(url).json(&json!({})),
            other => panic!("add {other} to the probe"),
        };
        let res = req.send().await?;
        let status = res.status().as_u16();
        let body = res.text().await?;
        assert_ne!(status, 405, "{method} {path}: documented but not routed ({body})");
        assert!(!body.contains("no such route"), "{method} {path}: documented but not routed");
        if secured {
            assert_eq!(status, 401, "{method} {path} without a token: {body}");
        }
        assert!(responses.contains_key(&status.to_string()), "{method} {path}: undocumented status {status}: {body}");
        if status >= 400 {
            let err: serde_json::Value = serde_json::from_str(&body)?;
            assert!(err["error"]["code"].is_string() && err["error"]["message"].is_string(), "{body}");
        }
    }
    Ok(())
}

/// `/api/docs` is an HTML page that loads the vendored Swagger UI (no CDN) and this server's
/// OpenAPI document; every file it references is served with the right content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_page_serves_vendored_swagger_ui() -> anyhow::Result<()> {
    let app = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await?.expect("sqlite");
    let page_url = reqwest::Url::parse(&app.url("/api/docs"))?;
    let res = app.http.get(page_url.clone()).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str()?.starts_with("text/html"));
    let html = res.text().await?;
    assert!(!html.contains("http://") && !html.contains("https://"), "the page must work offline: {html}");
    // Every src= and href= of the page.
    let mut refs = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html.as_str();
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').expect("closing quote");
            refs.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    for file in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        assert!(refs.iter().any(|r| r.ends_with(file)), "{file} not referenced: {refs:?}");
    }
    for r in &refs {
        let url = page_url.join(r)?;
        assert!(url.path().starts_with("/api/docs/"), "{url}");
        let res = app.http.get(url.clone()).send().await?;
        assert_eq!(res.status().as_u16(), 200, "{url}");
        let content_type = res.headers()["content-type"].to_str()?.to_string();
        let expected = if r.ends_with(".css") { "text/css" } else { "text/javascript" };
        assert!(content_type.starts_with(expected), "{url}: {content_type}");
        let body = res.text().await?;
        if r.ends_with("swagger-ui-bundle.js") {
            assert!(body.len() > 100_000 && body.contains("SwaggerUIBundle"), "{url}: not the Swagger UI bundle");
        }
        if r.ends_with("swagger-initializer.js") {
            // The spec URL in the initializer, relative to the page, is this server's document.
            assert!(body.contains("url: \"openapi.json\""), "{body}");
            let spec = app.http.get(page_url.join("openapi.json")?).send().await?;
            assert_eq!(spec.status().as_u16(), 200);
        }
    }
    // The trailing-slash form lands on the page too.
    let res = app.http.get(app.url("/api/docs/")).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.url().path() == "/api/docs");
    Ok(())
}

/// A client that writes any bytes it likes after the opening handshake, to check how the server
/// handles WebSocket framing itself (RFC 6455): masking, fragments, control frames, close codes.
mod raw {
    use std::time::Duration;

    use anyhow::{Result, anyhow};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct Raw {
        pub stream: TcpStream,
        buf: Vec<u8>,
    }

    /// A client frame: first byte `b0` (FIN, opcode), masked unless `masked` is false.
    pub fn frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask = [0x1f, 0x8b, 0x55, 0xc4];
        let mut out = vec![b0];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    impl Raw {
        /// Opens `/api/v1/ws/connect?token=…` and sends `early` in the same write as the
        /// request, so it reaches the server right behind the handshake.
        pub async fn connect(addr: std::net::SocketAddr, token: &str, early: &[u8]) -> Result<Self> {
            let mut stream = TcpStream::connect(addr).await?;
            let mut request = format!(
                "GET /api/v1/ws/connect?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .into_bytes();
            request.extend_from_slice(early);
            stream.write_all(&request).await?;
            let mut raw = Self { stream, buf: Vec::new() };
            let head = loop {
                if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break raw.buf.drain(..i + 4).collect::<Vec<u8>>();
                }
                raw.fill().await?;
            };
            let head = String::from_utf8(head)?;
            if !head.starts_with("HTTP/1.1 101") {
                return Err(anyhow!("upgrade refused: {head}"));
            }
            // RFC 6455's own example key and accept value.
            if !head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=") {
                return Err(anyhow!("wrong accept key: {head}"));
            }
            Ok(raw)
        }

        async fn fill(&mut self) -> Result<()> {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await??;
            if n == 0 {
                return Err(anyhow!("end of stream"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }

        /// The next server frame: its opcode and payload (server frames are never masked).
        pub async fn next(&mut self) -> Result<(u8, Vec<u8>)> {
            loop {
                if self.buf.len() >= 2 {
                    assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                    let (at, len) = match self.buf[1] & 0x7f {
                        126 if self.buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]))),
                        126 | 127 => (usize::MAX, 0),
                        n => (2, usize::from(n)),
                    };
                    if at != usize::MAX && self.buf.len() >= at + len {
                        let opcode = self.buf[0] & 0x0f;
                        let payload = self.buf[at..at + len].to_vec();
                        self.buf.drain(..at + len);
                        return Ok((opcode, payload));
                    }
                }
                self.fill().await?;
            }
        }

        /// Skips text frames until a frame with `opcode`; returns its payload.
        pub async fn until(&mut self, opcode: u8) -> Result<Vec<u8>> {
            loop {
                let (op, payload) = self.next().await?;
                if op == opcode {
                    return Ok(payload);
                }
                assert_eq!(op, 0x1, "only text frames in between");
            }
        }

        /// Skips frames until a text frame whose `type` is `kind`.
        pub async fn until_text(&mut self, kind: &str) -> Result<serde_json::Value> {
            loop {
                let payload = self.until(0x1).await?;
                let v: serde_json::Value = serde_json::from_slice(&payload)?;
                if v["type"] == kind {
                    return Ok(v);
                }
            }
        }

        /// Reads (and drops) frames until none came for `quiet`: whatever the server queued
        /// for the connection has been written.
        pub async fn settle(&mut self, quiet: Duration) -> Result<()> {
            while let Ok(frame) = tokio::time::timeout(quiet, self.next()).await {
                frame?;
            }
            Ok(())
        }

        /// Reads until the close frame; its status code.
        pub async fn close_code(&mut self) -> Result<u16> {
            let payload = self.until(0x8).await?;
            Ok(u16::from_be_bytes([payload[0], payload[1]]))
        }
    }
}

/// The server's own framing layer (it reads client frames straight off the socket): frames sent
/// right behind the handshake are read; pings get pongs with their payload; a fragmented text
/// message is joined, also around a control frame; a client's close is answered with its code;
/// an unmasked frame closes with 1002 and invalid UTF-8 with 1007 (RFC 6455); a binary frame
/// gets an `error` frame and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_framing_follows_rfc_6455() -> anyhow::Result<()> {
    use raw::{Raw, frame};
    use tokio::io::AsyncWriteExt;
    let app = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await?.expect("sqlite");
    let user = app.user("framer").await?;
    // A ping in the same TCP write as the upgrade request.
    let mut ws = Raw::connect(app.addr, &user.token, &frame(0x89, b"early", true)).await?;
    assert_eq!(ws.until(0xA).await?, b"early");
    // Fragments with a ping between them: the pong comes first, then the joined message's answer.
    let mut wire = frame(0x01, br#"{"type":"#, true);
    wire.extend(frame(0x89, b"between", true));
    wire.extend(frame(0x00, br#""pi"#, true));
    wire.extend(frame(0x80, br#"ng"}"#, true));
    ws.stream.write_all(&wire).await?;
    assert_eq!(ws.until(0xA).await?, b"between");
    ws.until_text("pong").await?;
    // Binary: an error frame, and the connection goes on.
    ws.stream.write_all(&frame(0x82, &[1, 2, 3], true)).await?;
    let err = ws.until_text("error").await?;
    assert_eq!(err["code"], "invalid_frame", "{err}");
    ws.stream.write_all(&frame(0x81, br#"{"type":"ping"}"#, true)).await?;
    ws.until_text("pong").await?;
    // The client closes with 4000: the answer carries the same code.
    ws.stream.write_all(&frame(0x88, &4000u16.to_be_bytes(), true)).await?;
    assert_eq!(ws.close_code().await?, 4000);

    // Unmasked client frame: protocol error.
    let mut ws = Raw::connect(app.addr, &user.token, &[]).await?;
    ws.until_text("connected").await?;
    ws.stream.write_all(&frame(0x81, br#"{"type":"ping"}"#, false)).await?;
    assert_eq!(ws.close_code().await?, 1002);

    // Text that is not UTF-8.
    let mut ws = Raw::connect(app.addr, &user.token, &[]).await?;
    ws.until_text("connected").await?;
    ws.stream.write_all(&frame(0x81, &[b'{', 0xff, 0xfe, b'}'], true)).await?;
    assert_eq!(ws.close_code().await?, 1007);
    Ok(())
}

/// Pings count against the frame rate like commands do: a flood gets `rate_limited` errors (with
/// a pong for each ping that was within the rate) and, sustained, the close 4008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_floods_are_rate_limited_then_closed_with_4008() -> anyhow::Result<()> {
    use raw::{Raw, frame};
    use tokio::io::AsyncWriteExt;
    let app = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await?.expect("sqlite");
    let user = app.user("pinger").await?;
    let mut ws = Raw::connect(app.addr, &user.token, &[]).await?;
    ws.until_text("connected").await?;
    // The greeting frames (presence, nearby) are out: nothing is queued ahead of the answers, so
    // they go out before the close (a close for abuse drops what is still queued).
    ws.settle(Duration::from_millis(300)).await?;
    let flood: Vec<u8> = (0..500).flat_map(|_| frame(0x89, b"x", true)).collect();
    ws.stream.write_all(&flood).await?;
    let (mut pongs, mut refused) = (0, 0);
    let code = loop {
        let (op, payload) = ws.next().await?;
        match op {
            0xA => pongs += 1,
            0x1 => {
                let v: serde_json::Value = serde_json::from_slice(&payload)?;
                if v["type"] == "error" {
                    assert_eq!(v["code"], "rate_limited", "{v}");
                    assert_eq!(v["ref"], "frame", "{v}");
                    refused += 1;
                }
            }
            0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code, 4008);
    assert!((150..=260).contains(&pongs), "about the burst was answered: {pongs}");
    assert!(refused >= 100, "the rest was refused until the close: {refused}");
    Ok(())
}
