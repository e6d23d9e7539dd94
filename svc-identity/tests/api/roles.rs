//! The role/permission matrix: every protected RPC against every kind of caller.

use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::identity::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, as_service, authed, code, spawn_app};

struct Callers {
    anonymous: String,
    customer: String,
    organizer: String,
    owner: String,
    admin: String,
    api_key: String,
}

struct Fixture {
    org: String,
    customer_id: Uuid,
    callers: Callers,
}

async fn fixture(app: &TestApp) -> Fixture {
    let gateway = app.service_token("gateway").await;
    let (customer_id, customer) = app.user(&[]).await;
    let (_, organizer) = app.user(&[Role::Organizer]).await;
    let (_, owner) = app.user(&[Role::Organizer]).await;
    let (_, admin) = app.user(&[Role::Admin]).await;
    let mut client = app.client().await;
    let org = client
        .create_organization(authed(
            &owner,
            pb::CreateOrganizationRequest {
                organization: Some(pb::Organization {
                    slug: format!("org-{}", &Uuid::new_v4().simple().to_string()[..8]),
                    display_name: "Org".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("org")
        .into_inner()
        .id;
    let key = client
        .create_api_key(authed(
            &owner,
            pb::CreateApiKeyRequest {
                organization_id: org.clone(),
                name: "k".into(),
                scopes: vec![pb::ApiKeyScope::EventsRead as i32],
                expires_at: None,
            },
        ))
        .await
        .expect("key")
        .into_inner()
        .secret;
    let api_key = client
        .verify_api_key(as_service(&gateway, pb::VerifyApiKeyRequest { secret: key }))
        .await
        .expect("verify")
        .into_inner()
        .access_token;
    Fixture {
        org,
        customer_id,
        callers: Callers {
            anonymous: String::new(),
            customer,
            organizer,
            owner,
            admin,
            api_key,
        },
    }
}

fn call<T>(token: &str, message: T) -> tonic::Request<T> {
    if token.is_empty() {
        tonic::Request::new(message)
    } else {
        authed(token, message)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_rpc_admits_exactly_the_right_callers() {
    use Code::{Ok as OK, PermissionDenied as DENIED, Unauthenticated as ANON};
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut client = app.client().await;
    let c = &f.callers;
    // Each row: the RPC, then the expected code for anonymous, customer, outside organizer,
    // owner (organizer member of the org), admin, API key of the org.
    let callers = [
        &c.anonymous,
        &c.customer,
        &c.organizer,
        &c.owner,
        &c.admin,
        &c.api_key,
    ];
    let mut failures = Vec::new();
    macro_rules! row {
        ($name:literal, [$($expected:expr),*], |$t:ident| $call:expr) => {{
            let expected = [$($expected),*];
            for (i, $t) in callers.iter().enumerate() {
                let got = $call;
                if got != expected[i] {
                    failures.push(format!("{} caller #{i}: expected {:?}, got {:?}", $name, expected[i], got));
                }
            }
        }};
    }
    row!("GetMe", [ANON, OK, OK, OK, OK, DENIED], |t| code(
        client.get_me(call(t, pb::GetMeRequest {})).await
    ));
    row!("ListUsers", [ANON, DENIED, DENIED, DENIED, OK, DENIED], |t| code(
        client.list_users(call(t, pb::ListUsersRequest::default())).await
    ));
    row!(
        "GetUser(other)",
        [ANON, OK, DENIED, DENIED, OK, DENIED],
        |t| code(
            client
                .get_user(call(
                    t,
                    pb::GetUserRequest {
                        user_id: f.customer_id.to_string()
                    }
                ))
                .await
        )
    );
    row!("GrantRole", [ANON, DENIED, DENIED, DENIED, OK, DENIED], |t| code(
        client
            .grant_role(call(
                t,
                pb::GrantRoleRequest {
                    user_id: f.customer_id.to_string(),
                    role: pb::Role::Customer as i32
                }
            ))
            .await
    ));
    row!(
        "CreateOrganization",
        [ANON, DENIED, OK, OK, OK, DENIED],
        |t| code(
            client
                .create_organization(call(
                    t,
                    pb::CreateOrganizationRequest {
                        organization: Some(pb::Organization {
                            slug: format!("o-{}", &Uuid::new_v4().simple().to_string()[..10]),
                            display_name: "O".into(),
                            ..Default::default()
                        }),
                    }
                ))
                .await
        )
    );
    row!("GetOrganization", [ANON, DENIED, DENIED, OK, OK, DENIED], |t| {
        code(
            client
                .get_organization(call(
                    t,
                    pb::GetOrganizationRequest {
                        organization_id: f.org.clone(),
                    },
                ))
                .await,
        )
    });
    row!(
        "UpdateOrganization",
        [ANON, DENIED, DENIED, OK, OK, DENIED],
        |t| code(
            client
                .update_organization(call(
                    t,
                    pb::UpdateOrganizationRequest {
                        organization: Some(pb::Organization {
                            id: f.org.clone(),
                            display_name: "Renamed".into(),
                            ..Default::default()
                        }),
                        update_mask: None,
                    }
                ))
                .await
        )
    );
    row!("ListMembers", [ANON, DENIED, DENIED, OK, OK, DENIED], |t| code(
        client
            .list_members(call(
                t,
                pb::ListMembersRequest {
                    organization_id: f.org.clone(),
                    ..Default::default()
                }
            ))
            .await
    ));
    row!("ListApiKeys", [ANON, DENIED, DENIED, OK, OK, DENIED], |t| code(
        client
            .list_api_keys(call(
                t,
                pb::ListApiKeysRequest {
                    organization_id: f.org.clone(),
                    ..Default::default()
                }
            ))
            .await
    ));
    // Internal: no end user's token is ever enough, an admin's neither (the operator's service
    // credential is; the walk over every internal RPC checks that).
    row!(
        "RotateSigningKey",
        [ANON, ANON, ANON, ANON, ANON, ANON],
        |t| code(
            client
                .rotate_signing_key(call(t, pb::RotateSigningKeyRequest {}))
                .await
        )
    );
    // Public RPCs answer everyone.
    row!("GetJwks", [OK, OK, OK, OK, OK, OK], |t| code(
        client.get_jwks(call(t, pb::GetJwksRequest {})).await
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_grant_and_revoke_roles_with_immediate_effect_but_never_demote_themselves() {
    let app = spawn_app().await;
    let (admin_id, admin) = app.user(&[Role::Admin]).await;
    let (user, token) = app.user(&[]).await;
    let mut client = app.client().await;
    let org_request = || pb::CreateOrganizationRequest {
        organization: Some(pb::Organization {
            slug: format!("o-{}", &Uuid::new_v4().simple().to_string()[..10]),
            display_name: "O".into(),
            ..Default::default()
        }),
    };
    assert_eq!(
        code(client.create_organization(authed(&token, org_request())).await),
        Code::PermissionDenied
    );
    let granted = client
        .grant_role(authed(
            &admin,
            pb::GrantRoleRequest {
                user_id: user.to_string(),
                role: pb::Role::Organizer as i32,
            },
        ))
        .await
        .expect("granted")
        .into_inner();
    assert!(granted.roles.contains(&(pb::Role::Organizer as i32)));
    // The old token still says customer, but identity authorizes on fresh state.
    client
        .create_organization(authed(&token, org_request()))
        .await
        .expect("now an organizer");

    let bad = client
        .grant_role(authed(
            &admin,
            pb::GrantRoleRequest {
                user_id: user.to_string(),
                role: 42,
            },
        ))
        .await;
    assert_eq!(bad.expect_err("unknown role").code(), Code::InvalidArgument);
    let bad = client
        .grant_role(authed(
            &admin,
            pb::GrantRoleRequest {
                user_id: "nope".into(),
                role: 2,
            },
        ))
        .await;
    assert_eq!(bad.expect_err("bad id").code(), Code::InvalidArgument);
    let missing = client
        .grant_role(authed(
            &admin,
            pb::GrantRoleRequest {
                user_id: Uuid::now_v7().to_string(),
                role: 2,
            },
        ))
        .await;
    assert_eq!(missing.expect_err("no such user").code(), Code::NotFound);
    let customer = client
        .revoke_role(authed(
            &admin,
            pb::RevokeRoleRequest {
                user_id: user.to_string(),
                role: pb::Role::Customer as i32,
            },
        ))
        .await;
    assert_eq!(
        customer.expect_err("customer stays").code(),
        Code::InvalidArgument
    );
    let me = client
        .revoke_role(authed(
            &admin,
            pb::RevokeRoleRequest {
                user_id: admin_id.to_string(),
                role: pb::Role::Admin as i32,
            },
        ))
        .await;
    assert_eq!(me.expect_err("no self demotion").code(), Code::FailedPrecondition);

    client
        .revoke_role(authed(
            &admin,
            pb::RevokeRoleRequest {
                user_id: user.to_string(),
                role: pb::Role::Organizer as i32,
            },
        ))
        .await
        .expect("revoked");
    assert_eq!(
        code(client.create_organization(authed(&token, org_request())).await),
        Code::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_admin_exists_after_start_and_keeps_its_password_across_restarts() {
    let (mut config, db) = crate::helpers::test_config().await;
    config.bootstrap_admin = Some(crate::helpers::bootstrap("Root@Example.com"));
    let first = crate::helpers::spawn_with(config.clone(), db).await;
    let token = first.login("root@example.com").await.access_token;
    let me = first
        .client()
        .await
        .get_me(authed(&token, pb::GetMeRequest {}))
        .await
        .expect("me")
        .into_inner();
    assert!(me.roles.contains(&(pb::Role::Admin as i32)) && me.roles.contains(&(pb::Role::Organizer as i32)));
    // A second start with another configured password does not reset the account's password.
    let mut again = config;
    again.bootstrap_admin = Some(svc_identity::config::BootstrapAdmin {
        email: "root@example.com".into(),
        password: secrecy::SecretString::from("a different passphrase".to_string()),
    });
    let app = svc_identity::Application::build(again).await.expect("restarts");
    drop(app);
    first.login("root@example.com").await;
}
