//! The route table, read from the `google.api.http` rules in the descriptor set: every
//! annotated method of every service, with its additional bindings. Nothing here names a
//! service or a message; a new annotated RPC is routed by rebuilding the descriptors.

use std::{collections::HashMap, sync::Arc};

use http::Method;
use prost::Message;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value};
use ticketing_proto::google::api::{HttpRule, http_rule::Pattern};

use crate::template::{Bindings, Template, TemplateError};

/// Where the request message's fields come from besides the path.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body: the remaining fields are query parameters.
    None,
    /// `body: "*"`: every field not bound by the path is in the JSON body; no query parameters.
    Whole,
    /// `body: "<field>"`: that top-level field is the body; the rest are query parameters.
    Field(FieldDescriptor),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub template: Template,
    pub body: Body,
    /// `response_body`: this top-level response field is the HTTP body instead of the whole reply.
    pub response_body: Option<FieldDescriptor>,
    pub rpc: MethodDescriptor,
    /// The upstream peer's name (`inventory` for `ticketing.inventory.v1`).
    pub upstream: String,
    /// Marked `(ticketing.common.v1.anonymous) = true`: callable without credentials.
    pub anonymous: bool,
    /// The request message has an `idempotency_key` string field the header may fill.
    pub idempotency_field: Option<FieldDescriptor>,
}

impl Route {
    pub fn is_streaming(&self) -> bool {
        self.rpc.is_server_streaming()
    }

    /// `/ticketing.inventory.v1.InventoryService/HoldSeats`
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.rpc.parent_service().full_name(), self.rpc.name())
    }

    pub fn operation_id(&self) -> String {
        format!("{}_{}", self.rpc.parent_service().name(), self.rpc.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{rpc}: {problem}")]
    Rule { rpc: String, problem: String },
    #[error("the descriptor set: {0}")]
    Descriptors(String),
}

/// What a request path and method resolved to.
pub enum Resolved {
    /// The route (shared: the request carries it through the layers) and the path's values.
    Found(Arc<Route>, Bindings),
    /// The path exists, but not for this method.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// Route indexes by first literal segment, most specific first; `""` holds templates that
    /// start with a variable.
    buckets: HashMap<String, Vec<usize>>,
}

const ANONYMOUS_OPTION: &str = "ticketing.common.v1.anonymous";

impl RouteTable {
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, RouteError> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .ok_or_else(|| RouteError::Descriptors("google.api.http is not in the set".into()))?;
        let anonymous = pool.get_extension_by_name(ANONYMOUS_OPTION);
        let mut routes = Vec::new();
        for service in pool.services() {
            let upstream = upstream_of(service.package_name());
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let rule = match options.get_extension(&http).as_ref() {
                    Value::Message(rule) => {
                        HttpRule::decode(rule.encode_to_vec().as_slice()).map_err(|e| RouteError::Rule {
                            rpc: rpc.full_name().into(),
                            problem: e.to_string(),
                        })?
                    }
                    _ => continue,
                };
                if rpc.is_client_streaming() {
                    return Err(RouteError::Rule {
                        rpc: rpc.full_name().into(),
                        problem: "client streaming cannot be transcoded".into(),
                    });
                }
                let is_anonymous = anonymous
                    .as_ref()
                    .is_some_and(|ext| matches!(options.get_extension(ext).as_ref(), Value::Bool(true)));
                let idempotency_field = rpc
                    .input()
                    .get_field_by_name("idempotency_key")
                    .filter(|f| matches!(f.kind(), Kind::String) && !f.is_list());
                let mut bindings = vec![rule.clone()];
                for extra in &rule.additional_bindings {
                    if !extra.additional_bindings.is_empty() {
                        return Err(RouteError::Rule {
                            rpc: rpc.full_name().into(),
                            problem: "additional_bindings may not nest".into(),
                        });
                    }
                    bindings.push(extra.clone());
                }
                for binding in bindings {
                    routes.push(route(
                        &rpc,
                        &binding,
                        &upstream,
                        is_anonymous,
                        idempotency_field.clone(),
                    )?);
                }
            }
        }
        Ok(Self::new(routes))
    }

    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        // Each route under its leading literals (at most two: `v1/events`, `v1`, or none).
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            by_prefix
                .entry(route.template.literal_prefix(2))
                .or_default()
                .push(i);
        }
        // A path may match routes of its own two-literal prefix, of its first literal alone,
        // and of none: each list holds all three, still in specificity order.
        let mut buckets: HashMap<String, Vec<usize>> = HashMap::new();
        for key in by_prefix.keys() {
            let mut wider = vec![key.as_str()];
            if let Some((first, _)) = key.split_once('/') {
                wider.push(first);
            }
            if !key.is_empty() {
                wider.push("");
            }
            let mut merged: Vec<usize> = wider
                .iter()
                .filter_map(|k| by_prefix.get(*k))
                .flatten()
                .copied()
                .collect();
            merged.sort_unstable();
            buckets.insert(key.clone(), merged);
        }
        let routes = routes.into_iter().map(Arc::new).collect();
        Self { routes, buckets }
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The routes `path` may match: those filed under its first two segments, else its first.
    fn candidates(&self, path: &str) -> &[usize] {
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let literal = |part: Option<&str>| {
            let part = part.unwrap_or("");
            let part = if part.contains('%') {
                crate::template::decode(part, true).unwrap_or_default()
            } else {
                part.to_string()
            };
            // A literal never holds a colon: what follows one is the verb.
            match part.split_once(':') {
                Some((before, _)) => before.to_string(),
                None => part,
            }
        };
        let first = literal(parts.next());
        let second = parts.next().map(|p| literal(Some(p)));
        second
            .and_then(|second| self.buckets.get(&format!("{first}/{second}")))
            .or_else(|| self.buckets.get(&first))
            .or_else(|| self.buckets.get(""))
            .map_or(&[], Vec::as_slice)
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolved {
        let candidates = self.candidates(path);
        let serves = |route: &Route| {
            route.method == *method || (*method == Method::HEAD && route.method == Method::GET)
        };
        for &i in candidates {
            let route = &self.routes[i];
            if serves(route)
                && let Some(bindings) = route.template.matches(path)
            {
                return Resolved::Found(route.clone(), bindings);
            }
        }
        // No route for this method: which methods would have matched (405 rather than 404)?
        let mut allowed = Vec::new();
        for &i in candidates {
            let route = &self.routes[i];
            if !serves(route) && !allowed.contains(&route.method) && route.template.matches(path).is_some() {
                allowed.push(route.method.clone());
            }
        }
        if allowed.is_empty() {
            Resolved::NotFound
        } else {
            Resolved::MethodNotAllowed(allowed)
        }
    }
}

