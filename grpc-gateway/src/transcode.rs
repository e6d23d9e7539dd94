//! HTTP request -> request message, and response message -> JSON, by the proto3 JSON mapping.
//!
//! The request is assembled as one JSON object (the body, then query parameters, then path
//! variables, each converted by the field's type) and decoded with the message's descriptor, so
//! every field type, well-known type and error message comes from one canonical JSON decoder
//! (prost-reflect's) and unknown fields are refused by name.

use http::Method;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value as Json};

use crate::routes::{Body, Route, find_field};

/// A request the client got wrong: 400 with this message and, where known, the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub field: Option<String>,
    pub message: String,
}

impl BadRequest {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

/// The most query parameters one request may carry.
const MAX_QUERY_PARAMS: usize = 200;

/// Builds the request message of `route` from the path bindings, the query string and the body.
pub fn request_message(
    route: &Route,
    bindings: Vec<(Vec<String>, String)>,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, BadRequest> {
    let input = route.rpc.input();
    let mut root = Map::new();
    match &route.body {
        Body::Whole => {
            root = parse_body(body)?
                .map(|json| match json {
                    Json::Object(map) => Ok(map),
                    _ => Err(BadRequest::general("the body must be a JSON object")),
                })
                .transpose()?
                .unwrap_or_default();
            if query.is_some_and(|q| !q.is_empty()) {
                return Err(BadRequest::general(
                    "this route takes its fields in the JSON body, not as query parameters",
                ));
            }
        }
        Body::Field(field) => {
            if let Some(json) = parse_body(body)? {
                root.insert(field.json_name().to_string(), json);
            }
        }
        Body::None => {
            // Clients often send `{}` with a POST; anything more would be silently lost.
            let empty = match parse_body(body)? {
                None => true,
                Some(Json::Object(map)) => map.is_empty(),
                Some(_) => false,
            };
            if !empty {
                return Err(BadRequest::general(
                    "this route takes no request body; its fields are path and query parameters",
                ));
            }
        }
    }
    if !matches!(route.body, Body::Whole) {
        let params: Vec<(String, String)> = form_urlencoded(query.unwrap_or(""))?;
        if params.len() > MAX_QUERY_PARAMS {
            return Err(BadRequest::general("too many query parameters"));
        }
        let body_field = match &route.body {
            Body::Field(f) => Some(f.name().to_string()),
            _ => None,
        };
        for (name, value) in params {
            let path: Vec<String> = name.split('.').map(str::to_string).collect();
            if route.template.variables.iter().any(|v| v.field_path == path) {
                // Bound by the path already.
                continue;
            }
            if body_field.as_deref() == path.first().map(String::as_str) {
                return Err(BadRequest::field(name, "is set by the request body"));
            }
            set_path(&mut root, &input, &path, &value, &name, true)?;
        }
    }
    fill_patch_mask(route, &mut root);
    for (path, value) in bindings {
        let name = path.join(".");
        set_path(&mut root, &input, &path, &value, &name, false)?;
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    // The path tracker names the field a value was wrong for (`venue.seatingChart.sections[0]`).
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(Json::Object(root), &mut track);
    let message = DynamicMessage::deserialize_with_options(input, deserializer, &options).map_err(|e| {
        let path = track.path().to_string();
        if path.is_empty() || path == "." {
            BadRequest::general(format!("invalid request: {e}"))
        } else {
            BadRequest::field(path.clone(), format!("invalid value for {path}: {e}"))
        }
    })?;
    // No service stores a NUL character (PostgreSQL text cannot hold one): refuse it here, by
    // its field, rather than let a service fail on it.
    if let Some(field) = nul_in(&message, "") {
        return Err(BadRequest::field(field, "must not contain NUL characters"));
    }
    Ok(message)
}

/// grpc-gateway's PATCH feature: a PATCH whose body is one field, without an `updateMask`
/// parameter, changes the fields whose keys the JSON body holds (so that a client can set one to
/// false, 0 or ""). Only the body's top-level keys count: a nested object names its whole field.
/// Keys bound by the path (the resource's id) are not changes and are left out.
fn fill_patch_mask(route: &Route, root: &mut Map<String, Json>) {
    let Body::Field(body_field) = &route.body else {
        return;
    };
    if route.method != Method::PATCH {
        return;
    }
    let input = route.rpc.input();
    let masks: Vec<_> = input
        .fields()
        .filter(|f| matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask"))
        .collect();
    let [mask] = masks.as_slice() else {
        return;
    };
    if root.contains_key(mask.json_name()) || root.contains_key(mask.name()) {
        return;
    }
    let (Some(Json::Object(body)), Kind::Message(resource)) =
        (root.get(body_field.json_name()), body_field.kind())
    else {
        return;
    };
    let bound: Vec<&str> = route
        .template
        .variables
        .iter()
        .filter(|v| v.field_path.first().map(String::as_str) == Some(body_field.name()))
        .filter_map(|v| v.field_path.get(1).map(String::as_str))
        .collect();
    let paths: Vec<String> = body
        .keys()
        .filter_map(|key| {
            resource
                .get_field_by_json_name(key)
                .or_else(|| resource.get_field_by_name(key))
        })
        .filter(|f| !bound.contains(&f.name()))
        .map(|f| f.json_name().to_string())
        .collect();
    if paths.is_empty() {
        // Nothing to change: the service says so.
        return;
    }
    // The FieldMask's JSON form: lowerCamelCase paths joined by commas.
    root.insert(mask.json_name().to_string(), Json::String(paths.join(",")));
}

/// The JSON path of the first string in `message` that holds a NUL character.
fn nul_in(message: &DynamicMessage, prefix: &str) -> Option<String> {
    fn in_value(value: &prost_reflect::Value, path: &str) -> Option<String> {
        use prost_reflect::Value;
        match value {
            Value::String(s) if s.contains('\0') => Some(path.to_string()),
            Value::Message(m) => nul_in(m, path),
            Value::List(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| in_value(v, &format!("{path}[{i}]"))),
            Value::Map(entries) => entries.iter().find_map(|(k, v)| {
                let key = match k {
                    prost_reflect::MapKey::String(k) => k.clone(),
                    other => format!("{other:?}"),
                };
                if key.contains('\0') {
                    return Some(path.to_string());
                }
                in_value(v, &format!("{path}[{key}]"))
            }),
            _ => None,
        }
    }
    message.fields().find_map(|(field, value)| {
        let path = if prefix.is_empty() {
            field.json_name().to_string()
        } else {
            format!("{prefix}.{}", field.json_name())
        };
        in_value(value, &path)
    })
}

fn parse_body(body: &[u8]) -> Result<Option<Json>, BadRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| BadRequest::general(format!("malformed JSON body: {e}")))
}

fn form_urlencoded(query: &str) -> Result<Vec<(String, String)>, BadRequest> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            crate::template::decode(&s.replace('+', " "), true).ok_or_else(|| {
                BadRequest::general(format!("query parameter {s:?} is not valid percent-encoding"))
            })
        };
        out.push((decode(name)?, decode(value)?));
    }
    Ok(out)
}

