//! The tenant's HTTP endpoints: OIDC discovery, the JWKS, `/authorize` (the hosted login page
//! is in `login`), `/oauth/token` (authorization code with PKCE, refresh tokens and client
//! credentials), `/userinfo` and `/v2/logout`.

use super::*;

fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

pub(super) async fn discovery(req: HttpRequest) -> HttpResponse {
    let base = base_url(&req);
    HttpResponse::Ok().json(json!({
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "device_authorization_endpoint": format!("{base}/oauth/device/code"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "mfa_challenge_endpoint": format!("{base}/mfa/challenge"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "registration_endpoint": format!("{base}/oidc/register"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "end_session_endpoint": format!("{base}/oidc/logout"),
        "scopes_supported": ["openid", "profile", "offline_access", "name", "given_name", "family_name", "nickname", "email", "email_verified", "picture", "created_at", "identities", "phone", "address"],
        "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "claims_supported": ["aud", "auth_time", "created_at", "email", "email_verified", "exp", "family_name", "given_name", "iat", "identities", "iss", "name", "nickname", "phone_number", "picture", "sub"],
        "request_uri_parameter_supported": false,
        "request_parameter_supported": false,
        "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
    }))
}

pub(super) async fn jwks(state: Shared) -> HttpResponse {
    let mut s = lock(&state);
    s.jwks_fetches += 1;
    let keys: Vec<Value> = s.keys.iter().map(SigningKey::jwk).collect();
    HttpResponse::Ok().json(json!({ "keys": keys }))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": error, "error_description": description}))
}

pub(super) fn redirect(location: &str) -> HttpResponse {
    HttpResponse::Found().insert_header(("location", location)).finish()
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    format!("{url}{sep}{query}")
}

/// Makes the single-use code for `user` and answers where the browser goes with it.
pub(super) fn issue_code(s: &mut State, a: &Authorization, user: TestUser) -> String {
    let code = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    s.codes.insert(
        code.clone(),
        PendingCode {
            user,
            client_id: a.client_id.clone(),
            redirect_uri: a.redirect_uri.clone(),
            challenge: a.challenge.clone(),
            nonce: a.nonce.clone(),
            scope: a.scope.clone(),
            audience: a.audience.clone(),
            issued_at: now(),
        },
    );
    let mut pairs = vec![("code", code.as_str())];
    if !a.state.is_empty() {
        pairs.push(("state", a.state.as_str()));
    }
    with_query(&a.redirect_uri, &pairs)
}

/// `GET /authorize`: the user chosen by `sign_in_as` or `login_hint` is signed in at once (tests
/// drive the flow without a page); otherwise the SSO session's person, unless `prompt=login`;
/// otherwise the login page (`prompt=none` answers `login_required` instead).
pub(super) async fn authorize(
    state: Shared,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let q = query.into_inner();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut s = lock(&state);
    if get("client_id") != s.config.client_id {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Unknown client.");
    }
    let redirect_uri = get("redirect_uri");
    if !s.config.callback_urls.contains(&redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("The redirect_uri MUST match the registered callback URL for this application: {redirect_uri}"),
        );
    }
    let state_param = get("state");
    let fail = |error: &str, description: &str| {
        redirect(&with_query(
            &redirect_uri,
            &[("error", error), ("error_description", description), ("state", &state_param)],
        ))
    };
    if get("response_type") != "code" {
        return fail("unsupported_response_type", "Unsupported response type: only code is enabled for this sandbox");
    }
    let challenge = match (q.get("code_challenge"), q.get("code_challenge_method").map(String::as_str)) {
        (Some(c), Some("S256") | None) => Some((c.clone(), "S256".to_owned())),
        (Some(c), Some("plain")) => Some((c.clone(), "plain".to_owned())),
        (Some(_), Some(_)) => return fail("invalid_request", "Unsupported code_challenge_method"),
        (None, _) => None,
    };
    let prompt = get("prompt");
    if !prompt.split(' ').all(|p| matches!(p, "" | "none" | "login" | "consent" | "select_account")) {
        return fail("invalid_request", &format!("Unsupported prompt: {prompt}"));
    }
    let authorization = Authorization {
        client_id: get("client_id"),
        redirect_uri: redirect_uri.clone(),
        state: state_param.clone(),
        challenge,
        nonce: q.get("nonce").cloned(),
        scope: q.get("scope").cloned().unwrap_or_else(|| "openid".to_owned()),
        audience: q.get("audience").cloned(),
    };
    let chosen = q.get("login_hint").filter(|h| s.users.contains_key(*h)).cloned().or_else(|| s.next_login.take());
    let forced = prompt.split(' ').any(|p| p == "login");
    let user = match chosen.and_then(|sub| s.users.get(&sub).cloned()) {
        Some(user) => Some(user),
        None if forced => None,
        None => login::session_user(&mut s, &req),
    };
    if let Some(user) = user {
        return redirect(&issue_code(&mut s, &authorization, user));
    }
    if prompt.split(' ').any(|p| p == "none") {
        return fail("login_required", "Login required");
    }
    let screen = if get("screen_hint") == "signup" { "signup" } else { "login" };
    let transaction = login::new_transaction(&mut s, authorization);
    redirect(&format!("/u/{screen}?{}", serde_urlencoded::to_string([("state", transaction)]).unwrap_or_default()))
}

fn token_params(req: &HttpRequest, body: &[u8]) -> HashMap<String, String> {
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut params: HashMap<String, String> = if json {
        serde_json::from_slice::<HashMap<String, Value>>(body)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect()
    } else {
        serde_urlencoded::from_bytes(body).unwrap_or_default()
    };
    // client_secret_basic
    if let Some(basic) =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic)
        && let Ok(text) = String::from_utf8(decoded)
        && let Some((id, secret)) = text.split_once(':')
    {
        let decode = |s: &str| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
                .ok()
                .and_then(|v| v.into_iter().next())
                .map(|(_, v)| v)
        };
        params.entry("client_id".to_owned()).or_insert_with(|| decode(id).unwrap_or_else(|| id.to_owned()));
        params.entry("client_secret".to_owned()).or_insert_with(|| decode(secret).unwrap_or_else(|| secret.to_owned()));
    }
    params
}