/// `ticketing.inventory.v1` -> `inventory`.
fn upstream_of(package: &str) -> String {
    let parts: Vec<&str> = package.split('.').collect();
    match parts.as_slice() {
        [.., name, version] if version.starts_with('v') => name.to_string(),
        [.., name] => name.to_string(),
        [] => package.to_string(),
    }
}

fn route(
    rpc: &MethodDescriptor,
    rule: &HttpRule,
    upstream: &str,
    anonymous: bool,
    idempotency_field: Option<FieldDescriptor>,
) -> Result<Route, RouteError> {
    let fail = |problem: String| RouteError::Rule {
        rpc: rpc.full_name().into(),
        problem,
    };
    let (method, path) = match &rule.pattern {
        Some(Pattern::Get(p)) => (Method::GET, p.clone()),
        Some(Pattern::Put(p)) => (Method::PUT, p.clone()),
        Some(Pattern::Post(p)) => (Method::POST, p.clone()),
        Some(Pattern::Delete(p)) => (Method::DELETE, p.clone()),
        Some(Pattern::Patch(p)) => (Method::PATCH, p.clone()),
        Some(Pattern::Custom(c)) => (
            Method::from_bytes(c.kind.as_bytes())
                .map_err(|e| fail(format!("custom method {}: {e}", c.kind)))?,
            c.path.clone(),
        ),
        None => return Err(fail("a rule without a pattern".into())),
    };
    let template = Template::parse(&path)?;
    let input = rpc.input();
    for variable in &template.variables {
        let field = field_at(&input, &variable.field_path)
            .ok_or_else(|| fail(format!("{{{}}} is not a field", variable.field_path.join("."))))?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(fail(format!(
                "{{{}}} must name a singular scalar field",
                variable.field_path.join(".")
            )));
        }
    }
    let body = match rule.body.as_str() {
        "" => Body::None,
        "*" => Body::Whole,
        name => Body::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| fail(format!("body {name:?} is not a field of the request")))?,
        ),
    };
    if matches!(body, Body::None) && rpc.is_server_streaming() && method != Method::GET {
        return Err(fail("a streaming route without a body must be GET".into()));
    }
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => Some(
            rpc.output()
                .get_field_by_name(name)
                .ok_or_else(|| fail(format!("response_body {name:?} is not a field of the response")))?,
        ),
    };
    Ok(Route {
        method,
        template,
        body,
        response_body,
        rpc: rpc.clone(),
        upstream: upstream.to_string(),
        anonymous,
        idempotency_field,
    })
}

