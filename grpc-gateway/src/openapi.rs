//! The OpenAPI 3 document of the routes, from the same descriptors and rules the gateway serves:
//! paths and methods from the templates, parameters from path variables and query fields,
//! schemas from the messages in their proto3 JSON form, the error schema, security schemes.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value as Json, json};

use crate::routes::{Body, Route, RouteTable};

/// Query parameters expand nested messages this deep (`filter.date.from`).
const QUERY_DEPTH: usize = 3;

pub fn document(table: &RouteTable, pool: &DescriptorPool) -> Json {
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, serde_json::Map<String, Json>> = BTreeMap::new();
    let names = parameter_names(table);
    // An RPC with additional bindings is one operation per binding: each needs its own id.
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for route in table.routes() {
        let shape = route.template.openapi_path_named(|_| String::new());
        let names = names.get(&shape).cloned().unwrap_or_default();
        let mut operation = operation(route, &names, &mut schemas);
        let seen = ids.entry(route.operation_id()).or_default();
        *seen += 1;
        if *seen > 1 {
            operation["operationId"] = json!(format!("{}{seen}", route.operation_id()));
        }
        let mut next = names.iter();
        let path = paths
            .entry(
                route
                    .template
                    .openapi_path_named(|_| next.next().cloned().unwrap_or_default()),
            )
            .or_default();
        let method = route.method.as_str().to_ascii_lowercase();
        // Additional bindings of the same method and path are one operation.
        path.entry(method).or_insert(operation);
    }
    if let Some(status) = pool.get_message_by_name("google.rpc.Status") {
        message_schema(&status, &mut schemas);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Ticketing platform API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST/JSON transcoded from the platform's gRPC services (google.api.http rules). \
                JSON is proto3 canonical JSON: lowerCamelCase names, 64-bit integers as strings, enums by name, \
                Timestamps as RFC 3339. Errors are google.rpc.Status. Server-streaming routes answer \
                text/event-stream (Accept: text/event-stream) or newline-delimited {\"result\": ...} objects.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            },
        },
    })
}

/// Path parameter names per path shape (the path with its variables blanked). OpenAPI forbids two
/// paths that differ only in parameter names, so `PATCH /v1/events/{event.id}` and
/// `GET /v1/events/{event_id}` must share one path and one name per position: the names of the
/// route with the plainest variables (fewest nested fields), dots turned into underscores.
fn parameter_names(table: &RouteTable) -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for route in table.routes() {
        let shape = route.template.openapi_path_named(|_| String::new());
        let variables = &route.template.variables;
        let depth: usize = variables.iter().map(|v| v.field_path.len()).sum();
        let candidate: Vec<String> = variables.iter().map(|v| v.field_path.join("_")).collect();
        match names.get(&shape) {
            Some((best, _)) if *best <= depth => {}
            _ => {
                names.insert(shape, (depth, candidate));
            }
        }
    }
    names.into_iter().map(|(shape, (_, n))| (shape, n)).collect()
}

