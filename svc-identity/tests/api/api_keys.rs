use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use svc_identity::schema::api_keys;
use ticketing_platform::auth::{IdentityKeySource, Scope, Subject, TokenVerifier};
use ticketing_proto::ticketing::identity::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_service, authed, spawn_app, violated_fields};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_shown_once_verifies_to_a_scoped_principal_and_dies_on_revocation() {
    let app = spawn_app().await;
    let gateway = app.service_token("gateway").await;
    let (_, owner) = app.user(&[ticketing_platform::auth::Role::Organizer]).await;
    let mut client = app.client().await;
    let org = app.create_org(&owner, "partner-co").await;
    let created = client
        .create_api_key(authed(
            &owner,
            pb::CreateApiKeyRequest {
                organization_id: org.clone(),
                name: "box office".into(),
                scopes: vec![
                    pb::ApiKeyScope::OrdersRead as i32,
                    pb::ApiKeyScope::EventsRead as i32,
                    pb::ApiKeyScope::OrdersRead as i32,
                ],
                expires_at: None,
            },
        ))
        .await
        .expect("created")
        .into_inner();
    let key = created.api_key.expect("key");
    assert!(created.secret.starts_with(&format!("tk_{}_", key.prefix)));
    assert_eq!(
        key.scopes,
        [
            pb::ApiKeyScope::EventsRead as i32,
            pb::ApiKeyScope::OrdersRead as i32
        ],
        "deduplicated, sorted"
    );

    // Only the hash is stored.
    let mut conn = app.pool.get().await.expect("conn");
    let stored: Vec<u8> = api_keys::table
        .select(api_keys::secret_hash)
        .first(&mut conn)
        .await
        .expect("row");
    assert_ne!(stored, created.secret.as_bytes());

    // The gateway's path: verify the key, then any service verifies the token via identity's JWKS.
    let verified = client
        .verify_api_key(as_service(
            &gateway,
            pb::VerifyApiKeyRequest {
                secret: created.secret.clone(),
            },
        ))
        .await
        .expect("valid")
        .into_inner();
    let verifier = TokenVerifier::new(IdentityKeySource::new(ticketing_platform::clients::measured(
        app.channel().await,
    )));
    let principal = verifier
        .principal(&verified.access_token)
        .await
        .expect("token verifies");
    assert_eq!(
        principal.subject,
        Subject::ApiKey {
            key_id: Uuid::parse_str(&key.id).expect("id"),
            organization_id: Uuid::parse_str(&org).expect("org")
        }
    );
    assert!(principal.require_scope(Scope::OrdersRead).is_ok());
    assert!(principal.require_scope(Scope::EventsWrite).is_err());

    let listed = client
        .list_api_keys(authed(
            &owner,
            pb::ListApiKeysRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    assert_eq!(listed.into_inner().api_keys.len(), 1);

    let mut wrong = created.secret.clone();
    wrong.pop();
    wrong.push(if created.secret.ends_with('A') { 'B' } else { 'A' });
    for bad in [wrong.as_str(), "tk_nope", "garbage"] {
        let status = client
            .verify_api_key(as_service(
                &gateway,
                pb::VerifyApiKeyRequest { secret: bad.into() },
            ))
            .await
            .expect_err(bad);
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    let revoked = client
        .revoke_api_key(authed(
            &owner,
            pb::RevokeApiKeyRequest {
                organization_id: org.clone(),
                api_key_id: key.id.clone(),
            },
        ))
        .await
        .expect("revoked")
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    let status = client
        .verify_api_key(as_service(
            &gateway,
            pb::VerifyApiKeyRequest {
                secret: created.secret.clone(),
            },
        ))
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    let active = client
        .list_api_keys(authed(
            &owner,
            pb::ListApiKeysRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    assert!(active.into_inner().api_keys.is_empty());
    let all = client
        .list_api_keys(authed(
            &owner,
            pb::ListApiKeysRequest {
                organization_id: org,
                include_revoked: true,
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    assert_eq!(all.into_inner().api_keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_fail_and_bad_key_requests_store_nothing() {
    let app = spawn_app().await;
    let gateway = app.service_token("gateway").await;
    let (_, owner) = app.user(&[ticketing_platform::auth::Role::Organizer]).await;
    let mut client = app.client().await;
    let org = app.create_org(&owner, "expiry-co").await;
    let status = client
        .create_api_key(authed(
            &owner,
            pb::CreateApiKeyRequest {
                organization_id: org.clone(),
                name: String::new(),
                scopes: vec![0, 77],
                expires_at: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
            },
        ))
        .await
        .expect_err("bad");
    assert_eq!(
        violated_fields(&status),
        ["name", "scopes[0]", "scopes[1]", "expires_at"]
    );
    let mut conn = app.pool.get().await.expect("conn");
    let count: i64 = api_keys::table
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(count, 0);

    let in_a_day = Utc::now().timestamp() + 86_400;
    let created = client
        .create_api_key(authed(
            &owner,
            pb::CreateApiKeyRequest {
                organization_id: org,
                name: "short lived".into(),
                scopes: vec![pb::ApiKeyScope::Checkin as i32],
                expires_at: Some(prost_types::Timestamp {
                    seconds: in_a_day,
                    nanos: 0,
                }),
            },
        ))
        .await
        .expect("created")
        .into_inner();
    let verified = client
        .verify_api_key(as_service(
            &gateway,
            pb::VerifyApiKeyRequest {
                secret: created.secret.clone(),
            },
        ))
        .await
        .expect("valid")
        .into_inner();
    assert!(verified.expires_in <= 300, "API key tokens are short-lived");
    // Time passes: move the expiry into the past.
    diesel::update(api_keys::table)
        .set(api_keys::expires_at.eq(Utc::now() - chrono::Duration::seconds(1)))
        .execute(&mut conn)
        .await
        .expect("expire");
    let status = client
        .verify_api_key(as_service(
            &gateway,
            pb::VerifyApiKeyRequest {
                secret: created.secret,
            },
        ))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
}