/// The field a dotted path names, by proto name or JSON name at each step.
pub fn field_at(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for name in parents {
        let field = find_field(&current, name)?;
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
            _ => return None,
        }
    }
    find_field(&current, last)
}

pub fn find_field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        RouteTable::from_pool(&pool).expect("routes")
    }

    fn rpc_of(table: &RouteTable, method: Method, path: &str) -> Option<String> {
        match table.resolve(&method, path) {
            Resolved::Found(route, _) => Some(route.rpc.name().to_string()),
            _ => None,
        }
    }

    #[test]
    fn every_annotated_rpc_is_routed_and_internal_ones_are_not() {
        let table = table();
        let names: Vec<String> = table
            .routes()
            .iter()
            .map(|r| r.rpc.full_name().to_string())
            .collect();
        for expected in [
            "ticketing.identity.v1.IdentityService.Login",
            "ticketing.catalog.v1.CatalogService.ListEvents",
            "ticketing.inventory.v1.InventoryService.WatchAvailability",
            "ticketing.orders.v1.OrdersService.PayOrder",
            "ticketing.payments.v1.PaymentsService.ListTestCards",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        for internal in [
            "CommitHold",
            "ConfigureEvent",
            "Charge",
            "VerifyApiKey",
            "BatchGetTicketTiers",
        ] {
            assert!(
                !names.iter().any(|n| n.ends_with(internal)),
                "{internal} must stay internal"
            );
        }
    }

    #[test]
    fn resolves_literals_before_variables_verbs_and_additional_bindings() {
        let table = table();
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/payments/testCards").as_deref(),
            Some("ListTestCards")
        );
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/payments/p1").as_deref(),
            Some("GetPayment")
        );
        assert_eq!(
            rpc_of(&table, Method::POST, "/v1/orders/o1:pay").as_deref(),
            Some("PayOrder")
        );
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/orders/o1").as_deref(),
            Some("GetOrder")
        );
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/events/e1/orders").as_deref(),
            Some("ListOrders")
        );
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/organizations/o1/events").as_deref(),
            Some("ListEvents")
        );
        assert_eq!(
            rpc_of(&table, Method::HEAD, "/v1/events").as_deref(),
            Some("ListEvents")
        );
        match table.resolve(&Method::DELETE, "/v1/orders") {
            Resolved::MethodNotAllowed(allowed) => {
                assert!(allowed.contains(&Method::GET) && allowed.contains(&Method::POST))
            }
            _ => panic!("DELETE /v1/orders is a wrong method, not a missing route"),
        }
        assert!(matches!(
            table.resolve(&Method::GET, "/v2/nothing"),
            Resolved::NotFound
        ));
    }

    #[test]
    fn lookup_by_leading_literals_handles_verbs_encodings_and_short_paths() {
        let table = table();
        // The verb sits on the second segment, which is also the bucket's literal.
        assert_eq!(
            rpc_of(&table, Method::POST, "/v1/auth:login").as_deref(),
            Some("Login")
        );
        // Literals may be percent-encoded (%61 is `a`).
        assert_eq!(
            rpc_of(&table, Method::POST, "/v1/%61uth:login").as_deref(),
            Some("Login")
        );
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/users/me").as_deref(),
            Some("GetMe")
        );
        assert_eq!(
            rpc_of(&table, Method::GET, "/v1/users/u1").as_deref(),
            Some("GetUser")
        );
        match table.resolve(&Method::GET, "/v1/auth:login") {
            Resolved::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::POST]),
            _ => panic!("GET of a POST route is 405"),
        }
        for path in ["/", "", "/v1", "/v1/", "/v1/auth:", "/v1/nowhere/x"] {
            assert!(
                matches!(table.resolve(&Method::POST, path), Resolved::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn reads_bodies_and_the_anonymous_marker() {
        let table = table();
        let find = |name: &str| {
            table
                .routes()
                .iter()
                .find(|r| r.rpc.name() == name)
                .unwrap_or_else(|| panic!("{name}"))
        };
        assert!(matches!(find("CreateEvent").body, Body::Field(ref f) if f.name() == "event"));
        assert!(matches!(find("PayOrder").body, Body::Whole));
        assert!(matches!(find("GetEvent").body, Body::None));
        assert!(find("GetEvent").anonymous && find("Login").anonymous);
        assert!(!find("PayOrder").anonymous && !find("GetMe").anonymous);
        assert!(find("CreateOrder").idempotency_field.is_some());
        assert_eq!(find("HoldSeats").upstream, "inventory");
    }
}