/// What a person's tokens are issued for.
struct Issue<'a> {
    user: &'a TestUser,
    client_id: &'a str,
    scope: &'a str,
    audience: Option<&'a str>,
    nonce: Option<&'a str>,
    /// Whether the answer carries an ID token.
    id_token: bool,
}

/// A person's access token (and ID token), as the token endpoint answers them.
fn person_tokens(s: &State, base: &str, issue: &Issue<'_>) -> HttpResponse {
    let Issue { user, client_id, scope, audience, nonce, id_token } = *issue;
    let lifetime = s.config.token_lifetime_secs;
    let iat = now();
    let issuer = format!("{base}/");
    let api = audience.map_or_else(|| s.config.audience.clone(), str::to_owned);
    let wants_openid = scope.split(' ').any(|x| x == "openid");
    let mut access = json!({
        "iss": issuer, "sub": user.sub,
        "aud": if wants_openid { json!([api, format!("{base}/userinfo")]) } else { json!(api) },
        "iat": iat, "exp": iat + lifetime, "scope": scope, "azp": client_id,
    });
    access[format!("{CLAIM_NAMESPACE}email")] = json!(user.email);
    let mut id = json!({
        "iss": issuer, "sub": user.sub, "aud": client_id, "iat": iat, "exp": iat + 36_000,
        "email": user.email, "email_verified": user.email_verified, "name": user.name,
        "sid": uuid::Uuid::new_v4().simple().to_string(),
    });
    if let Some(nonce) = nonce {
        id["nonce"] = json!(nonce);
    }
    let key = &s.keys[s.signing];
    match (sign(key, TokenType::Jwt, &access), sign(key, TokenType::Jwt, &id)) {
        (Ok(access_token), Ok(signed_id)) => {
            let mut body = json!({
                "access_token": access_token, "scope": scope, "expires_in": lifetime, "token_type": "Bearer",
            });
            if id_token {
                body["id_token"] = json!(signed_id);
            }
            HttpResponse::Ok().json(body)
        }
        _ => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "signing failed"),
    }
}

