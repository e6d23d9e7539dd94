//! Notify's rules, free of I/O: which messages may be switched off, in which language they go,
//! how a mail's delivery moves, and how long a failed attempt waits.

use std::time::Duration;

use ticketing_proto::ticketing::notify::v1 as pb;
use uuid::Uuid;

ticketing_platform::stored_enum! {
    /// What a message is about.
    pub enum Kind {
        Welcome = "welcome",
        OrderConfirmed = "order_confirmed",
        PaymentFailed = "payment_failed",
        OrderExpired = "order_expired",
        OrderRefunded = "order_refunded",
        OrderCancelled = "order_cancelled",
        EventCancelled = "event_cancelled",
        EventUpdated = "event_updated",
        EventReminder = "event_reminder",
        WaitlistOffer = "waitlist_offer",
    }
}

impl Kind {
    /// Messages about the recipient's own account, orders, tickets and waiting-list offers: they
    /// always go, whatever the preferences say, because the recipient needs them (a receipt, a
    /// cancelled show, places held for them only until a deadline).
    pub fn is_transactional(self) -> bool {
        !matches!(self, Kind::EventReminder)
    }

    /// The template's file name (without extension).
    pub fn template(self) -> &'static str {
        self.as_str()
    }

    pub fn to_proto(self) -> pb::NotificationKind {
        use pb::NotificationKind as P;
        match self {
            Kind::Welcome => P::Welcome,
            Kind::OrderConfirmed => P::OrderConfirmed,
            Kind::PaymentFailed => P::PaymentFailed,
            Kind::OrderExpired => P::OrderExpired,
            Kind::OrderRefunded => P::OrderRefunded,
            Kind::OrderCancelled => P::OrderCancelled,
            Kind::EventCancelled => P::EventCancelled,
            Kind::EventUpdated => P::EventUpdated,
            Kind::EventReminder => P::EventReminder,
            Kind::WaitlistOffer => P::WaitlistOffer,
        }
    }
}

ticketing_platform::stored_enum! {
    /// Where a mail is in its delivery.
    pub enum MailStatus {
        /// Waiting for a sender, now or after a back-off.
        Pending = "pending",
        /// The SMTP server took it.
        Sent = "sent",
        /// Refused for good by the server, or out of attempts.
        Failed = "failed",
    }
}

impl MailStatus {
    /// A pending mail is sent or fails for good, or stays pending after a failed attempt;
    /// what is settled stays settled.
    pub fn can_become(self, next: MailStatus) -> bool {
        matches!((self, next), (MailStatus::Pending, _))
    }
}

ticketing_platform::stored_enum! {
    /// Where a reminder is.
    pub enum ReminderStatus {
        /// Waiting for its time.
        Pending = "pending",
        Sent = "sent",
        /// Not sent: the event was cancelled, or the holder has no valid ticket left.
        Skipped = "skipped",
    }
}

impl ReminderStatus {
    /// A reminder fires or is skipped once; a moved start makes a fired one pending again
    /// (the new start deserves its own reminder).
    pub fn can_become(self, next: ReminderStatus) -> bool {
        use ReminderStatus::*;
        matches!(
            (self, next),
            (Pending, Sent | Skipped) | (Sent | Skipped | Pending, Pending)
        )
    }
}

/// When the reminder `offset` before `starts_at` is due, if that is still ahead of `now`.
pub fn reminder_due(
    starts_at: chrono::DateTime<chrono::Utc>,
    offset: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let due = starts_at - chrono::Duration::from_std(offset).ok()?;
    (due > now).then_some(due)
}

ticketing_platform::stored_enum! {
    /// The languages messages are written in.
    pub enum Locale {
        En = "en",
        De = "de",
    }
}

/// What a user chose, as stored (the defaults until they choose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    pub email: bool,
    pub in_app: bool,
    pub reminders: bool,
    pub marketing: bool,
    pub locale: Locale,
}

impl Default for Choices {
    fn default() -> Self {
        Self {
            email: true,
            in_app: true,
            reminders: true,
            marketing: false,
            locale: Locale::En,
        }
    }
}

