//! Messages rendered from the template files in `templates/` (compiled in): per locale a text
//! template for each kind, with a `subject` and a `body` block, and one HTML layout that sets
//! the text's paragraphs, the tickets with their QR codes and a button around them. Undefined
//! variables are errors, so a template and the facts given to it cannot drift apart unseen.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use minijinja::{Environment, UndefinedBehavior, Value, context, value::Serde};
use serde::{Deserialize, Serialize};

use crate::domain::{Kind, Locale};

macro_rules! embedded {
    ($($path:literal),+ $(,)?) => {
        &[$(($path, include_str!(concat!("../templates/", $path)))),+]
    };
}

const FILES: &[(&str, &str)] = embedded![
    "message.html",
    "en/labels.json",
    "en/welcome.txt",
    "en/order_confirmed.txt",
    "en/payment_failed.txt",
    "en/order_expired.txt",
    "en/order_refunded.txt",
    "en/order_cancelled.txt",
    "en/event_cancelled.txt",
    "en/event_updated.txt",
    "en/event_reminder.txt",
    "en/waitlist_offer.txt",
    "de/labels.json",
    "de/welcome.txt",
    "de/order_confirmed.txt",
    "de/payment_failed.txt",
    "de/order_expired.txt",
    "de/order_refunded.txt",
    "de/order_cancelled.txt",
    "de/event_cancelled.txt",
    "de/event_updated.txt",
    "de/event_reminder.txt",
    "de/waitlist_offer.txt",
];

/// What a message says, in no language yet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// How to address the recipient.
    pub name: String,
    pub event: EventFacts,
    pub order: OrderFacts,
    /// An amount of money, written out ("EUR 12.50").
    pub amount: String,
    pub reason: String,
    /// A refund covered the whole order.
    pub full: bool,
    pub tickets: Vec<TicketFacts>,
    pub offer: OfferFacts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EventFacts {
    pub title: String,
    #[serde(skip)]
    pub starts_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OrderFacts {
    pub id: String,
    pub total: String,
}

/// Places held for a buyer from a waiting list, theirs to buy until the offer expires.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OfferFacts {
    pub quantity: i32,
    /// The held seats' ids; empty for general admission.
    pub seats: Vec<String>,
    #[serde(skip)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TicketFacts {
    pub tier: String,
    pub seat: String,
    pub secret: String,
    /// The Content-ID of its QR code in the mail.
    pub content_id: String,
}

/// A message ready to be sent or shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Where in the portal it leads.
    pub link: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Labels {
    qr: String,
    seat: String,
    code: String,
    open: String,
    footer: String,
    unsubscribe: String,
    date_format: String,
}

pub struct Templates {
    env: Environment<'static>,
    labels: HashMap<Locale, Labels>,
    portal_url: String,
}

impl Templates {
    /// The compiled-in templates, linking to the portal at `portal_url`.
    pub fn new(portal_url: &str) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut labels = HashMap::new();
        for (path, source) in FILES {
            if let Some(locale) = path.strip_suffix("/labels.json") {
                let locale = Locale::parse(locale).with_context(|| format!("{path}: unknown locale"))?;
                labels.insert(
                    locale,
                    serde_json::from_str(source).with_context(|| format!("{path}: bad labels"))?,
                );
            } else {
                env.add_template(path, source)
                    .with_context(|| format!("template {path}"))?;
            }
        }
        for locale in Locale::ALL {
            anyhow::ensure!(labels.contains_key(locale), "no labels for {locale}");
        }
        Ok(Self {
            env,
            labels,
            portal_url: portal_url.trim_end_matches('/').to_string(),
        })
    }

    /// Where a path of the portal is.
    pub fn portal(&self, path: &str) -> String {
        format!("{}{path}", self.portal_url)
    }

    /// `facts` as a message of `kind` in `locale`, linking to the portal's `link` path, and to
    /// `unsubscribe_url` (when not empty) for switching such messages off.
    pub fn render(
        &self,
        kind: Kind,
        locale: Locale,
        facts: &Facts,
        link: &str,
        unsubscribe_url: &str,
    ) -> anyhow::Result<Rendered> {
        let labels = &self.labels[&locale];
        let date = |at: Option<DateTime<Utc>>| {
            at.map(|at| at.format(&labels.date_format).to_string())
                .unwrap_or_default()
        };
        let starts = date(facts.event.starts_at);
        let link = if link.is_empty() {
            String::new()
        } else {
            self.portal(link)
        };
        let ctx = context! {
            locale => locale.as_str(),
            portal_url => &self.portal_url,
            name => &facts.name,
            event => context! { title => &facts.event.title, starts => starts },
            order => context! { id => &facts.order.id, total => &facts.order.total, link => &link },
            amount => &facts.amount,
            reason => &facts.reason,
            full => facts.full,
            tickets => Value::from(Serde(&facts.tickets)),
            offer => context! {
                quantity => facts.offer.quantity,
                seats => Value::from(Serde(&facts.offer.seats)),
                expires => date(facts.offer.expires_at),
            },
            link => &link,
            unsubscribe_url => unsubscribe_url,
        };
        let name = format!("{locale}/{}.txt", kind.template());
        let mut captured = self
            .env
            .get_template(&name)?
            .render_captured(ctx)
            .with_context(|| format!("rendering {name}"))?;
        let (subject, text) = captured.with_state_mut(|state| {
            Ok::<_, minijinja::Error>((state.render_block("subject")?, state.render_block("body")?))
        })?;
        let subject = subject.trim().to_string();
        let text = text.trim().to_string() + "\n";
        let paragraphs: Vec<String> = text
            .split("\n\n")
            .map(|p| p.trim().replace('\n', " "))
            .filter(|p| !p.is_empty())
            .collect();
        let html = self
            .env
            .get_template("message.html")?
            .render(context! {
                locale => locale.as_str(),
                subject => &subject,
                paragraphs => paragraphs,
                tickets => Value::from(Serde(&facts.tickets)),
                labels => Value::from(Serde(labels)),
                link => &link,
                unsubscribe_url => unsubscribe_url,
            })
            .context("rendering message.html")?;
        Ok(Rendered {
            subject,
            text,
            html,
            link,
        })
    }
}