pub(super) async fn token(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let p = token_params(&req, &body);
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let base = base_url(&req);
    let mut s = lock(&state);
    let frontend = get("client_id") == s.config.client_id;
    let machine = s.config.machine_clients.iter().any(|m| m.client_id == get("client_id"));
    let secret_ok = if frontend {
        get("client_secret") == s.config.client_secret
    } else {
        s.config
            .machine_clients
            .iter()
            .any(|m| m.client_id == get("client_id") && m.client_secret == get("client_secret"))
    };
    if !(frontend || machine) || !secret_ok {
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    }
    match get("grant_type").as_str() {
        "authorization_code" if machine => oauth_error(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "Grant type 'authorization_code' not allowed for the client.",
        ),
        "authorization_code" => {
            let code = get("code");
            if s.used_codes.contains(&code) {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid authorization code");
            }
            let Some(pending) = s.codes.remove(&code) else {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid authorization code");
            };
            s.used_codes.push(code);
            if now() - pending.issued_at > 600 {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid authorization code");
            }
            if pending.redirect_uri != get("redirect_uri") || pending.client_id != get("client_id") {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Invalid redirect_uri");
            }
            if let Some((challenge, method)) = &pending.challenge {
                let verifier = get("code_verifier");
                let computed = if method == "S256" {
                    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
                } else {
                    verifier
                };
                if &computed != challenge {
                    return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Failed to verify code verifier");
                }
            }
            let issue = Issue {
                user: &pending.user,
                client_id: &pending.client_id,
                scope: &pending.scope,
                audience: pending.audience.as_deref(),
                nonce: pending.nonce.as_deref(),
                id_token: true,
            };
            person_tokens(&s, &base, &issue)
        }
        "password" | "http://auth0.com/oauth/grant-type/password-realm" if machine || !s.config.password_grant => {
            oauth_error(
                StatusCode::FORBIDDEN,
                "unauthorized_client",
                &format!("Grant type '{}' not allowed for the client.", get("grant_type")),
            )
        }
        "password" | "http://auth0.com/oauth/grant-type/password-realm" => {
            let realm = p.get("realm").map_or(login::DATABASE_CONNECTION, String::as_str);
            if realm != login::DATABASE_CONNECTION {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_request", "Connection does not exist.");
            }
            let Some(audience) = p.get("audience").filter(|a| !a.is_empty()) else {
                return oauth_error(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "No audience parameter was provided, and no default audience has been configured",
                );
            };
            if *audience != s.config.audience {
                return oauth_error(StatusCode::FORBIDDEN, "access_denied", &format!("Service not found: {audience}"));
            }
            let Some(user) = login::check_password(&s, &get("username"), &get("password")) else {
                return oauth_error(StatusCode::FORBIDDEN, "invalid_grant", "Wrong email or password.");
            };
            let scope = p.get("scope").filter(|x| !x.is_empty()).cloned().unwrap_or_else(|| "openid".to_owned());
            let openid = scope.split(' ').any(|x| x == "openid");
            let client_id = get("client_id");
            let issue = Issue {
                user: &user,
                client_id: &client_id,
                scope: &scope,
                audience: Some(audience.as_str()),
                nonce: None,
                id_token: openid,
            };
            person_tokens(&s, &base, &issue)
        }
        "client_credentials" => {
            let Some(audience) = p.get("audience").filter(|a| !a.is_empty()) else {
                return oauth_error(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "No audience parameter was provided, and no default audience has been configured",
                );
            };
            if !machine || *audience != s.config.audience {
                return oauth_error(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    &format!(
                        "Client is not authorized to access \"{audience}\". You need to create a \"client-grant\" associated to this API. See: https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants"
                    ),
                );
            }
            let iat = now();
            let claims = json!({
                "iss": format!("{base}/"), "sub": format!("{}@clients", get("client_id")),
                "aud": audience, "iat": iat, "exp": iat + 86_400, "azp": get("client_id"),
                "gty": "client-credentials",
            });
            match sign(&s.keys[s.signing], TokenType::Jwt, &claims) {
                Ok(t) => {
                    HttpResponse::Ok().json(json!({"access_token": t, "expires_in": 86_400, "token_type": "Bearer"}))
                }
                Err(_) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "signing failed"),
            }
        }
        other => oauth_error(
            StatusCode::FORBIDDEN,
            "unsupported_grant_type",
            &format!("Grant type '{other}' not allowed for the client."),
        ),
    }
}

pub(super) async fn userinfo(state: Shared, req: HttpRequest) -> HttpResponse {
    let bearer =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer else { return HttpResponse::Unauthorized().body("Unauthorized") };
    let Some(payload) = token.split('.').nth(1).and_then(|p| URL_SAFE_NO_PAD.decode(p).ok()) else {
        return HttpResponse::Unauthorized().body("Unauthorized");
    };
    let sub = serde_json::from_slice::<Value>(&payload).ok().and_then(|v| v["sub"].as_str().map(str::to_owned));
    let s = lock(&state);
    match sub.and_then(|sub| s.users.get(&sub).cloned()) {
        Some(u) => HttpResponse::Ok()
            .json(json!({"sub": u.sub, "email": u.email, "email_verified": u.email_verified, "name": u.name})),
        None => HttpResponse::Unauthorized().body("Unauthorized"),
    }
}

/// `GET /v2/logout`: ends the SSO session and goes back to an allowed URL.
pub(super) async fn logout(
    state: Shared,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut s = lock(&state);
    let mut response = match query.get("returnTo") {
        Some(to) if s.config.logout_urls.contains(to) => redirect(to),
        Some(_) => {
            return HttpResponse::BadRequest()
                .body("Oops!, something went wrong: the returnTo URL is not in the Allowed Logout URLs");
        }
        None => HttpResponse::Ok().body("OK"),
    };
    if let Ok(value) = login::end_session(&mut s, &req).parse() {
        response.headers_mut().append(actix_web::http::header::SET_COOKIE, value);
    }
    response
}
