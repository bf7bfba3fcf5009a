//! The OpenAPI document as served at `/openapi.json`: utoipa's, completed
//! with what it cannot derive, so that it says exactly what the API does:
//! - every `/v1` operation may answer 401 (no or unknown key) and 503 (the
//!   database is unavailable);
//! - every operation with a body may answer 400 (not JSON, or not this
//!   shape), 408 (`body_timeout`), 413 (`max_body_bytes`) and 415 (not
//!   `application/json`);
//! - a device's `model` is one of the models the loaded profiles know, read
//!   at each request (profiles reload on SIGHUP).

use serde_json::{Value, json};

/// The completed document, without the model list.
pub(crate) struct Document {
    base: Value,
}

/// Responses every `/v1` operation may give.
const ANY_V1: &[(&str, &str)] = &[
    (
        "401",
        "No API key, or one this Commander does not accept (`unauthorized`)",
    ),
    (
        "503",
        "The database is unavailable; retry later (`unavailable`)",
    ),
];

/// Responses every operation with a request body may give.
const WITH_BODY: &[(&str, &str)] = &[
    (
        "400",
        "The body is not JSON, or not of this shape (`invalid_body`)",
    ),
    (
        "408",
        "The body did not arrive within `commander.api.body_timeout` (`request_timeout`)",
    ),
    (
        "413",
        "The body is larger than `commander.api.max_body_bytes` (`payload_too_large`)",
    ),
    (
        "415",
        "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)",
    ),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

impl Document {
    /// Completes `openapi`.
    pub(crate) fn new(openapi: &utoipa::openapi::OpenApi) -> Self {
        let mut base = serde_json::to_value(openapi).expect("the OpenAPI document serializes");
        let error = json!({
            "application/json": {"schema": {"$ref": "#/components/schemas/ApiErrorBody"}}
        });
        if let Some(paths) = base["paths"].as_object_mut() {
            for (path, item) in paths.iter_mut() {
                for method in METHODS {
                    let Some(operation) = item.get_mut(method) else {
                        continue;
                    };
                    let mut extra: Vec<(&str, &str)> = Vec::new();
                    if path.starts_with("/v1/") {
                        extra.extend(ANY_V1);
                    }
                    if operation.get("requestBody").is_some() {
                        extra.extend(WITH_BODY);
                    }
                    let responses = &mut operation["responses"];
                    for (status, description) in extra {
                        if responses.get(status).is_none() {
                            responses[status] =
                                json!({"description": description, "content": error.clone()});
                        }
                    }
                }
            }
        }
        // Links: what a response's ids lead to (clients and stateful
        // testers follow them).
        let device_id = json!({"id": "$response.body#/result/device/id"});
        let created = &mut base["paths"]["/v1/devices"]["post"]["responses"]["201"];
        if created.is_object() {
            created["links"] = json!({
                "GetDevice": {"operationId": "get_device", "parameters": device_id},
                "UpdateDevice": {"operationId": "update_device", "parameters": device_id},
                "DeleteDevice": {"operationId": "delete_device", "parameters": device_id},
                "GetTwin": {"operationId": "get_twin", "parameters": device_id},
                "PutDesired": {"operationId": "put_desired", "parameters": device_id},
                "ListCommands": {"operationId": "list_device_commands", "parameters": device_id},
            });
        }
        let sent =
            &mut base["paths"]["/v1/devices/{id}/commands/{name}"]["post"]["responses"]["202"];
        if sent.is_object() {
            sent["links"] = json!({
                "GetCommand": {"operationId": "get_command", "parameters": {"id": "$response.body#/result/id"}},
            });
        }
        // Metadata is free-form, but a firmware version is a string.
        for schema in ["NewDevice", "DeviceUpdate"] {
            let metadata = &mut base["components"]["schemas"][schema]["properties"]["metadata"];
            if metadata.is_object() {
                metadata["properties"] = json!({"firmware": {
                    "type": "string",
                    "description": "A version like 2.1.0, checked against profiles' firmware requirements"
                }});
            }
        }
        // A desired-state patch sets at least one key.
        let desired = &mut base["paths"]["/v1/devices/{id}/twin/desired"]["put"]["requestBody"]["content"]
            ["application/json"]["schema"];
        if desired.is_object() {
            desired["minProperties"] = json!(1);
        }
        Document { base }
    }

    /// The document, with `models` as the device models a device may have.
    pub(crate) fn render(&self, models: &[&str]) -> String {
        let mut document = self.base.clone();
        for schema in ["NewDevice", "DeviceUpdate"] {
            let model = &mut document["components"]["schemas"][schema]["properties"]["model"];
            if model.is_object() {
                model["enum"] = json!(models);
            }
        }
        document.to_string()
    }
}