/// `amount_minor` of `currency` written out: "EUR 12.50", "JPY 1200".
pub fn money(amount_minor: i64, currency: &str) -> String {
    // ISO 4217 currencies without minor units; every other one the platform takes has two.
    const NO_MINOR_UNITS: [&str; 8] = ["JPY", "KRW", "CLP", "ISK", "VND", "XAF", "XOF", "UGX"];
    if NO_MINOR_UNITS.contains(&currency) {
        return format!("{currency} {amount_minor}");
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    format!("{currency} {sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind) -> Facts {
        Facts {
            name: "Ann <script>".into(),
            event: EventFacts {
                title: "Night & Day".into(),
                starts_at: DateTime::parse_from_rfc3339("2027-03-01T19:30:00Z")
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
            },
            order: OrderFacts {
                id: "0193-order".into(),
                total: money(12_50, "EUR"),
            },
            amount: money(12_50, "EUR"),
            reason: if kind == Kind::PaymentFailed {
                "card_declined".into()
            } else {
                String::new()
            },
            full: true,
            tickets: vec![TicketFacts {
                tier: "Front".into(),
                seat: "A-1".into(),
                secret: "tk.secret".into(),
                content_id: "ticket-1@ticketing".into(),
            }],
            offer: OfferFacts {
                quantity: 2,
                seats: vec!["A-1".into(), "A-2".into()],
                expires_at: DateTime::parse_from_rfc3339("2027-02-01T18:00:00Z")
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
            },
        }
    }

    /// Renders every message in every language; the files land in the system's temporary
    /// folder, under `ticketing-mail-preview/`, for a look in a browser or a text editor.
    #[test]
    fn every_kind_renders_in_every_language_and_escapes_html() {
        let templates = Templates::new("http://localhost:8080/").expect("templates");
        let preview = std::env::temp_dir().join("ticketing-mail-preview");
        for locale in Locale::ALL {
            for kind in Kind::ALL {
                let rendered = templates
                    .render(
                        *kind,
                        *locale,
                        &sample(*kind),
                        "/orders/0193-order",
                        "https://t.example/u?token=x",
                    )
                    .unwrap_or_else(|e| panic!("{locale}/{kind}: {e:#}"));
                assert!(!rendered.subject.is_empty() && !rendered.subject.contains('\n'));
                assert!(rendered.text.contains("Ann <script>"), "{locale}/{kind}");
                assert!(rendered.html.contains("Ann &lt;script&gt;"), "{locale}/{kind}");
                assert!(!rendered.html.contains("<script>"), "{locale}/{kind}");
                assert_eq!(rendered.link, "http://localhost:8080/orders/0193-order");
                if *kind == Kind::OrderConfirmed {
                    assert!(rendered.text.contains("tk.secret"));
                    assert!(rendered.html.contains("cid:ticket-1@ticketing"));
                }
                let dir = preview.join(locale.as_str());
                if std::fs::create_dir_all(&dir).is_ok() {
                    let _ = std::fs::write(dir.join(format!("{kind}.txt")), &rendered.text);
                    let _ = std::fs::write(dir.join(format!("{kind}.html")), &rendered.html);
                }
            }
        }
    }

    #[test]
    fn an_offer_names_its_places_its_deadline_and_where_to_buy_them() {
        let templates = Templates::new("http://localhost:8080").expect("templates");
        let link = "/checkout?hold=0193-hold";
        for (locale, deadline, one_place) in [
            (Locale::En, "Monday, 1 February 2027, 18:00 UTC", "1 place is"),
            (Locale::De, "01.02.2027, 18:00 UTC", "1 Platz bis"),
        ] {
            let seated = templates
                .render(
                    Kind::WaitlistOffer,
                    locale,
                    &sample(Kind::WaitlistOffer),
                    link,
                    "",
                )
                .expect("rendered");
            for part in [
                "A-1, A-2",
                deadline,
                "http://localhost:8080/checkout?hold=0193-hold",
            ] {
                assert!(seated.text.contains(part), "{locale}: {part} in {}", seated.text);
            }
            // The button (minijinja escapes the slashes in HTML).
            assert!(seated.html.contains("checkout?hold=0193-hold"), "{locale}");
            // General admission, one place: no seats named, the singular.
            let mut facts = sample(Kind::WaitlistOffer);
            facts.offer.quantity = 1;
            facts.offer.seats.clear();
            facts.tickets.clear();
            let floor = templates
                .render(Kind::WaitlistOffer, locale, &facts, link, "")
                .expect("rendered");
            assert!(!floor.text.contains("A-1"), "{locale}: {}", floor.text);
            assert!(floor.text.contains(deadline), "{locale}: {}", floor.text);
            assert!(floor.text.contains(one_place), "{locale}: {}", floor.text);
        }
    }

    #[test]
    fn money_is_written_with_its_minor_units() {
        assert_eq!(money(1250, "EUR"), "EUR 12.50");
        assert_eq!(money(5, "USD"), "USD 0.05");
        assert_eq!(money(-1250, "EUR"), "EUR -12.50");
        assert_eq!(money(1200, "JPY"), "JPY 1200");
    }
}
