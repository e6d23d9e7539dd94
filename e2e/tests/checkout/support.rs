//! The support chat: who may read and write a conversation, live delivery to both sides,
//! unread counts, closing and reopening, and bad input.

use std::time::Duration;

use ticketing_e2e::services::{self, Running, Wiring};
use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::notify::v1::{self as npb, notify_service_client::NotifyServiceClient};
use ticketing_testkit::SmtpSink;
use tonic::{Code, transport::Channel};

use crate::helpers::*;

async fn notify(stack: &Stack, smtp: &SmtpSink) -> Running<svc_notify::config::Config> {
    let wiring = Wiring {
        identity: &stack.identity,
        broker: &stack.broker,
        redis_prefix: "notify-unused",
    };
    services::notify(&wiring, &smtp.url(), |_| {}).await
}

fn client(notify: &Running<svc_notify::config::Config>) -> NotifyServiceClient<Channel> {
    NotifyServiceClient::new(notify.channel.clone())
}

async fn next_message(stream: &mut tonic::Streaming<npb::ChatMessage>) -> npb::ChatMessage {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("in time")
        .expect("a message")
        .expect("not closed")
}

#[tokio::test]
async fn a_conversation_is_the_buyers_and_the_organizations_and_nobody_elses() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    let (_, buyer) = stack.buyer().await;
    let (_, other_buyer) = stack.buyer().await;
    let (other_org, other_staff) = stack.identity.organizer().await;
    let (_, admin) = stack.identity.user(&[Role::Admin]).await;
    let paid = stack.checkout(&buyer, &sale, &sale.seats[..1]).await;
    let mut notify_client = client(&notify);
    // order.created reaches notify a moment after the order exists.
    let mut opened = None;
    for _ in 0..100 {
        match notify_client
            .open_conversation(authed(
                &buyer,
                npb::OpenConversationRequest {
                    subject: "Wheelchair access".into(),
                    body: "Is there step-free access to row A?".into(),
                    order_id: paid.id.clone(),
                },
            ))
            .await
        {
            Ok(c) => {
                opened = Some(c.into_inner());
                break;
            }
            Err(e) if e.code() == Code::InvalidArgument => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("open: {e}"),
        }
    }
    let conversation = opened.expect("opened");
    assert_eq!(conversation.organization_id, sale.org.to_string());
    assert_eq!(conversation.status, npb::ConversationStatus::Open as i32);
    let id = conversation.id.clone();

    // Not one of their orders; bad text: refused, nothing stored.
    for (request, field) in [
        (
            npb::OpenConversationRequest {
                subject: "Mine?".into(),
                body: "Hello".into(),
                order_id: paid.id.clone(),
            },
            "order_id",
        ),
        (
            npb::OpenConversationRequest {
                subject: "  ".into(),
                body: "Hello".into(),
                ..Default::default()
            },
            "subject",
        ),
        (
            npb::OpenConversationRequest {
                subject: "Long".into(),
                body: "x".repeat(4001),
                ..Default::default()
            },
            "body",
        ),
    ] {
        let refused = notify_client
            .open_conversation(authed(&other_buyer, request))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(ticketing_e2e::violated_fields(&refused), vec![field.to_string()]);
    }
    let theirs = notify_client
        .list_conversations(authed(&other_buyer, npb::ListConversationsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(theirs.conversations.is_empty(), "nothing stored");

    // The matrix: another buyer and another organization's staff see nothing.
    for outsider in [&other_buyer, &other_staff] {
        let get = notify_client
            .get_conversation(authed(
                outsider,
                npb::GetConversationRequest {
                    conversation_id: id.clone(),
                },
            ))
            .await
            .expect_err("hidden");
        assert_eq!(get.code(), Code::NotFound);
        let post = notify_client
            .post_message(authed(
                outsider,
                npb::PostMessageRequest {
                    conversation_id: id.clone(),
                    body: "let me in".into(),
                },
            ))
            .await
            .expect_err("hidden");
        assert_eq!(post.code(), Code::NotFound);
        let list = notify_client
            .list_messages(authed(
                outsider,
                npb::ListMessagesRequest {
                    conversation_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("hidden");
        assert_eq!(list.code(), Code::NotFound);
        let watch = notify_client
            .watch_conversation(authed(
                outsider,
                npb::WatchConversationRequest {
                    conversation_id: id.clone(),
                },
            ))
            .await
            .expect_err("hidden");
        assert_eq!(watch.code(), Code::NotFound);
        let close = notify_client
            .close_conversation(authed(
                outsider,
                npb::CloseConversationRequest {
                    conversation_id: id.clone(),
                },
            ))
            .await
            .expect_err("hidden");
        assert_eq!(close.code(), Code::NotFound);
        let inbox = notify_client
            .list_conversations(authed(
                outsider,
                npb::ListConversationsRequest {
                    organization_id: sale.org.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("not theirs");
        assert_eq!(inbox.code(), Code::PermissionDenied);
    }
    let elsewhere = notify_client
        .list_conversations(authed(
            &other_staff,
            npb::ListConversationsRequest {
                organization_id: other_org.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("their own inbox")
        .into_inner();
    assert!(elsewhere.conversations.is_empty());

    // The organization's inbox shows it, with the buyer's message unread.
    let inbox = notify_client
        .list_conversations(authed(
            &sale.organizer,
            npb::ListConversationsRequest {
                organization_id: sale.org.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("inbox")
        .into_inner();
    assert_eq!(inbox.conversations.len(), 1);
    assert_eq!(inbox.conversations[0].unread_count, 1);

    // Both sides watch; each sees what the other writes, live.
    let watch = |token: String| {
        let mut c = client(&notify);
        let id = id.clone();
        async move {
            c.watch_conversation(authed(
                &token,
                npb::WatchConversationRequest { conversation_id: id },
            ))
            .await
            .expect("watch")
            .into_inner()
        }
    };
    let mut buyer_side = watch(buyer.clone()).await;
    let mut staff_side = watch(sale.organizer.clone()).await;
    let answer = notify_client
        .post_message(authed(
            &sale.organizer,
            npb::PostMessageRequest {
                conversation_id: id.clone(),
                body: "Yes, through the north gate.".into(),
            },
        ))
        .await
        .expect("answer")
        .into_inner();
    assert!(answer.from_staff);
    for stream in [&mut buyer_side, &mut staff_side] {
        let seen = next_message(stream).await;
        assert_eq!(seen.id, answer.id);
    }
    let thanks = notify_client
        .post_message(authed(
            &buyer,
            npb::PostMessageRequest {
                conversation_id: id.clone(),
                body: "Thank you!".into(),
            },
        ))
        .await
        .expect("thanks")
        .into_inner();
    assert!(!thanks.from_staff);
    assert_eq!(next_message(&mut staff_side).await.id, thanks.id);
    assert_eq!(next_message(&mut buyer_side).await.id, thanks.id);

    // Unread counts per side; reading clears them.
    let as_buyer = notify_client
        .get_conversation(authed(
            &buyer,
            npb::GetConversationRequest {
                conversation_id: id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(as_buyer.unread_count, 0, "the buyer wrote after the answer");
    let as_staff = notify_client
        .get_conversation(authed(
            &sale.organizer,
            npb::GetConversationRequest {
                conversation_id: id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(as_staff.unread_count, 1, "the thanks");
    let read = notify_client
        .mark_conversation_read(authed(
            &sale.organizer,
            npb::MarkConversationReadRequest {
                conversation_id: id.clone(),
            },
        ))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.unread_count, 0);

    // The thread, oldest first, paged.
    let first_page = notify_client
        .list_messages(authed(
            &admin,
            npb::ListMessagesRequest {
                conversation_id: id.clone(),
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .expect("an admin reads it")
        .into_inner();
    assert_eq!(first_page.messages.len(), 2);
    assert_eq!(first_page.messages[1].id, answer.id);
    let second_page = notify_client
        .list_messages(authed(
            &buyer,
            npb::ListMessagesRequest {
                conversation_id: id.clone(),
                page_size: 2,
                page_token: first_page.next_page_token.clone(),
            },
        ))
        .await
        .expect("page two")
        .into_inner();
    assert_eq!(second_page.messages.len(), 1);
    assert_eq!(second_page.messages[0].id, thanks.id);
    assert!(second_page.next_page_token.is_empty());

    // Closed: nobody writes until it is reopened.
    let closed = notify_client
        .close_conversation(authed(
            &buyer,
            npb::CloseConversationRequest {
                conversation_id: id.clone(),
            },
        ))
        .await
        .expect("close")
        .into_inner();
    assert_eq!(closed.status, npb::ConversationStatus::Closed as i32);
    let refused = notify_client
        .post_message(authed(
            &sale.organizer,
            npb::PostMessageRequest {
                conversation_id: id.clone(),
                body: "one more thing".into(),
            },
        ))
        .await
        .expect_err("closed");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    notify_client
        .reopen_conversation(authed(
            &sale.organizer,
            npb::ReopenConversationRequest {
                conversation_id: id.clone(),
            },
        ))
        .await
        .expect("reopen");
    notify_client
        .post_message(authed(
            &sale.organizer,
            npb::PostMessageRequest {
                conversation_id: id.clone(),
                body: "one more thing".into(),
            },
        ))
        .await
        .expect("open again");
}

#[tokio::test]
async fn a_question_to_the_platform_reaches_admins_and_no_organization() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = notify(&stack, &smtp).await;
    let (_, buyer) = stack.buyer().await;
    let (_, organizer) = stack.identity.organizer().await;
    let (_, admin) = stack.identity.user(&[Role::Admin]).await;
    let mut c = client(&notify);
    let conversation = c
        .open_conversation(authed(
            &buyer,
            npb::OpenConversationRequest {
                subject: "My account".into(),
                body: "I cannot change my e-mail.".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("open")
        .into_inner();
    assert!(conversation.organization_id.is_empty());
    let hidden = c
        .get_conversation(authed(
            &organizer,
            npb::GetConversationRequest {
                conversation_id: conversation.id.clone(),
            },
        ))
        .await
        .expect_err("not an organizer's");
    assert_eq!(hidden.code(), Code::NotFound);
    let everything = c
        .list_conversations(authed(&admin, npb::ListConversationsRequest::default()))
        .await
        .expect("admin inbox")
        .into_inner();
    assert!(everything.conversations.iter().any(|x| x.id == conversation.id));
    let answered = c
        .post_message(authed(
            &admin,
            npb::PostMessageRequest {
                conversation_id: conversation.id.clone(),
                body: "Done for you.".into(),
            },
        ))
        .await
        .expect("answer")
        .into_inner();
    assert!(answered.from_staff);
    let unauthenticated = c
        .list_conversations(npb::ListConversationsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}