/// Sets `path` in the JSON tree to `raw`, converted for the field's type; `repeatable` allows
/// a repeated field to collect several values (query parameters).
fn set_path(
    root: &mut Map<String, Json>,
    message: &MessageDescriptor,
    path: &[String],
    raw: &str,
    name: &str,
    repeatable: bool,
) -> Result<(), BadRequest> {
    let Some((last, parents)) = path.split_last() else {
        return Err(BadRequest::general("empty field name"));
    };
    let mut node = root;
    let mut current = message.clone();
    for segment in parents {
        let field = find_field(&current, segment).ok_or_else(|| BadRequest::field(name, "is not a field"))?;
        let Kind::Message(inner) = field.kind() else {
            return Err(BadRequest::field(name, format!("{segment} is not a message")));
        };
        if field.is_list() || field.is_map() {
            return Err(BadRequest::field(
                name,
                "repeated messages cannot be set this way",
            ));
        }
        let key = canonical_key(node, &field);
        let child = node.entry(key).or_insert_with(|| Json::Object(Map::new()));
        let Json::Object(child) = child else {
            return Err(BadRequest::field(name, "is set twice"));
        };
        node = child;
        current = inner;
    }
    // `labels[key]=value` sets a map entry.
    if let Some((map_name, key)) = last.strip_suffix(']').and_then(|l| l.split_once('[')) {
        let field =
            find_field(&current, map_name).ok_or_else(|| BadRequest::field(name, "is not a field"))?;
        let Kind::Message(entry) = field.kind() else {
            return Err(BadRequest::field(name, "is not a map"));
        };
        if !field.is_map() {
            return Err(BadRequest::field(name, "is not a map"));
        }
        let value_field = entry.map_entry_value_field();
        let value = scalar_json(&value_field, raw).map_err(|m| BadRequest::field(name, m))?;
        let slot = canonical_key(node, &field);
        let map = node.entry(slot).or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(map) = map {
            map.insert(key.to_string(), value);
        }
        return Ok(());
    }
    let field = find_field(&current, last).ok_or_else(|| BadRequest::field(name, "is not a field"))?;
    if field.is_map() {
        return Err(BadRequest::field(
            name,
            format!("is a map: use {last}[key]=value"),
        ));
    }
    let value = scalar_json(&field, raw).map_err(|m| BadRequest::field(name, m))?;
    let key = canonical_key(node, &field);
    if field.is_list() {
        if !repeatable {
            return Err(BadRequest::field(name, "a path variable cannot be repeated"));
        }
        match node.entry(key).or_insert_with(|| Json::Array(Vec::new())) {
            Json::Array(items) => items.push(value),
            _ => return Err(BadRequest::field(name, "is set twice")),
        }
    } else if repeatable && node.contains_key(&key) {
        return Err(BadRequest::field(name, "is given more than once"));
    } else {
        // A path variable wins over the same field in the body.
        node.insert(key, value);
    }
    Ok(())
}

