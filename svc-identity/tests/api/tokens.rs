use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use svc_identity::schema::signing_keys;
use ticketing_platform::auth::{AUDIENCE, AccessClaims, ISSUER, Role, SubjectKind};
use ticketing_proto::ticketing::identity::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, as_service, authed, spawn_app};

async fn get_me(app: &TestApp, token: &str) -> Result<pb::User, tonic::Status> {
    app.client()
        .await
        .get_me(authed(token, pb::GetMeRequest {}))
        .await
        .map(|r| r.into_inner())
}

fn claims_for(user_id: &str, exp_offset: i64) -> AccessClaims {
    let now = Utc::now().timestamp();
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user_id.into(),
        exp: now + exp_offset,
        iat: now,
        nbf: now - 10,
        jti: "test".into(),
        kind: SubjectKind::User,
        roles: vec![Role::Admin],
        orgs: vec![],
        scopes: vec![],
        org: None,
    }
}

/// The real active signing key, read from the database as an attacker with a DB dump could.
async fn real_key(app: &TestApp) -> (String, Vec<u8>, Vec<u8>) {
    let mut conn = app.pool.get().await.expect("conn");
    signing_keys::table
        .filter(signing_keys::retired_at.is_null())
        .select((
            signing_keys::kid,
            signing_keys::private_key,
            signing_keys::public_key,
        ))
        .first(&mut conn)
        .await
        .expect("a key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tokens_are_refused() {
    let app = spawn_app().await;
    let (_, token) = app.user(&[]).await;
    let (other, _) = app.user(&[]).await;
    get_me(&app, &token).await.expect("the untouched token works");

    // Swap the subject in the payload, keep the signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    payload["sub"] = serde_json::Value::String(other.to_string());
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(
        get_me(&app, &forged).await.expect_err("forged").code(),
        Code::Unauthenticated
    );

    // A flipped signature bit.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    sig[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(
        get_me(&app, &flipped).await.expect_err("flipped").code(),
        Code::Unauthenticated
    );

    for garbage in ["", "abc", "a.b.c", "Bearer"] {
        assert_eq!(
            get_me(&app, garbage).await.expect_err(garbage).code(),
            Code::Unauthenticated,
            "{garbage:?}"
        );
    }
    let status = app
        .client()
        .await
        .get_me(pb::GetMeRequest {})
        .await
        .expect_err("anonymous");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let app = spawn_app().await;
    let (user, _) = app.user(&[]).await;
    let (kid, _, public) = real_key(&app).await;
    let claims = claims_for(&user.to_string(), 600);

    // alg: none, no signature.
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
    for none in [format!("{header}.{body}."), format!("{header}.{body}")] {
        assert_eq!(
            get_me(&app, &none).await.expect_err("alg none").code(),
            Code::Unauthenticated
        );
    }

    // The classic confusion: HS256 keyed with the public key (raw bytes, and its JWK text).
    for secret in [public.clone(), URL_SAFE_NO_PAD.encode(&public).into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let forged =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).expect("sign");
        let status = get_me(&app, &forged).await.expect_err("hs256");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("algorithm"), "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_foreign_and_misaddressed_tokens_are_refused() {
    let app = spawn_app().await;
    let (user, _) = app.user(&[]).await;
    let (kid, private, _) = real_key(&app).await;
    let sign = |claims: &AccessClaims, kid: &str, der: &[u8]| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der)).expect("sign")
    };

    let valid = sign(&claims_for(&user.to_string(), 600), &kid, &private);
    get_me(&app, &valid)
        .await
        .expect("a correctly signed token works");

    let expired = sign(&claims_for(&user.to_string(), -3600), &kid, &private);
    let status = get_me(&app, &expired).await.expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());

    let mut wrong_aud = claims_for(&user.to_string(), 600);
    wrong_aud.aud = "someone-else".into();
    assert_eq!(
        get_me(&app, &sign(&wrong_aud, &kid, &private))
            .await
            .expect_err("aud")
            .code(),
        Code::Unauthenticated
    );

    let mut wrong_iss = claims_for(&user.to_string(), 600);
    wrong_iss.iss = "evil".into();
    assert_eq!(
        get_me(&app, &sign(&wrong_iss, &kid, &private))
            .await
            .expect_err("iss")
            .code(),
        Code::Unauthenticated
    );

    // A key the service never published, under a made-up kid and under the real kid.
    let foreign = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&foreign).expect("der");
    let claims = claims_for(&user.to_string(), 600);
    let status = get_me(&app, &sign(&claims, "unknown-kid", der.as_bytes()))
        .await
        .expect_err("unknown kid");
    assert!(status.message().contains("unknown key"), "{}", status.message());
    let status = get_me(&app, &sign(&claims, &kid, der.as_bytes()))
        .await
        .expect_err("foreign key");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let app = spawn_app().await;
    let (_, admin) = app.user(&[Role::Admin]).await;
    let (_, customer) = app.user(&[]).await;
    let mut client = app.client().await;
    let before = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(before.keys.len(), 1);
    let key = &before.keys[0];
    assert_eq!(
        (
            key.kty.as_str(),
            key.crv.as_str(),
            key.alg.as_str(),
            key.r#use.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );

    let denied = client
        .rotate_signing_key(authed(&admin, pb::RotateSigningKeyRequest {}))
        .await;
    assert_eq!(
        denied.expect_err("an admin's token").code(),
        Code::Unauthenticated
    );
    let operator = app.service_token("operator").await;
    let rotated = client
        .rotate_signing_key(as_service(&operator, pb::RotateSigningKeyRequest {}))
        .await
        .expect("rotates")
        .into_inner();
    assert_ne!(rotated.kid, key.kid);

    let after = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    let kids: Vec<_> = after.keys.iter().map(|k| k.kid.as_str()).collect();
    assert!(
        kids.contains(&key.kid.as_str()) && kids.contains(&rotated.kid.as_str()),
        "{kids:?}"
    );

    get_me(&app, &customer)
        .await
        .expect("a token signed before rotation still works");
    let (_, fresh) = app.user(&[]).await;
    let header = jsonwebtoken::decode_header(&fresh).expect("header");
    assert_eq!(
        header.kid.as_deref(),
        Some(rotated.kid.as_str()),
        "new tokens use the new key"
    );
    get_me(&app, &fresh).await.expect("new token works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_verifier_learns_a_rotated_key_on_its_first_unknown_kid() {
    use std::time::Duration;

    use ticketing_platform::{
        auth::{IdentityKeySource, TokenVerifier},
        clients::Peers,
        config::PeersConfig,
    };
    let app = spawn_app().await;
    let (_, admin) = app.user(&[Role::Admin]).await;
    // Another service's view: identity found through the platform's peer configuration.
    let peers = Peers::new(PeersConfig {
        addresses: [("identity".to_string(), app.url())].into(),
        default_timeout: Duration::from_secs(3),
        retry: Default::default(),
        credentials: Default::default(),
    });
    assert!(
        peers.channel("catalog").is_err(),
        "an unconfigured peer is a clear error"
    );
    let verifier = TokenVerifier::with_intervals(
        IdentityKeySource::new(peers.channel("identity").expect("configured")),
        Duration::from_millis(200),
        Duration::from_secs(300),
    );
    verifier
        .principal(&admin)
        .await
        .expect("verifies with the fetched JWKS");

    let mut client = app.client().await;
    let operator = app.service_token("operator").await;
    client
        .rotate_signing_key(as_service(&operator, pb::RotateSigningKeyRequest {}))
        .await
        .expect("rotates");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (_, fresh) = app.user(&[]).await;
    verifier
        .principal(&fresh)
        .await
        .expect("the unknown kid triggers a refresh");
    verifier
        .principal(&admin)
        .await
        .expect("the old key is still published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_from_config_signs_is_published_and_cannot_be_rotated_here() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let (mut config, db) = crate::helpers::test_config().await;
    config.tokens.signing_key_pem = Some(secrecy::SecretString::from(pem));
    let app = crate::helpers::spawn_with(config, db).await;
    let (_, admin) = app.user(&[Role::Admin]).await;
    let mut client = app.client().await;
    let jwks = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(
        jwks.keys[0].x,
        URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())
    );
    assert_eq!(
        jsonwebtoken::decode_header(&admin).expect("header").kid,
        Some(jwks.keys[0].kid.clone())
    );
    get_me(&app, &admin).await.expect("tokens verify");
    let operator = app.service_token("operator").await;
    let status = client
        .rotate_signing_key(as_service(&operator, pb::RotateSigningKeyRequest {}))
        .await
        .expect_err("from config");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let mut conn = app.pool.get().await.expect("conn");
    let stored: i64 = signing_keys::table
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(stored, 0, "a configured key is never written to the database");
}
