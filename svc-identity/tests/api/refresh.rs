use ticketing_proto::ticketing::identity::v1 as pb;
use tonic::Code;

use crate::helpers::{PASSWORD, authed, spawn_app};

fn refresh(token: &str) -> pb::RefreshTokenRequest {
    pb::RefreshTokenRequest {
        refresh_token: token.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_of_a_spent_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    app.register("rot@example.com").await;
    let first = app.login("rot@example.com").await;
    let mut client = app.client().await;

    let second = client
        .refresh_token(refresh(&first.refresh_token))
        .await
        .expect("rotates")
        .into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    client
        .get_me(authed(&second.access_token, pb::GetMeRequest {}))
        .await
        .expect("new access token works");

    // A thief replays the spent token: refused, and the legitimate newer token dies with it.
    let replay = client
        .refresh_token(refresh(&first.refresh_token))
        .await
        .expect_err("spent");
    assert_eq!(replay.code(), Code::Unauthenticated);
    assert!(replay.message().contains("already used"), "{}", replay.message());
    let after = client
        .refresh_token(refresh(&second.refresh_token))
        .await
        .expect_err("family revoked");
    assert_eq!(after.code(), Code::Unauthenticated);

    // Another login starts a fresh family.
    let other = app.login("rot@example.com").await;
    client
        .refresh_token(refresh(&other.refresh_token))
        .await
        .expect("new family works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_succeed_at_most_once() {
    let app = spawn_app().await;
    app.register("race@example.com").await;
    let tokens = app.login("race@example.com").await;
    let channel = app.channel().await;
    let tasks = (0..12).map(|_| {
        let mut client = pb::identity_service_client::IdentityServiceClient::new(channel.clone());
        let token = tokens.refresh_token.clone();
        tokio::spawn(async move {
            client
                .refresh_token(refresh(&token))
                .await
                .map(|r| r.into_inner())
        })
    });
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|s| s.code() == Code::Unauthenticated)
    );
    // The losers were reuse, so the winner's token was revoked with the family.
    let mut client = app.client().await;
    let status = client
        .refresh_token(refresh(&winners[0].refresh_token))
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_and_is_idempotent() {
    let app = spawn_app().await;
    app.register("bye@example.com").await;
    let tokens = app.login("bye@example.com").await;
    let mut client = app.client().await;
    let logout = || pb::LogoutRequest {
        refresh_token: tokens.refresh_token.clone(),
    };
    client.logout(logout()).await.expect("logs out");
    client.logout(logout()).await.expect("again is fine");
    assert_eq!(
        client
            .refresh_token(refresh(&tokens.refresh_token))
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );
    client
        .logout(pb::LogoutRequest {
            refresh_token: "rt_unknown".into(),
        })
        .await
        .expect("unknown is fine");
    let status = client
        .logout(pb::LogoutRequest {
            refresh_token: String::new(),
        })
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .refresh_token(refresh("garbage"))
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_ends_every_session() {
    let app = spawn_app().await;
    app.register("pw@example.com").await;
    let session = app.login("pw@example.com").await;
    let mut client = app.client().await;
    let wrong = client
        .change_password(authed(
            &session.access_token,
            pb::ChangePasswordRequest {
                current_password: "not my password".into(),
                new_password: "another long passphrase".into(),
            },
        ))
        .await
        .expect_err("wrong current password");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    client
        .change_password(authed(
            &session.access_token,
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "another long passphrase".into(),
            },
        ))
        .await
        .expect("changed");
    assert_eq!(
        client
            .refresh_token(refresh(&session.refresh_token))
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );
    let old = client
        .login(pb::LoginRequest {
            email: "pw@example.com".into(),
            password: PASSWORD.into(),
        })
        .await;
    assert_eq!(old.expect_err("old password").code(), Code::Unauthenticated);
    client
        .login(pb::LoginRequest {
            email: "pw@example.com".into(),
            password: "another long passphrase".into(),
        })
        .await
        .expect("new password");
}