/// The key a field is stored under: its JSON name, after removing the proto-name spelling a
/// body may have used, so the decoder never sees the field twice.
fn canonical_key(node: &mut Map<String, Json>, field: &FieldDescriptor) -> String {
    if field.name() != field.json_name()
        && let Some(value) = node.remove(field.name())
    {
        node.entry(field.json_name().to_string()).or_insert(value);
    }
    field.json_name().to_string()
}

/// A path or query string value as the JSON the field's type expects.
fn scalar_json(field: &FieldDescriptor, raw: &str) -> Result<Json, String> {
    Ok(match field.kind() {
        Kind::Bool => match raw {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return Err(format!("{raw:?} is not a boolean")),
        },
        Kind::Enum(e) => {
            if let Ok(number) = raw.parse::<i32>() {
                Json::from(number)
            } else if e.get_value_by_name(raw).is_some() {
                Json::String(raw.to_string())
            } else {
                return Err(format!("{raw:?} is not one of {}", enum_names(&e).join(", ")));
            }
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue" => Json::String(raw.to_string()),
            "google.protobuf.BoolValue" => match raw {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                _ => return Err(format!("{raw:?} is not a boolean")),
            },
            other => return Err(format!("is a {other}: set its fields as name.field")),
        },
        // Numbers travel as strings, which the JSON mapping accepts for every numeric type;
        // checked here so the error names the parameter.
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => number::<i32>(raw, "a 32-bit integer")?,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => number::<i64>(raw, "a 64-bit integer")?,
        Kind::Uint32 | Kind::Fixed32 => number::<u32>(raw, "an unsigned 32-bit integer")?,
        Kind::Uint64 | Kind::Fixed64 => number::<u64>(raw, "an unsigned 64-bit integer")?,
        Kind::Float | Kind::Double => match raw {
            "NaN" | "Infinity" | "-Infinity" => Json::String(raw.to_string()),
            _ => number::<f64>(raw, "a number")?,
        },
        Kind::String | Kind::Bytes => Json::String(raw.to_string()),
    })
}

fn number<T: std::str::FromStr>(raw: &str, what: &str) -> Result<Json, String> {
    raw.parse::<T>()
        .map(|_| Json::String(raw.to_string()))
        .map_err(|_| format!("{raw:?} is not {what}"))
}

pub fn enum_names(e: &prost_reflect::EnumDescriptor) -> Vec<String> {
    e.values().map(|v| v.name().to_string()).collect()
}

/// grpc-gateway's defaults: lowerCamelCase names, enums by name, 64-bit integers as strings,
/// and every field present, set or not, so clients see the whole shape.
pub fn serialize_options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

/// The JSON of a response message, or of its `response_body` field.
pub fn response_json(route: &Route, message: &DynamicMessage) -> Result<Vec<u8>, serde_json::Error> {
    let options = serialize_options();
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    match &route.response_body {
        Some(field) => {
            let value = message.get_field(field);
            let wrapper = FieldOnly {
                value: value.as_ref(),
                field,
                options: &options,
            };
            serde::Serialize::serialize(&wrapper, &mut serializer)?;
        }
        None => message.serialize_with_options(&mut serializer, &options)?,
    }
    Ok(out)
}

