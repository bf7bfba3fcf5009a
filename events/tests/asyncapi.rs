//! `docs/asyncapi.yaml` is what `wharf_events::schema` renders (run with
//! `WHARF_BLESS=1` to write it after changing the wire format), and every
//! golden fixture validates against its type's schema, so the document says
//! what the encoder writes.

use std::path::Path;

use serde_json::Value;
use wharf_events::schema;

fn document_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.yaml")
}

#[test]
fn the_committed_asyncapi_document_is_current() {
    let rendered = schema::to_yaml(&schema::asyncapi());
    let path = document_path();
    if std::env::var_os("WHARF_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is stale: run `WHARF_BLESS=1 cargo test -p wharf-events --test asyncapi` and commit it",
        path.display()
    );
}

#[test]
fn every_golden_fixture_validates_against_its_schema() {
    let schemas: Vec<(&str, Value)> = schema::event_data_schemas()
        .into_iter()
        .map(|(kind, _, data)| (kind, schema::envelope_schema(kind, &data)))
        .collect();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let kind = event["type"].as_str().unwrap();
        let (_, schema) = schemas
            .iter()
            .find(|(name, _)| *name == kind)
            .unwrap_or_else(|| panic!("no schema for {kind}"));
        let problems = validate(schema, &event, "$");
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        seen += 1;
    }
    assert!(seen >= schemas.len(), "a fixture per type at least");
    // And the schemas refuse what the encoder never writes.
    let (_, failed) = schemas
        .iter()
        .find(|(name, _)| *name == "CommandFailed")
        .unwrap();
    let mut wrong: Value = serde_json::from_str(
        r#"{"id":"8eb09f4b-5c7d-5b6e-8fa0-4d5e6f708192","type":"CommandFailed","v":1,"time":"2026-11-22T10:00:00.123Z","device":"d","source":"s","correlation":"8eb09f4b-5c7d-5b6e-8fa0-4d5e6f708192","data":{"command_id":"8eb09f4b-5c7d-5b6e-8fa0-4d5e6f708192","reason":"bored","detail":"x"}}"#,
    )
    .unwrap();
    assert!(
        !validate(failed, &wrong, "$").is_empty(),
        "an unknown reason"
    );
    wrong["data"]["reason"] = "no_ack".into();
    wrong["data"]["extra"] = 1.into();
    assert!(
        !validate(failed, &wrong, "$").is_empty(),
        "an unknown field"
    );
}

/// The JSON Schema keywords these schemas use: type, properties, required,
/// additionalProperties (false), enum, const, format (uuid, date-time).
fn validate(schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        problems.push(format!("{at}: {value} is not {expected}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                return vec![format!("{at}: not an object")];
            };
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !object.contains_key(name) {
                    problems.push(format!("{at}: {name} is missing"));
                }
            }
            for (name, item) in object {
                match properties.get(name) {
                    Some(property) => {
                        problems.extend(validate(property, item, &format!("{at}.{name}")))
                    }
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        problems.push(format!("{at}: {name} is not a field"))
                    }
                    None => {}
                }
            }
        }
        Some("string") => match value.as_str() {
            None => problems.push(format!("{at}: not a string")),
            Some(text) => match schema.get("format").and_then(Value::as_str) {
                Some("uuid") if uuid::Uuid::parse_str(text).is_err() => {
                    problems.push(format!("{at}: not a UUID"))
                }
                Some("date-time") if humantime::parse_rfc3339(text).is_err() => {
                    problems.push(format!("{at}: not RFC 3339"))
                }
                _ => {}
            },
        },
        Some("integer") if !value.is_i64() && !value.is_u64() => {
            problems.push(format!("{at}: not an integer"))
        }
        _ => {}
    }
    problems
}
