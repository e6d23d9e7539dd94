use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::identity::v1 as pb;
use tonic::Code;

use crate::helpers::{authed, code, spawn_app, violated_fields};

fn new_org(slug: &str) -> pb::CreateOrganizationRequest {
    pb::CreateOrganizationRequest {
        organization: Some(pb::Organization {
            slug: slug.into(),
            display_name: "Acme Live".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizers_create_organizations_with_unique_valid_slugs() {
    let app = spawn_app().await;
    let (owner_id, owner) = app.user(&[Role::Organizer]).await;
    let mut client = app.client().await;
    let org = client
        .create_organization(authed(&owner, new_org("acme-live")))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(org.slug, "acme-live");
    let me = client
        .get_me(authed(&owner, pb::GetMeRequest {}))
        .await
        .expect("me")
        .into_inner();
    assert_eq!(me.memberships.len(), 1);
    assert_eq!(me.memberships[0].role, pb::MemberRole::Owner as i32);
    assert_eq!(me.id, owner_id.to_string());

    let dup = client
        .create_organization(authed(&owner, new_org("acme-live")))
        .await
        .expect_err("taken");
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad = client
        .create_organization(authed(
            &owner,
            pb::CreateOrganizationRequest {
                organization: Some(pb::Organization {
                    slug: "Bad Slug".into(),
                    display_name: " ".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("bad");
    assert_eq!(
        violated_fields(&bad),
        ["organization.slug", "organization.display_name"]
    );
    let none = client
        .create_organization(authed(
            &owner,
            pb::CreateOrganizationRequest { organization: None },
        ))
        .await;
    assert_eq!(none.expect_err("missing").code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_manage_members_and_an_organization_always_keeps_an_owner() {
    let app = spawn_app().await;
    let (owner_id, owner) = app.user(&[Role::Organizer]).await;
    let (member_id, member) = app.user(&[]).await;
    let mut client = app.client().await;
    let org = client
        .create_organization(authed(&owner, new_org("members-co")))
        .await
        .expect("org")
        .into_inner()
        .id;
    let member_email = client
        .get_me(authed(&member, pb::GetMeRequest {}))
        .await
        .expect("me")
        .into_inner()
        .email;

    let added = client
        .add_member(authed(
            &owner,
            pb::AddMemberRequest {
                organization_id: org.clone(),
                member: Some(pb::add_member_request::Member::Email(member_email.to_uppercase())),
                role: 0,
            },
        ))
        .await
        .expect("added")
        .into_inner();
    assert_eq!(
        (added.user_id.as_str(), added.role),
        (member_id.to_string().as_str(), pb::MemberRole::Member as i32)
    );

    // A plain member may read but not manage.
    client
        .list_members(authed(
            &member,
            pb::ListMembersRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("reads");
    let denied = client
        .add_member(authed(
            &member,
            pb::AddMemberRequest {
                organization_id: org.clone(),
                member: Some(pb::add_member_request::Member::UserId(owner_id.to_string())),
                role: 0,
            },
        ))
        .await;
    assert_eq!(denied.expect_err("member").code(), Code::PermissionDenied);

    // The only owner can neither leave nor be demoted.
    let leave = client
        .remove_member(authed(
            &owner,
            pb::RemoveMemberRequest {
                organization_id: org.clone(),
                user_id: owner_id.to_string(),
            },
        ))
        .await;
    assert_eq!(leave.expect_err("last owner").code(), Code::FailedPrecondition);
    let demote = client
        .add_member(authed(
            &owner,
            pb::AddMemberRequest {
                organization_id: org.clone(),
                member: Some(pb::add_member_request::Member::UserId(owner_id.to_string())),
                role: pb::MemberRole::Member as i32,
            },
        ))
        .await;
    assert_eq!(demote.expect_err("last owner").code(), Code::FailedPrecondition);

    let unknown = client
        .add_member(authed(
            &owner,
            pb::AddMemberRequest {
                organization_id: org.clone(),
                member: Some(pb::add_member_request::Member::Email("ghost@example.com".into())),
                role: 0,
            },
        ))
        .await;
    assert_eq!(unknown.expect_err("no such user").code(), Code::NotFound);
    let neither = client
        .add_member(authed(
            &owner,
            pb::AddMemberRequest {
                organization_id: org.clone(),
                member: None,
                role: 0,
            },
        ))
        .await;
    assert_eq!(neither.expect_err("no member").code(), Code::InvalidArgument);

    // A member may leave on their own.
    client
        .remove_member(authed(
            &member,
            pb::RemoveMemberRequest {
                organization_id: org.clone(),
                user_id: member_id.to_string(),
            },
        ))
        .await
        .expect("leaves");
    let members = client
        .list_members(authed(
            &owner,
            pb::ListMembersRequest {
                organization_id: org,
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    assert_eq!(members.into_inner().members.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_paginate_stably_and_refuse_forged_page_tokens() {
    let app = spawn_app().await;
    let (_, admin) = app.user(&[Role::Admin]).await;
    let mut client = app.client().await;
    for i in 0..5 {
        client
            .create_organization(authed(&admin, new_org(&format!("page-org-{i}"))))
            .await
            .expect("org");
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_organizations(authed(
                &admin,
                pb::ListOrganizationsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                },
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.organizations.len() <= 2);
        seen.extend(page.organizations.into_iter().map(|o| o.slug));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(seen, (0..5).map(|i| format!("page-org-{i}")).collect::<Vec<_>>());

    for (size, token) in [(-1, ""), (2, "forged!"), (2, "eyJ0IjoxfQ")] {
        let status = client
            .list_organizations(authed(
                &admin,
                pb::ListOrganizationsRequest {
                    page_size: size,
                    page_token: token.into(),
                },
            ))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{size} {token}");
    }
    let users = client
        .list_users(authed(
            &admin,
            pb::ListUsersRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("users");
    assert_eq!(users.into_inner().users.len(), 1);
    let admins = client
        .list_users(authed(
            &admin,
            pb::ListUsersRequest {
                role: pb::Role::Admin as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("admins")
        .into_inner();
    assert_eq!(admins.users.len(), 1);
    assert!(
        admins.users[0].roles.contains(&(pb::Role::Admin as i32)),
        "listed users carry their roles"
    );
    assert_eq!(
        admins.users[0].memberships.len(),
        5,
        "and their memberships (the five organizations above)"
    );
    assert_eq!(
        code(
            client
                .list_users(authed(
                    &admin,
                    pb::ListUsersRequest {
                        role: 99,
                        ..Default::default()
                    }
                ))
                .await
        ),
        Code::InvalidArgument
    );
}
