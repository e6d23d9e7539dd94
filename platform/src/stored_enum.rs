//! Enums stored as text, such as an aggregate's status: declared once with their stored names,
//! they convert to and from the column themselves, so queries take the enum (never a string
//! literal) and a row read back with an unknown value fails loudly instead of passing as one.

/// Declares an enum whose variants are stored as the given texts, with `as_str`, `parse`,
/// `ALL`, `Display`, and diesel's conversions for a `Text` column. The crate using it depends on
/// `diesel` (its derives name it).
///
/// ```ignore
/// ticketing_platform::stored_enum! {
///     /// Where an order is in its life.
///     pub enum OrderStatus {
///         PendingPayment = "pending_payment",
///         Paid = "paid",
///     }
/// }
/// ```
#[macro_export]
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant stored as `text`, if any.
            pub fn parse(text: &str) -> ::core::option::Option<Self> {
                match text {
                    $($text => ::core::option::Option::Some($name::$variant),)+
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let text =
                    <String as diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg>>::from_sql(
                        value,
                    )?;
                Self::parse(&text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::stored_enum! {
        enum Light {
            Red = "red",
            Green = "green",
        }
    }

    #[test]
    fn every_variant_round_trips_through_its_stored_name() {
        for light in Light::ALL {
            assert_eq!(Light::parse(light.as_str()), Some(*light));
            assert_eq!(light.to_string(), light.as_str());
        }
        assert_eq!(Light::parse("amber"), None);
    }
}
