use std::time::Duration;

use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::{events::v1 as events, identity::v1 as pb};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::helpers::{PASSWORD, as_service, authed, spawn_app, spawn_with, test_config, violated_fields};

/// `user.registered` leaves through the outbox once per account: a refused duplicate
/// registration publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_publishes_user_registered_once() {
    let app = spawn_app().await;
    let mut tap = app.tap("user.*").await;
    let user = app.register("grace@example.com").await;
    let envelope = tap.next(Duration::from_secs(10)).await.expect("user.registered");
    assert_eq!(envelope.event_type, "user.registered");
    assert_eq!(envelope.aggregate_id, user.id);
    assert_eq!(envelope.producer, "identity");
    let registered: events::UserRegistered =
        ticketing_platform::messaging::payload(&envelope).expect("payload");
    assert_eq!(registered.user_id, user.id);
    assert_eq!(registered.email, "grace@example.com");

    let duplicate = app
        .client()
        .await
        .register(pb::RegisterRequest {
            email: "GRACE@example.com".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .expect_err("taken");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    tap.quiet_for(Duration::from_millis(1500))
        .await
        .expect("no second event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_normalises_the_email_and_makes_a_customer() {
    let app = spawn_app().await;
    let user = app.register("  Ada.Lovelace@Example.COM ").await;
    assert_eq!(user.email, "ada.lovelace@example.com");
    // Non-ASCII addresses are stored in the same lower-cased form they are looked up by.
    let unicode = app.register("ÅSA.Öberg@Example.se").await;
    assert_eq!(unicode.email, "åsa.öberg@example.se");
    app.login("åsa.ÖBERG@example.se").await;
    assert_eq!(user.roles, [pb::Role::Customer as i32]);

    let tokens = app.login("ada.lovelace@EXAMPLE.com").await;
    assert_eq!(tokens.token_type, "Bearer");
    assert!(tokens.expires_in > 0);
    let me = app
        .client()
        .await
        .get_me(authed(&tokens.access_token, pb::GetMeRequest {}))
        .await
        .expect("me");
    assert_eq!(me.into_inner().id, user.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_name_every_bad_field_and_store_nothing() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let status = client
        .register(pb::RegisterRequest {
            email: "not-an-email".into(),
            password: "short".into(),
            display_name: "x\u{7}".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["email", "password", "display_name"]);

    for (email, password) in [
        ("", PASSWORD),
        ("ok@example.com", ""),
        ("ok@example.com", "password1234"),
        ("ok@example.com", &"p".repeat(200)),
    ] {
        let status = client
            .register(pb::RegisterRequest {
                email: email.into(),
                password: password.into(),
                display_name: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?} {password:?}");
    }
    assert_eq!(app.user_count().await, 0, "bad input changed stored state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_have_exactly_one_winner() {
    let app = spawn_app().await;
    let channel = app.channel().await;
    let attempts = (0..16).map(|i| {
        let mut client = pb::identity_service_client::IdentityServiceClient::new(channel.clone());
        tokio::spawn(async move {
            // Differently spelled, equal once normalised.
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                " RACE@example.com"
            };
            client
                .register(pb::RegisterRequest {
                    email: email.into(),
                    password: PASSWORD.into(),
                    display_name: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        })
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(Code::AlreadyExists))))
        .count();
    assert_eq!((wins, taken), (1, 15), "{results:?}");
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_account_look_the_same() {
    let app = spawn_app().await;
    app.register("known@example.com").await;
    let mut client = app.client().await;
    let wrong = client
        .login(pb::LoginRequest {
            email: "known@example.com".into(),
            password: "wrong password!".into(),
        })
        .await
        .expect_err("refused");
    let unknown = client
        .login(pb::LoginRequest {
            email: "nobody@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message())
    );
}

/// A login as the gateway relays it for a client at `address`: the gateway's service token
/// vouches for the `x-client-address` it sets.
fn login_from(gateway: &str, address: &str, email: &str, password: &str) -> Request<pb::LoginRequest> {
    let mut request = as_service(
        gateway,
        pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        },
    );
    request.metadata_mut().insert(
        ticketing_platform::service_auth::CLIENT_ADDRESS_HEADER,
        address.parse().expect("ascii"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_lock_it_out_of_the_account_but_not_the_owner_elsewhere() {
    let (mut config, db) = test_config().await;
    config.login.account_threshold = 3;
    config.login.base_lockout_secs = 2;
    let app = spawn_with(config, db).await;
    let gateway = app.service_token("gateway").await;
    app.register("victim@example.com").await;
    let mut client = app.client().await;
    for _ in 0..3 {
        let status = client
            .login(login_from(
                &gateway,
                "10.0.0.1",
                "victim@example.com",
                "guess number one",
            ))
            .await
            .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // Locked now from that address: the right password is refused without being checked.
    let locked = client
        .login(login_from(&gateway, "10.0.0.1", "victim@example.com", PASSWORD))
        .await
        .expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    let details = locked.get_error_details();
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(2),
        "{retry:?}"
    );
    assert_eq!(
        details.error_info().map(|e| e.reason.as_str()),
        Some("LOGIN_LOCKED")
    );
    // The owner, elsewhere, is not locked out by someone else's guessing.
    client
        .login(login_from(&gateway, "10.0.0.99", "victim@example.com", PASSWORD))
        .await
        .expect("the owner from another address");

    // The lock expires on its own, and a success clears that address's failures.
    tokio::time::sleep(retry + Duration::from_millis(300)).await;
    client
        .login(login_from(&gateway, "10.0.0.1", "victim@example.com", PASSWORD))
        .await
        .expect("unlocked");
    for _ in 0..2 {
        let status = client
            .login(login_from(
                &gateway,
                "10.0.0.1",
                "victim@example.com",
                "one more guess",
            ))
            .await
            .expect_err("wrong");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "the counter was reset by the success"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guess_spread_over_many_addresses_locks_the_account_for_everyone() {
    let (mut config, db) = test_config().await;
    config.login.account_threshold = 3;
    config.login.account_global_threshold = 4;
    let app = spawn_with(config, db).await;
    let gateway = app.service_token("gateway").await;
    app.register("target@example.com").await;
    let mut client = app.client().await;
    for i in 0..4 {
        let status = client
            .login(login_from(
                &gateway,
                &format!("10.1.0.{i}"),
                "target@example.com",
                "a guess",
            ))
            .await
            .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let locked = client
        .login(login_from(&gateway, "10.1.0.200", "target@example.com", PASSWORD))
        .await
        .expect_err("locked for everyone");
    assert_eq!(locked.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_spraying_many_accounts_is_locked_out() {
    let (mut config, db) = test_config().await;
    config.login.address_threshold = 4;
    let app = spawn_with(config, db).await;
    let gateway = app.service_token("gateway").await;
    app.register("bystander@example.com").await;
    let mut client = app.client().await;
    for i in 0..4 {
        let status = client
            .login(login_from(
                &gateway,
                "192.0.2.7",
                &format!("guess{i}@example.com"),
                "some password",
            ))
            .await
            .expect_err("no account");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = client
        .login(login_from(
            &gateway,
            "192.0.2.7",
            "bystander@example.com",
            PASSWORD,
        ))
        .await
        .expect_err("address locked");
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Another address is unaffected.
    client
        .login(login_from(
            &gateway,
            "192.0.2.8",
            "bystander@example.com",
            PASSWORD,
        ))
        .await
        .expect("other address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_is_believed_only_from_the_gateway() {
    let (mut config, db) = test_config().await;
    config.login.address_threshold = 3;
    let app = spawn_with(config, db).await;
    app.register("bystander@example.com").await;
    let orders = app.service_token("orders").await;
    let mut client = app.client().await;
    // A sprayer calling identity directly (or as another service) who names a new address
    // with every try: the header is dropped, the connection's address counts, and it locks.
    for i in 0..3 {
        let mut forged = login_from(
            &orders,
            &format!("203.0.113.{i}"),
            &format!("x{i}@example.com"),
            "pw guess",
        );
        if i == 0 {
            forged
                .metadata_mut()
                .remove(ticketing_platform::service_auth::SERVICE_TOKEN_HEADER);
        }
        let status = client.login(forged).await.expect_err("no account");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = client
        .login(login_from(
            &orders,
            "203.0.113.77",
            "bystander@example.com",
            PASSWORD,
        ))
        .await
        .expect_err("the real address is locked");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_updates_follow_the_field_mask() {
    let app = spawn_app().await;
    let (_, token) = app.user(&[]).await;
    let mut client = app.client().await;
    let user = pb::User {
        display_name: "  Grace  ".into(),
        email: "ignored@example.com".into(),
        ..Default::default()
    };
    let updated = client
        .update_me(authed(
            &token,
            pb::UpdateMeRequest {
                user: Some(user.clone()),
                update_mask: None,
            },
        ))
        .await
        .expect("updated")
        .into_inner();
    assert_eq!(updated.display_name, "Grace");
    assert_ne!(updated.email, "ignored@example.com", "email is output-only");
    let status = client
        .update_me(authed(
            &token,
            pb::UpdateMeRequest {
                user: Some(user),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
            },
        ))
        .await
        .expect_err("email is not updatable");
    assert_eq!(violated_fields(&status), ["update_mask"]);

    // Nothing set and nothing named: nothing to change, refused.
    let blank = pb::User::default();
    let update = |user: pb::User, paths: &[&str]| {
        let mut client = client.clone();
        let token = token.clone();
        let update_mask = (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        });
        async move {
            client
                .update_me(authed(
                    &token,
                    pb::UpdateMeRequest {
                        user: Some(user),
                        update_mask,
                    },
                ))
                .await
        }
    };
    let status = update(blank.clone(), &[]).await.expect_err("nothing to change");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["update_mask"]);
    // Named, the empty value clears the name; `*` too.
    for paths in [["display_name"], ["*"]] {
        update(
            pb::User {
                display_name: "Grace".into(),
                ..Default::default()
            },
            &[],
        )
        .await
        .expect("named again");
        let cleared = update(blank.clone(), &paths).await.expect("cleared").into_inner();
        assert_eq!(cleared.display_name, "", "{paths:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_updates_follow_the_field_mask() {
    let app = spawn_app().await;
    let (_, token) = app.user(&[Role::Organizer]).await;
    let id = app
        .create_org(&token, &format!("org-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let mut client = app.client().await;
    let mut update = async |display_name: &str, paths: &[&str]| {
        client
            .update_organization(authed(
                &token,
                pb::UpdateOrganizationRequest {
                    organization: Some(pb::Organization {
                        id: id.clone(),
                        display_name: display_name.into(),
                        ..Default::default()
                    }),
                    update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
                        paths: paths.iter().map(|p| p.to_string()).collect(),
                    }),
                },
            ))
            .await
    };
    let renamed = update("Renamed", &[])
        .await
        .expect("no mask: what is set")
        .into_inner();
    assert_eq!(renamed.display_name, "Renamed");
    let nothing = update("", &[]).await.expect_err("nothing to change");
    assert_eq!(violated_fields(&nothing), ["update_mask"]);
    // Named with the empty value: the name is required, so the update is refused, not ignored.
    let required = update("", &["*"]).await.expect_err("a name is required");
    assert_eq!(violated_fields(&required), ["organization.display_name"]);
    let slug = update("X", &["slug"])
        .await
        .expect_err("the slug is not updatable");
    assert_eq!(violated_fields(&slug), ["update_mask"]);
    let kept = update("Renamed again", &["display_name"])
        .await
        .expect("named")
        .into_inner();
    assert_eq!(kept.display_name, "Renamed again");
}