fn operation(route: &Route, names: &[String], schemas: &mut BTreeMap<String, Json>) -> Json {
    let input = route.rpc.input();
    let mut parameters = Vec::new();
    let mut bound: BTreeSet<String> = BTreeSet::new();
    for (index, variable) in route.template.variables.iter().enumerate() {
        let field = variable.field_path.join(".");
        let name = names.get(index).cloned().unwrap_or_else(|| field.clone());
        let schema = crate::routes::field_at(&input, &variable.field_path)
            .map(|f| field_schema(&f, schemas))
            .unwrap_or_else(|| json!({ "type": "string" }));
        let mut parameter = json!({ "name": name, "in": "path", "required": true, "schema": schema });
        if name != field {
            parameter["description"] = json!(format!("Sets the request field `{field}`."));
        }
        parameters.push(parameter);
        bound.insert(field);
    }
    let mut request_body = None;
    match &route.body {
        Body::Whole => {
            request_body = Some(json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref(&input, schemas) } },
            }));
        }
        Body::Field(field) => {
            request_body = Some(json!({
                "required": true,
                "content": { "application/json": { "schema": field_schema(field, schemas) } },
            }));
            query_parameters(
                &input,
                "",
                &bound,
                Some(field.name()),
                0,
                &mut parameters,
                schemas,
            );
        }
        Body::None => query_parameters(&input, "", &bound, None, 0, &mut parameters, schemas),
    }
    if route.idempotency_field.is_some() {
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Fills idempotency_key when the body leaves it empty.",
            "schema": { "type": "string", "minLength": 8, "maxLength": 128 },
        }));
    }
    let output = route.rpc.output();
    let success = if route.is_streaming() {
        json!({
            "description": "A stream of messages",
            "content": {
                "text/event-stream": { "schema": { "type": "string" } },
                "application/json": { "schema": {
                    "type": "object",
                    "properties": { "result": schema_ref(&output, schemas), "error": { "$ref": "#/components/schemas/google.rpc.Status" } },
                } },
            },
        })
    } else if output.full_name() == "google.api.HttpBody" {
        json!({ "description": "The resource's bytes", "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } } })
    } else {
        let schema = match &route.response_body {
            Some(field) => field_schema(field, schemas),
            None => schema_ref(&output, schemas),
        };
        json!({ "description": "OK", "content": { "application/json": { "schema": schema } } })
    };
    let security = if route.anonymous {
        json!([{}, { "bearer": [] }, { "apiKey": [] }])
    } else {
        json!([{ "bearer": [] }, { "apiKey": [] }])
    };
    let mut op = json!({
        "operationId": route.operation_id(),
        "tags": [route.rpc.parent_service().name()],
        "summary": route.rpc.name(),
        "parameters": parameters,
        "responses": {
            "200": success,
            "default": {
                "description": "An error (google.rpc.Status)",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/google.rpc.Status" } } },
            },
        },
        "security": security,
    });
    if let Some(comment) = comments(&route.rpc) {
        op["description"] = Json::String(comment);
    }
    if let Some(body) = request_body {
        op["requestBody"] = body;
    }
    op
}

fn comments(rpc: &prost_reflect::MethodDescriptor) -> Option<String> {
    let file = rpc.parent_file();
    let location = file
        .file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| {
            info.location.iter().find(|l| {
                l.path.len() == 4
                    && l.path[0] == 6
                    && l.path[1] == rpc.parent_service().index() as i32
                    && l.path[2] == 2
                    && l.path[3] == rpc.index() as i32
            })
        })?;
    let text = location.leading_comments().trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[allow(clippy::too_many_arguments)]
fn query_parameters(
    message: &MessageDescriptor,
    prefix: &str,
    bound: &BTreeSet<String>,
    body_field: Option<&str>,
    depth: usize,
    out: &mut Vec<Json>,
    schemas: &mut BTreeMap<String, Json>,
) {
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        if bound.contains(&name) || (depth == 0 && Some(field.name()) == body_field) || field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(inner) if !is_scalar_like(&inner) => {
                if !field.is_list() && depth + 1 < QUERY_DEPTH {
                    query_parameters(&inner, &format!("{name}."), bound, None, depth + 1, out, schemas);
                }
            }
            _ => {
                let mut parameter = json!({
                    "name": name, "in": "query", "required": false, "schema": field_schema(&field, schemas),
                });
                if field.is_list() {
                    parameter["style"] = json!("form");
                    parameter["explode"] = json!(true);
                }
                out.push(parameter);
            }
        }
    }
}

/// Well-known types that travel as one JSON scalar.
fn is_scalar_like(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

fn schema_ref(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    if let Some(inline) = well_known(message) {
        return inline;
    }
    message_schema(message, schemas);
    json!({ "$ref": format!("#/components/schemas/{}", message.full_name()) })
}

fn well_known(message: &MessageDescriptor) -> Option<Json> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$" }),
        "google.protobuf.FieldMask" => {
            json!({ "type": "string", "description": "Comma-separated lowerCamelCase field paths" })
        }
        "google.protobuf.StringValue" => json!({ "type": "string", "nullable": true }),
        "google.protobuf.BytesValue" => json!({ "type": "string", "format": "byte", "nullable": true }),
        "google.protobuf.BoolValue" => json!({ "type": "boolean", "nullable": true }),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({ "type": "integer", "format": "int32", "nullable": true })
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({ "type": "string", "format": "int64", "nullable": true })
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            json!({ "type": "number", "nullable": true })
        }
        "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "additionalProperties": true,
        }),
        _ => return None,
    })
}

fn message_schema(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Json>) {
    let name = message.full_name().to_string();
    if schemas.contains_key(&name) {
        return;
    }
    // Placeholder first: recursive messages refer to themselves.
    schemas.insert(name.clone(), json!({}));
    let mut properties = serde_json::Map::new();
    for field in message.fields() {
        properties.insert(field.json_name().to_string(), field_schema(&field, schemas));
    }
    schemas.insert(
        name,
        json!({ "type": "object", "properties": properties, "additionalProperties": false }),
    );
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({ "type": "object" });
        };
        let value = entry.map_entry_value_field();
        return json!({ "type": "object", "additionalProperties": single_schema(&value, schemas) });
    }
    let single = single_schema(field, schemas);
    if field.is_list() {
        json!({ "type": "array", "items": single })
    } else {
        single
    }
}

/// A field's `(ticketing.common.v1.constraints)`: (uuid, minimum, maximum).
fn constraints(field: &FieldDescriptor) -> (bool, Option<i64>, Option<i64>) {
    let Some(extension) = field
        .parent_pool()
        .get_extension_by_name("ticketing.common.v1.constraints")
    else {
        return (false, None, None);
    };
    let options = field.options();
    if !options.has_extension(&extension) {
        return (false, None, None);
    }
    let value = options.get_extension(&extension);
    let Some(message) = value.as_message() else {
        return (false, None, None);
    };
    let number = |name: &str| {
        message
            .has_field_by_name(name)
            .then(|| message.get_field_by_name(name).and_then(|v| v.as_i64()))
            .flatten()
    };
    let uuid = message
        .get_field_by_name("uuid")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    (uuid, number("minimum"), number("maximum"))
}