/// The channels a message travels by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    InApp,
}

impl Choices {
    /// Whether a message of `kind` goes out by `channel` for someone who chose `self`.
    pub fn allow(&self, kind: Kind, channel: Channel) -> bool {
        if kind.is_transactional() {
            return true;
        }
        let channel_on = match channel {
            Channel::Email => self.email,
            Channel::InApp => self.in_app,
        };
        let kind_on = match kind {
            Kind::EventReminder => self.reminders,
            _ => self.marketing,
        };
        channel_on && kind_on
    }
}

ticketing_platform::stored_enum! {
    /// Whether a support conversation takes messages.
    pub enum ConversationStatus {
        Open = "open",
        Closed = "closed",
    }
}

impl ConversationStatus {
    /// Either side may close a conversation and open it again.
    pub fn can_become(self, next: ConversationStatus) -> bool {
        self != next
    }

    pub fn to_proto(self) -> pb::ConversationStatus {
        match self {
            ConversationStatus::Open => pb::ConversationStatus::Open,
            ConversationStatus::Closed => pb::ConversationStatus::Closed,
        }
    }
}

/// Which side of a conversation a caller speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buyer,
    /// A member of the answering organization, or an admin.
    Staff,
}

/// Who may read and write a conversation of `buyer` answered by `organization` (the
/// platform's admins when None): its buyer, the organization's members, admins; nobody else.
pub fn side_of(
    caller: Uuid,
    is_admin: bool,
    is_member_of: impl Fn(Uuid) -> bool,
    buyer: Uuid,
    organization: Option<Uuid>,
) -> Option<Side> {
    if caller == buyer {
        Some(Side::Buyer)
    } else if is_admin || organization.is_some_and(is_member_of) {
        Some(Side::Staff)
    } else {
        None
    }
}

/// A support message's or subject's text: trimmed, not empty, at most `max` characters.
pub fn check_text(text: &str, max: usize) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > max {
        return Err(format!("at most {max} characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not hold control characters".into());
    }
    Ok(text.to_string())
}

/// How long to wait after failed attempt number `attempt` (1-based): 5 s, then five times
/// longer each time, at most an hour.
pub fn retry_after(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(6);
    Duration::from_secs(5 * 5u64.pow(exponent)).min(Duration::from_secs(3600))
}

/// The one key of a message about `fact` (an order, a refund, a user, an event) of `kind` to
/// `recipient`: the same on every delivery of the event that caused it.
pub fn dedupe_key(kind: Kind, fact: &str, recipient: &str) -> String {
    format!("{kind}:{fact}:{}", recipient.to_ascii_lowercase())
}

