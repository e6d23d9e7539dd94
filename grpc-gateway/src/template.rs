//! `google.api.http` path templates: parsing and matching.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{var}` is `{var=*}`; `**` matches zero or more segments and must be last. A variable that
//! spans one segment is percent-decoded fully; one that spans several keeps `%2F` encoded, so a
//! decoded `/` can never be confused with a separator (the rule in `google/api/http.proto`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments, last only.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The request field the value goes to, e.g. `["event", "id"]`.
    pub field_path: Vec<String>,
    /// Segments `start..end` of the template are this variable's.
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {problem}")]
pub struct TemplateError {
    pub template: String,
    pub problem: String,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The values a request path gave the template's variables, in template order.
pub type Bindings = Vec<(Vec<String>, String)>;

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let fail = |problem: &str| TemplateError {
            template: source.to_string(),
            problem: problem.to_string(),
        };
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| fail("must start with /"))?;
        // The verb is a ':' after the last '/' and outside braces.
        let (body, verb) = split_verb(rest).map_err(&fail)?;
        if let Some(verb) = &verb
            && (verb.is_empty() || !verb.chars().all(is_literal_char))
        {
            return Err(fail("the verb must be a non-empty literal"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = body.chars().peekable();
        let mut token = String::new();
        let mut expect_segment = true;
        // Walks segment by segment; a variable may hold several segments of its own.
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    if !token.is_empty() {
                        return Err(fail("a variable must be a whole segment"));
                    }
                    let mut inner = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        match c {
                            '{' => return Err(fail("variables may not nest")),
                            '}' => {
                                closed = true;
                                break;
                            }
                            c => inner.push(c),
                        }
                    }
                    if !closed {
                        return Err(fail("unclosed {"));
                    }
                    let (path, pattern) = match inner.split_once('=') {
                        Some((path, pattern)) => (path, pattern),
                        None => (inner.as_str(), "*"),
                    };
                    let field_path: Vec<String> = path.split('.').map(str::to_string).collect();
                    if field_path.iter().any(|p| !is_ident(p)) {
                        return Err(fail("a variable names a field path like a.b_c"));
                    }
                    let start = segments.len();
                    for part in pattern.split('/') {
                        segments.push(parse_plain_segment(part).map_err(&fail)?);
                    }
                    variables.push(Variable {
                        field_path,
                        start,
                        end: segments.len(),
                    });
                    expect_segment = false;
                    match chars.peek() {
                        None | Some('/') => {}
                        Some(_) => return Err(fail("a variable must be a whole segment")),
                    }
                }
                '/' => {
                    if expect_segment {
                        segments.push(parse_plain_segment(&token).map_err(&fail)?);
                    }
                    token.clear();
                    expect_segment = true;
                }
                c => {
                    if !expect_segment {
                        return Err(fail("a variable must be a whole segment"));
                    }
                    token.push(c);
                }
            }
        }
        if expect_segment {
            segments.push(parse_plain_segment(&token).map_err(&fail)?);
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(fail("** must be the last segment"));
        }
        let mut seen = std::collections::HashSet::new();
        for v in &variables {
            if !seen.insert(v.field_path.join(".")) {
                return Err(fail("a field is bound twice"));
            }
        }
        Ok(Self {
            segments,
            variables,
            verb,
            source: source.to_string(),
        })
    }

    /// Matches a request path (as sent, percent-encoded) and returns the variables' values.
    pub fn matches(&self, path: &str) -> Option<Bindings> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => {
                let cut = rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
                // The verb follows the last segment, never stands in its place.
                if cut.is_empty() || cut.ends_with('/') {
                    return None;
                }
                cut
            }
            None => rest,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut spans = Vec::with_capacity(self.segments.len());
        let mut at = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    let same = |p: &&str| {
                        *p == literal.as_str()
                            || (p.contains('%') && decode(p, true).as_deref() == Some(literal.as_str()))
                    };
                    if !parts.get(at).is_some_and(same) {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Segment::One => {
                    if parts.get(at).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Segment::Rest => {
                    // An empty path after the prefix ("/v1/files/") is zero segments.
                    let end = if parts.len() == at + 1 && parts[at].is_empty() {
                        at + 1
                    } else {
                        if parts[at..].iter().any(|p| p.is_empty()) {
                            return None;
                        }
                        parts.len()
                    };
                    spans.push((at, end));
                    at = end;
                }
            }
        }
        if at != parts.len() {
            return None;
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let (from, _) = spans.get(v.start)?;
            let (_, to) = spans.get(v.end.checked_sub(1)?)?;
            let raw = parts.get(*from..*to)?;
            let value = if v.end - v.start == 1 && self.segments[v.start] != Segment::Rest {
                decode(raw.first().copied().unwrap_or(""), true)?
            } else {
                raw.iter()
                    .map(|p| decode(p, false))
                    .collect::<Option<Vec<_>>>()?
                    .join("/")
            };
            bindings.push((v.field_path.clone(), value));
        }
        Some(bindings)
    }

    /// How specific the template is, for choosing among several that match: literals beat
    /// variables, which beat `**`; a verb beats none.
    pub fn specificity(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::One => 2,
                Segment::Rest => 1,
            })
            .collect();
        key.push(u8::from(self.verb.is_some()));
        key
    }

    /// The OpenAPI form: `/v1/events/{event_id}:publish`, `{+name}` for multi-segment variables.
    pub fn openapi_path(&self) -> String {
        self.openapi_path_named(|v| v.field_path.join("."))
    }

    /// The OpenAPI form with each variable (in order) named by `name`.
    pub fn openapi_path_named(&self, mut name: impl FnMut(&Variable) -> String) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                let multi = v.end - v.start > 1 || self.segments[v.start] == Segment::Rest;
                out.push('{');
                if multi {
                    out.push('+');
                }
                out.push_str(&name(v));
                out.push('}');
                i = v.end;
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => out.push_str(l),
                Segment::One => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            i += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// The leading literal segments, at most `n`, joined by `/` (`v1/events`; "" for none).
    pub fn literal_prefix(&self, n: usize) -> String {
        self.segments
            .iter()
            .take(n)
            .map_while(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn split_verb(rest: &str) -> Result<(&str, Option<String>), &'static str> {
    let mut depth = 0i32;
    let mut last_slash = None;
    let mut colon = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => last_slash = Some(i),
            ':' if depth == 0 => colon = Some(i),
            _ => {}
        }
        if depth < 0 {
            return Err("unbalanced }");
        }
    }
    match colon {
        Some(i) if last_slash.is_none_or(|s| s < i) => Ok((&rest[..i], Some(rest[i + 1..].to_string()))),
        Some(_) => Err("':' is only allowed before the verb"),
        None => Ok((rest, None)),
    }
}