/// Serializes one field's value as JSON, by putting it alone in a message of its parent's type
/// and taking it back out.
struct FieldOnly<'a> {
    value: &'a prost_reflect::Value,
    field: &'a FieldDescriptor,
    options: &'a SerializeOptions,
}

impl serde::Serialize for FieldOnly<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut holder = DynamicMessage::new(self.field.parent_message().clone());
        holder.set_field(self.field, self.value.clone());
        let json = holder
            .serialize_with_options(serde_json::value::Serializer, self.options)
            .map_err(S::Error::custom)?;
        let inner = match json {
            Json::Object(mut map) => map.remove(self.field.json_name()).unwrap_or(Json::Null),
            other => other,
        };
        serde::Serialize::serialize(&inner, serializer)
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, ReflectMessage, Value};

    use super::*;
    use crate::routes::RouteTable;

    fn route(rpc: &str, template: &str) -> Route {
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let table = RouteTable::from_pool(&pool).expect("routes");
        table
            .routes()
            .iter()
            .find(|r| r.rpc.name() == rpc && r.template.to_string() == template)
            .map(|r| Route::clone(r))
            .unwrap_or_else(|| panic!("{rpc} {template}"))
    }

    fn field(message: &DynamicMessage, path: &str) -> Value {
        let mut current = message.clone();
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            current = current
                .get_field_by_name(part)
                .and_then(|v| v.as_message().cloned())
                .expect("a message");
        }
        current
            .get_field_by_name(parts[parts.len() - 1])
            .map(|v| v.into_owned())
            .expect("a field")
    }

    #[test]
    fn query_parameters_fill_repeated_enums_timestamps_numbers_and_booleans() {
        let list = route("ListEvents", "/v1/events");
        let message = request_message(
            &list,
            vec![],
            Some(
                "statuses=EVENT_STATUS_PUBLISHED&statuses=2&pageSize=25&startsAfter=2026-12-24T18%3A00%3A00Z\
                 &orderBy=EVENT_ORDER_BY_STARTS_AT&query=caf%C3%A9+concert",
            ),
            b"",
        )
        .expect("valid");
        assert_eq!(
            field(&message, "statuses"),
            Value::List(vec![Value::EnumNumber(2), Value::EnumNumber(2)])
        );
        assert_eq!(field(&message, "page_size"), Value::I32(25));
        assert_eq!(field(&message, "query"), Value::String("café concert".into()));
        let starts = field(&message, "starts_after");
        let seconds = starts
            .as_message()
            .and_then(|m| m.get_field_by_name("seconds"))
            .and_then(|v| v.as_i64());
        assert_eq!(seconds, Some(1_798_135_200));
        let availability = route("GetAvailability", "/v1/events/{event_id}/availability");
        let message = request_message(
            &availability,
            vec![(vec!["event_id".into()], "e1".into())],
            Some("countsOnly=true"),
            b"",
        )
        .expect("valid");
        assert_eq!(field(&message, "counts_only"), Value::Bool(true));
        assert_eq!(field(&message, "event_id"), Value::String("e1".into()));
    }

    #[test]
    fn query_parameters_that_cannot_be_mapped_are_refused_by_name() {
        let list = route("ListEvents", "/v1/events");
        for (query, name) in [
            ("pageSize=ten", "pageSize"),
            ("statuses=EVENT_STATUS_NAPPING", "statuses"),
            ("colour=red", "colour"),
            ("pageSize=1&pageSize=2", "pageSize"),
            ("startsAfter.seconds=5", "startsAfter"),
            ("query=%ZZ", "%ZZ"),
        ] {
            let error = request_message(&list, vec![], Some(query), b"").expect_err(query);
            let text = format!("{error:?}");
            assert!(text.contains(name), "{query}: {text}");
        }
    }

    #[test]
    fn a_nested_path_variable_sets_the_field_inside_the_body_message() {
        let update = route("UpdateEvent", "/v1/events/{event.id}");
        let message = request_message(
            &update,
            vec![(vec!["event".into(), "id".into()], "from-path".into())],
            Some("updateMask=title,description"),
            br#"{"id": "from-body", "title": "New"}"#,
        )
        .expect("valid");
        // The path wins over the body; the body fills the rest of its field.
        assert_eq!(field(&message, "event.id"), Value::String("from-path".into()));
        assert_eq!(field(&message, "event.title"), Value::String("New".into()));
        let mask = field(&message, "update_mask");
        let paths = mask
            .as_message()
            .and_then(|m| m.get_field_by_name("paths"))
            .map(|v| v.into_owned());
        assert_eq!(
            paths,
            Some(Value::List(vec![
                Value::String("title".into()),
                Value::String("description".into())
            ]))
        );
        // A query parameter may not reach into the body field.
        let error = request_message(
            &update,
            vec![(vec!["event".into(), "id".into()], "x".into())],
            Some("event.title=Sneaky"),
            br#"{}"#,
        )
        .expect_err("set by the body");
        assert_eq!(error.field.as_deref(), Some("event.title"));
    }

    fn mask_paths(message: &DynamicMessage) -> Vec<String> {
        match field(message, "update_mask")
            .as_message()
            .and_then(|m| m.get_field_by_name("paths"))
            .map(|v| v.into_owned())
        {
            Some(Value::List(paths)) => paths
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
            other => panic!("no paths: {other:?}"),
        }
    }

    #[test]
    fn a_patch_without_update_mask_changes_the_keys_of_its_body() {
        let update = route("UpdateTicketTier", "/v1/events/{tier.event_id}/tiers/{tier.id}");
        let ids = vec![
            (vec!["tier".into(), "event_id".into()], "e".into()),
            (vec!["tier".into(), "id".into()], "t".into()),
        ];
        // A default value (0) is a change too; the ids bound by the path are not.
        let message = request_message(
            &update,
            ids.clone(),
            None,
            br#"{"perOrderLimit": 0, "sales_end": "2030-01-01T00:00:00Z", "id": "t"}"#,
        )
        .expect("valid");
        let mut paths = mask_paths(&message);
        paths.sort();
        assert_eq!(paths, ["per_order_limit", "sales_end"]);
        // A mask the client gives wins.
        let message = request_message(
            &update,
            ids.clone(),
            Some("updateMask=name"),
            br#"{"perOrderLimit": 3}"#,
        )
        .expect("valid");
        assert_eq!(mask_paths(&message), ["name"]);
        // An empty body names nothing: the service says there is nothing to change.
        let message = request_message(&update, ids, None, br#"{}"#).expect("valid");
        assert!(mask_paths(&message).is_empty());
    }

    #[test]
    fn body_star_takes_everything_from_json_and_nothing_from_the_query() {
        let create = route("CreateOrder", "/v1/orders");
        let message = request_message(
            &create,
            vec![],
            None,
            br#"{"hold_id": "h1", "idempotencyKey": "k-123456"}"#,
        )
        .expect("proto names are accepted too");
        assert_eq!(field(&message, "hold_id"), Value::String("h1".into()));
        assert!(request_message(&create, vec![], Some("holdId=h1"), b"{}").is_err());
        assert!(request_message(&create, vec![], None, b"[1, 2]").is_err());
        let unknown =
            request_message(&create, vec![], None, br#"{"holdId":"h","tip":5}"#).expect_err("unknown field");
        assert!(unknown.message.contains("tip"), "{}", unknown.message);
    }

    #[test]
    fn response_body_renders_one_field_of_the_reply() {
        let mut get = route("GetEvent", "/v1/events/{event_id}");
        let output = get.rpc.output();
        let title = output.get_field_by_name("title").expect("title");
        let tiers = output.get_field_by_name("tiers").expect("tiers");
        let mut reply = DynamicMessage::new(output.clone());
        reply.set_field(&title, Value::String("Night".into()));
        let tier_descriptor = match tiers.kind() {
            Kind::Message(m) => m,
            _ => panic!("tiers are messages"),
        };
        let mut tier = DynamicMessage::new(tier_descriptor);
        tier.set_field_by_name("name", Value::String("VIP".into()));
        reply.set_field(&tiers, Value::List(vec![Value::Message(tier)]));
        let whole: Json = serde_json::from_slice(&response_json(&get, &reply).expect("json")).expect("parse");
        assert_eq!(whole["title"], "Night");
        get.response_body = Some(title);
        assert_eq!(response_json(&get, &reply).expect("json"), br#""Night""#);
        get.response_body = Some(tiers);
        let list: Json = serde_json::from_slice(&response_json(&get, &reply).expect("json")).expect("parse");
        assert_eq!(list[0]["name"], "VIP");
        assert_eq!(reply.descriptor().full_name(), output.full_name());
    }
}