fn single_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    let (uuid, minimum, maximum) = constraints(field);
    let bounded = |mut schema: Json| {
        if let Some(min) = minimum {
            schema["minimum"] = json!(min);
        }
        if let Some(max) = maximum {
            schema["maximum"] = json!(max);
        }
        schema
    };
    match field.kind() {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            bounded(json!({ "type": "integer", "format": "int32" }))
        }
        Kind::Uint32 | Kind::Fixed32 => {
            bounded(json!({ "type": "integer", "format": "int32", "minimum": 0 }))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String if uuid => json!({ "type": "string", "format": "uuid" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Enum(e) => json!({ "type": "string", "enum": crate::transcode::enum_names(&e) }),
        Kind::Message(m) => schema_ref(&m, schemas),
    }
}

/// A self-contained page listing every route, for people.
pub fn docs_html(table: &RouteTable) -> String {
    let mut rows = String::new();
    for route in table.routes() {
        let auth = if route.anonymous {
            "public"
        } else {
            "token or API key"
        };
        let kind = if route.is_streaming() {
            " (stream: SSE or NDJSON)"
        } else {
            ""
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code>{}</td><td>{}</td></tr>\n",
            route.method,
            escape(&route.template.openapi_path()),
            escape(route.rpc.full_name()),
            kind,
            auth
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ticketing API</title>\
         <style>body{{font-family:sans-serif;margin:2rem}}td,th{{padding:.25rem .75rem;text-align:left}}\
         tr:nth-child(even){{background:#f4f4f4}}</style></head><body><h1>Ticketing platform API</h1>\
         <p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3). JSON is proto3 JSON; \
         errors are <code>{{code, message, details}}</code>. Authenticate with <code>Authorization: Bearer</code> \
         or <code>X-API-Key</code>.</p><table><tr><th>Method</th><th>Path</th><th>RPC</th><th>Access</th></tr>\n\
         {rows}</table></body></html>"
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Json {
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let table = RouteTable::from_pool(&pool).expect("routes");
        document(&table, &pool)
    }

    #[test]
    fn paths_differing_only_in_parameter_names_are_one_path() {
        let doc = doc();
        let paths = doc["paths"].as_object().expect("paths");
        let mut shapes = BTreeSet::new();
        for path in paths.keys() {
            let mut shape = String::new();
            let mut inside = false;
            for c in path.chars() {
                match c {
                    '{' => inside = true,
                    '}' => {
                        inside = false;
                        shape.push_str("{}");
                    }
                    _ if !inside => shape.push(c),
                    _ => assert!(c != '.', "a dotted parameter name in {path}"),
                }
            }
            assert!(shapes.insert(shape), "two paths for the same URLs: {path}");
        }
        // GET, PATCH and DELETE of one event share a path; PATCH's parameter says what it sets.
        let event = &paths["/v1/events/{event_id}"];
        assert!(event["get"].is_object() && event["patch"].is_object() && event["delete"].is_object());
        let patch_param = &event["patch"]["parameters"][0];
        assert_eq!(patch_param["name"], "event_id");
        assert!(
            patch_param["description"]
                .as_str()
                .is_some_and(|d| d.contains("event.id"))
        );
        let tier = &paths["/v1/events/{event_id}/tiers/{tier_id}"];
        assert!(tier["patch"].is_object() && tier["delete"].is_object());
    }

    #[test]
    fn operation_ids_are_unique_and_constraints_are_stated() {
        let doc = doc();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                let id = operation["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "{method} {path}: {id} twice");
            }
        }
        let event = &doc["paths"]["/v1/events/{event_id}"]["get"]["parameters"][0];
        assert_eq!(event["schema"]["format"], "uuid");
        let hold = &doc["components"]["schemas"]["ticketing.inventory.v1.HoldQuantityRequest"];
        assert_eq!(hold["properties"]["quantity"]["minimum"], 1);
        assert_eq!(hold["properties"]["quantity"]["maximum"], 50);
        assert_eq!(hold["properties"]["eventId"]["format"], "uuid");
        assert!(hold["properties"]["tierId"].get("format").is_none());
        let card = &doc["components"]["schemas"]["ticketing.orders.v1.Card"];
        assert_eq!(card["properties"]["expMonth"]["maximum"], 12);
        let seat = &doc["components"]["schemas"]["ticketing.catalog.v1.Seat"];
        assert!(
            seat["properties"]["id"].get("format").is_none(),
            "seat ids are free text"
        );
        let list = &doc["paths"]["/v1/events"]["get"]["parameters"];
        let page_size = list
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "page_size")
            .expect("page_size");
        assert_eq!(page_size["schema"]["minimum"], 0);
    }

    #[test]
    fn every_path_parameter_is_declared_once_and_required() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .expect("parameters")
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().expect("name"))
                    .collect();
                let in_path = path.matches('{').count();
                assert_eq!(declared.len(), in_path, "{method} {path}");
                for name in declared {
                    assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: {name}");
                }
            }
        }
    }
}