/// A stable RFC 5322 Message-ID for the message with `dedupe_key`: a resent copy carries the
/// same id, so mail clients show it once.
pub fn message_id(dedupe_key: &str, domain: &str) -> String {
    let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, dedupe_key.as_bytes());
    format!("<{}@{domain}>", id.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_messages_go_whatever_was_chosen() {
        let nothing = Choices {
            email: false,
            in_app: false,
            reminders: false,
            marketing: false,
            locale: Locale::De,
        };
        for kind in Kind::ALL {
            for channel in [Channel::Email, Channel::InApp] {
                assert_eq!(
                    nothing.allow(*kind, channel),
                    kind.is_transactional(),
                    "{kind} by {channel:?}"
                );
            }
        }
        assert!(!Kind::EventReminder.is_transactional());
        assert!(Kind::OrderConfirmed.is_transactional());
        assert!(Kind::WaitlistOffer.is_transactional());
    }

    #[test]
    fn a_reminder_needs_its_kind_and_its_channel_on() {
        let mut choices = Choices::default();
        assert!(choices.allow(Kind::EventReminder, Channel::Email));
        choices.email = false;
        assert!(!choices.allow(Kind::EventReminder, Channel::Email));
        assert!(choices.allow(Kind::EventReminder, Channel::InApp));
        choices.reminders = false;
        assert!(!choices.allow(Kind::EventReminder, Channel::InApp));
    }

    #[test]
    fn a_settled_mail_stays_settled() {
        use MailStatus::*;
        for from in MailStatus::ALL {
            for to in MailStatus::ALL {
                assert_eq!(from.can_become(*to), *from == Pending, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_reminder_is_due_its_offset_before_the_start_and_only_ahead() {
        let now = chrono::Utc::now();
        let starts = now + chrono::Duration::hours(30);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            reminder_due(starts, day, now),
            Some(starts - chrono::Duration::days(1))
        );
        assert_eq!(
            reminder_due(now + chrono::Duration::hours(2), day, now),
            None,
            "already past"
        );
        assert_eq!(reminder_due(starts, Duration::MAX, now), None, "out of range");
        use ReminderStatus::*;
        assert!(Pending.can_become(Sent) && Pending.can_become(Skipped));
        assert!(Sent.can_become(Pending), "a moved start");
        assert!(!Sent.can_become(Skipped) && !Skipped.can_become(Sent));
    }

    #[test]
    fn only_the_buyer_the_organizations_members_and_admins_see_a_conversation() {
        let (buyer, member, admin, stranger, staff_elsewhere) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let (org, other_org) = (Uuid::new_v4(), Uuid::new_v4());
        let member_of = |who: Uuid| {
            move |o: Uuid| (who == member && o == org) || (who == staff_elsewhere && o == other_org)
        };
        let side = |who: Uuid, admin_role: bool, answered_by: Option<Uuid>| {
            side_of(who, admin_role, member_of(who), buyer, answered_by)
        };
        assert_eq!(side(buyer, false, Some(org)), Some(Side::Buyer));
        assert_eq!(side(member, false, Some(org)), Some(Side::Staff));
        assert_eq!(side(admin, true, Some(org)), Some(Side::Staff));
        assert_eq!(side(stranger, false, Some(org)), None, "another buyer");
        assert_eq!(
            side(staff_elsewhere, false, Some(org)),
            None,
            "another organization's staff"
        );
        // The platform's own support: admins only.
        assert_eq!(side(member, false, None), None);
        assert_eq!(side(admin, true, None), Some(Side::Staff));
        assert_eq!(
            side(buyer, true, None),
            Some(Side::Buyer),
            "an admin's own question"
        );
    }

    #[test]
    fn support_text_is_trimmed_bounded_and_printable() {
        assert_eq!(check_text("  hello \n", 10), Ok("hello".into()));
        assert!(check_text("   ", 10).is_err());
        assert!(check_text("ééééééééééé", 10).is_err(), "counted in characters");
        assert!(check_text("a\u{7}b", 10).is_err());
        assert_eq!(check_text("a\nb", 10), Ok("a\nb".into()));
        use ConversationStatus::*;
        assert!(Open.can_become(Closed) && Closed.can_become(Open));
        assert!(!Open.can_become(Open) && !Closed.can_become(Closed));
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        let waits: Vec<u64> = (1..=8).map(|a| retry_after(a).as_secs()).collect();
        assert_eq!(waits, [5, 25, 125, 625, 3125, 3600, 3600, 3600]);
        assert_eq!(retry_after(0).as_secs(), 5);
        assert_eq!(retry_after(i32::MAX).as_secs(), 3600);
    }

    #[test]
    fn a_message_keeps_its_id_across_deliveries_and_differs_per_recipient() {
        let a = dedupe_key(Kind::OrderConfirmed, "order-1", "Ann@Example.org");
        assert_eq!(a, dedupe_key(Kind::OrderConfirmed, "order-1", "ann@example.org"));
        assert_ne!(a, dedupe_key(Kind::OrderConfirmed, "order-1", "bob@example.org"));
        assert_ne!(a, dedupe_key(Kind::OrderRefunded, "order-1", "ann@example.org"));
        let id = message_id(&a, "ticketing.dev");
        assert_eq!(id, message_id(&a, "ticketing.dev"));
        assert!(id.starts_with('<') && id.ends_with("@ticketing.dev>"));
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(*kind));
            assert_ne!(kind.to_proto(), pb::NotificationKind::Unspecified);
        }
    }
}