fn parse_plain_segment(part: &str) -> Result<Segment, &'static str> {
    match part {
        "" => Err("empty segment"),
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        literal if literal.chars().all(is_literal_char) => Ok(Segment::Literal(literal.to_string())),
        _ => Err("a literal segment may hold only unreserved characters"),
    }
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '%')
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Percent-decodes one path segment; `%2F` stays encoded unless `all`. None if it is not valid
/// percent-encoding of UTF-8.
pub fn decode(segment: &str, all: bool) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_string());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if byte == b'/' && !all {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bound(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        t(template)
            .matches(path)
            .map(|b| b.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    #[test]
    fn parses_the_whole_grammar() {
        let x = t("/v1/{name=events/*/tiers/*}:publish");
        assert_eq!(x.verb.as_deref(), Some("publish"));
        assert_eq!(x.segments.len(), 5);
        assert_eq!(x.variables[0].start, 1);
        assert_eq!(x.variables[0].end, 5);
        let nested = t("/v1/events/{event.id}/tiers/{tier.id}");
        assert_eq!(nested.variables[1].field_path, ["tier", "id"]);
        assert_eq!(t("/v1/files/**").segments.last(), Some(&Segment::Rest));
        assert_eq!(t("/v1/{path=files/**}").openapi_path(), "/v1/{+path}");
        assert_eq!(
            t("/v1/events/{event_id}:publish").openapi_path(),
            "/v1/events/{event_id}:publish"
        );
    }

    #[test]
    fn rejects_what_the_grammar_forbids() {
        for bad in [
            "v1/events",
            "/v1/{a={b}}",
            "/v1/{a",
            "/v1/**/x",
            "/v1/x{a}",
            "/v1/{a}x",
            "/v1//x",
            "/v1/{a}/{a}",
            "/v1/a:",
            "/v1/a:b/c",
            "/v1/{1a}",
            "/v1/a b",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn matches_variables_literals_and_verbs() {
        assert_eq!(
            bound("/v1/events/{event_id}", "/v1/events/abc"),
            Some(vec![("event_id".into(), "abc".into())])
        );
        assert_eq!(bound("/v1/events/{event_id}", "/v1/events/abc/x"), None);
        assert_eq!(bound("/v1/events/{event_id}", "/v1/events/"), None);
        assert_eq!(
            bound("/v1/orders/{order_id}:pay", "/v1/orders/o1:pay"),
            Some(vec![("order_id".into(), "o1".into())])
        );
        assert_eq!(bound("/v1/orders/{order_id}:pay", "/v1/orders/o1"), None);
        assert_eq!(bound("/v1/orders/{order_id}:pay", "/v1/orders/:pay"), None);
        assert_eq!(
            bound("/v1/{name=events/*/tiers/*}", "/v1/events/e1/tiers/t1"),
            Some(vec![("name".into(), "events/e1/tiers/t1".into())])
        );
        assert_eq!(
            bound("/v1/{name=events/*/tiers/*}", "/v1/events/e1/seats/t1"),
            None
        );
        assert_eq!(
            bound("/v1/{path=files/**}", "/v1/files/a/b/c"),
            Some(vec![("path".into(), "files/a/b/c".into())])
        );
        assert_eq!(
            bound("/v1/files/{rest=**}", "/v1/files/"),
            Some(vec![("rest".into(), String::new())])
        );
    }

    #[test]
    fn decodes_percent_encoding_as_the_rules_say() {
        // A single-segment variable decodes everything, %2F included.
        assert_eq!(
            bound("/v1/codes/{code}", "/v1/codes/SPRING%2F25%20off"),
            Some(vec![("code".into(), "SPRING/25 off".into())])
        );
        // A multi-segment one keeps %2F, so the value's own slashes stay distinguishable.
        assert_eq!(
            bound("/v1/{path=files/**}", "/v1/files/a%2Fb/%C3%A9"),
            Some(vec![("path".into(), "files/a%2Fb/é".into())])
        );
        assert_eq!(bound("/v1/codes/{code}", "/v1/codes/%zz"), None);
        assert_eq!(bound("/v1/codes/{code}", "/v1/codes/%FF"), None);
        // Literals match their decoded form.
        assert!(t("/v1/testCards").matches("/v1/test%43ards").is_some());
    }

    #[test]
    fn literals_are_more_specific_than_variables() {
        let literal = t("/v1/payments/testCards");
        let variable = t("/v1/payments/{payment_id}");
        assert!(literal.specificity() > variable.specificity());
        assert!(t("/v1/a/{b}").specificity() > t("/v1/a/{b=**}").specificity());
    }
}
