//! Binary templates: a command as a sequence of typed fields, for TCP and
//! UDP devices that speak bytes, not JSON.
//!
//! ```toml
//! binary = [
//!   { type = "u8", value = 2 },                        # opcode
//!   { type = "i16be", arg = "celsius", scale = 10 },   # 21.5 → 215
//!   { type = "bytes", arg = "label", length_prefix = "u8" },
//! ]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;
use wharf_events::RejectReason;

use super::Rejection;
use super::args::{ArgSpec, ArgType};

/// How one field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    U8,
    I8,
    U16be,
    U16le,
    I16be,
    I16le,
    U32be,
    U32le,
    I32be,
    I32le,
    F32be,
    F32le,
    /// A string argument's UTF-8 bytes, or a constant (`"hex:0a0b"` for raw
    /// bytes); `length_prefix` optionally writes its length first.
    Bytes,
    /// The command id's 16 bytes, so the device can answer about it.
    #[serde(rename = "command_id")]
    CommandId,
}

impl FieldType {
    /// The inclusive range of an integer type.
    fn integer_range(self) -> Option<(f64, f64)> {
        Some(match self {
            FieldType::U8 => (0.0, u8::MAX.into()),
            FieldType::I8 => (i8::MIN.into(), i8::MAX.into()),
            FieldType::U16be | FieldType::U16le => (0.0, u16::MAX.into()),
            FieldType::I16be | FieldType::I16le => (i16::MIN.into(), i16::MAX.into()),
            FieldType::U32be | FieldType::U32le => (0.0, u32::MAX.into()),
            FieldType::I32be | FieldType::I32le => (i32::MIN.into(), i32::MAX.into()),
            _ => return None,
        })
    }

    fn is_numeric(self) -> bool {
        !matches!(self, FieldType::Bytes | FieldType::CommandId)
    }

    fn name(self) -> &'static str {
        match self {
            FieldType::U8 => "u8",
            FieldType::I8 => "i8",
            FieldType::U16be => "u16be",
            FieldType::U16le => "u16le",
            FieldType::I16be => "i16be",
            FieldType::I16le => "i16le",
            FieldType::U32be => "u32be",
            FieldType::U32le => "u32le",
            FieldType::I32be => "i32be",
            FieldType::I32le => "i32le",
            FieldType::F32be => "f32be",
            FieldType::F32le => "f32le",
            FieldType::Bytes => "bytes",
            FieldType::CommandId => "command_id",
        }
    }

    /// Writes `number` (already scaled); the reason when it does not fit.
    fn write_number(self, number: f64, out: &mut Vec<u8>) -> Result<(), String> {
        if let Some((min, max)) = self.integer_range() {
            let rounded = number.round();
            if !(min..=max).contains(&rounded) {
                return Err(format!(
                    "{number} does not fit {} ({min}..={max})",
                    self.name()
                ));
            }
            // In range, so these conversions are exact.
            let n = rounded as i64;
            match self {
                FieldType::U8 => out.push(n as u8),
                FieldType::I8 => out.push(n as i8 as u8),
                FieldType::U16be => out.extend((n as u16).to_be_bytes()),
                FieldType::U16le => out.extend((n as u16).to_le_bytes()),
                FieldType::I16be => out.extend((n as i16).to_be_bytes()),
                FieldType::I16le => out.extend((n as i16).to_le_bytes()),
                FieldType::U32be => out.extend((n as u32).to_be_bytes()),
                FieldType::U32le => out.extend((n as u32).to_le_bytes()),
                FieldType::I32be => out.extend((n as i32).to_be_bytes()),
                FieldType::I32le => out.extend((n as i32).to_le_bytes()),
                _ => unreachable!("integer_range is Some for integer types only"),
            }
            return Ok(());
        }
        match self {
            FieldType::F32be => out.extend((number as f32).to_be_bytes()),
            FieldType::F32le => out.extend((number as f32).to_le_bytes()),
            _ => return Err(format!("{} is not a number field", self.name())),
        }
        Ok(())
    }
}

/// One field as a profile writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// The argument whose value fills the field.
    pub arg: Option<String>,
    /// A constant.
    pub value: Option<Value>,
    /// Multiplies a number before it is written (fixed point).
    pub scale: Option<f64>,
    /// For `bytes`: the integer type its length is written as, first.
    pub length_prefix: Option<FieldType>,
}

/// A checked binary template.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BinaryTemplate {
    fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Constant(Vec<u8>),
    Number {
        kind: FieldType,
        arg: String,
        scale: f64,
    },
    Text {
        arg: String,
        length_prefix: Option<FieldType>,
    },
    CommandId,
}

impl BinaryTemplate {
    /// Checks `specs` against the command's declared `args`; every problem
    /// names the field by index.
    pub(crate) fn parse(
        specs: &[FieldSpec],
        args: Option<&BTreeMap<String, ArgSpec>>,
    ) -> Result<Self, Vec<String>> {
        let mut fields = Vec::new();
        let mut problems = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            match Field::parse(spec, args) {
                Ok(field) => fields.push(field),
                Err(problem) => problems.push(format!("binary[{i}]: {problem}")),
            }
        }
        if specs.is_empty() {
            problems.push("binary: needs at least one field".into());
        }
        if problems.is_empty() {
            Ok(BinaryTemplate { fields })
        } else {
            Err(problems)
        }
    }

    /// The bytes for `args` (already checked against their declarations).
    pub(crate) fn render(&self, args: &Map<String, Value>, id: Uuid) -> Result<Vec<u8>, Rejection> {
        let mut out = Vec::new();
        for field in &self.fields {
            match field {
                Field::Constant(bytes) => out.extend_from_slice(bytes),
                Field::CommandId => out.extend_from_slice(id.as_bytes()),
                Field::Number { kind, arg, scale } => {
                    let number = args.get(arg).and_then(number_of).ok_or_else(|| {
                        invalid(arg, format!("argument {arg} is missing or not a number"))
                    })?;
                    kind.write_number(number * scale, &mut out)
                        .map_err(|problem| invalid(arg, format!("argument {arg}: {problem}")))?;
                }
                Field::Text { arg, length_prefix } => {
                    let text = args.get(arg).and_then(Value::as_str).ok_or_else(|| {
                        invalid(arg, format!("argument {arg} is missing or not a string"))
                    })?;
                    write_bytes(text.as_bytes(), *length_prefix, &mut out)
                        .map_err(|problem| invalid(arg, format!("argument {arg}: {problem}")))?;
                }
            }
        }
        Ok(out)
    }
}

impl Field {
    fn parse(spec: &FieldSpec, args: Option<&BTreeMap<String, ArgSpec>>) -> Result<Self, String> {
        if spec.length_prefix.is_some() && spec.kind != FieldType::Bytes {
            return Err("length_prefix applies to bytes fields only".into());
        }
        if let Some(prefix) = spec.length_prefix
            && !matches!(
                prefix,
                FieldType::U8
                    | FieldType::U16be
                    | FieldType::U16le
                    | FieldType::U32be
                    | FieldType::U32le
            )
        {
            return Err(format!(
                "length_prefix {} is not an unsigned integer type",
                prefix.name()
            ));
        }
        if spec.scale.is_some() && !spec.kind.is_numeric() {
            return Err("scale applies to number fields only".into());
        }
        match (spec.kind, &spec.arg, &spec.value) {
            (FieldType::CommandId, None, None) => Ok(Field::CommandId),
            (FieldType::CommandId, _, _) => Err("a command_id field takes no arg or value".into()),
            (_, Some(_), Some(_)) | (_, None, None) => {
                Err("needs exactly one of arg and value".into())
            }
            (kind, None, Some(value)) => {
                let mut bytes = Vec::new();
                if kind == FieldType::Bytes {
                    let text = value.as_str().ok_or("a bytes value must be a string")?;
                    let raw = match text.strip_prefix("hex:") {
                        Some(hex) => parse_hex(hex).ok_or("hex: must be followed by hex digits")?,
                        None => text.as_bytes().to_vec(),
                    };
                    write_bytes(&raw, spec.length_prefix, &mut bytes)?;
                } else {
                    let number = number_of(value).ok_or("value must be a number")?;
                    kind.write_number(number * spec.scale.unwrap_or(1.0), &mut bytes)?;
                }
                Ok(Field::Constant(bytes))
            }
            (kind, Some(arg), None) => {
                let declared = args
                    .and_then(|args| args.get(arg))
                    .ok_or_else(|| format!("arg {arg} is not declared under args"))?;
                if !declared.always_present() {
                    return Err(format!("arg {arg} is optional without a default"));
                }
                if kind == FieldType::Bytes {
                    if declared.kind != ArgType::String {
                        return Err(format!(
                            "a bytes field needs a string argument; {arg} is not"
                        ));
                    }
                    return Ok(Field::Text {
                        arg: arg.clone(),
                        length_prefix: spec.length_prefix,
                    });
                }
                if declared.kind == ArgType::String {
                    return Err(format!(
                        "a {} field needs a number argument; {arg} is a string",
                        kind.name()
                    ));
                }
                let scale = spec.scale.unwrap_or(1.0);
                // A declared range must fit the field: found here, not on
                // the first request at the edge of the range.
                for bound in [declared.min, declared.max].into_iter().flatten() {
                    kind.write_number(bound * scale, &mut Vec::new())
                        .map_err(|problem| format!("arg {arg} may be {bound}, but {problem}"))?;
                }
                Ok(Field::Number {
                    kind,
                    arg: arg.clone(),
                    scale,
                })
            }
        }
    }
}

fn invalid(argument: &str, detail: String) -> Rejection {
    Rejection {
        reason: RejectReason::InvalidArgument,
        argument: Some(argument.to_owned()),
        detail,
    }
}

/// A JSON number, or a boolean as 0 or 1.
fn number_of(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_bool().map(|b| f64::from(u8::from(b))))
}

fn write_bytes(
    bytes: &[u8],
    length_prefix: Option<FieldType>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if let Some(prefix) = length_prefix {
        prefix.write_number(bytes.len() as f64, out).map_err(|_| {
            format!(
                "{} bytes are too many for a {} length",
                bytes.len(),
                prefix.name()
            )
        })?;
    }
    out.extend_from_slice(bytes);
    Ok(())
}

fn parse_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Deserialize)]
    struct Fixture {
        args: BTreeMap<String, ArgSpec>,
        binary: Vec<FieldSpec>,
    }

    fn template(text: &str) -> Result<BinaryTemplate, Vec<String>> {
        let fixture: Fixture = toml::from_str(text).unwrap();
        BinaryTemplate::parse(&fixture.binary, Some(&fixture.args))
    }

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn writes_typed_fields_in_order() {
        let template = template(
            r#"
            args.celsius = { type = "number", min = -20, max = 50 }
            args.label = { type = "string" }
            args.on = { type = "bool" }
            binary = [
              { type = "u8", value = 2 },
              { type = "i16be", arg = "celsius", scale = 10 },
              { type = "u16le", value = 513 },
              { type = "u8", arg = "on" },
              { type = "bytes", arg = "label", length_prefix = "u8" },
              { type = "bytes", value = "hex:cafe" },
              { type = "f32be", value = 1.5 },
            ]
            "#,
        )
        .unwrap();
        let bytes = template
            .render(
                &args(json!({"celsius": 21.5, "label": "hi", "on": true})),
                Uuid::nil(),
            )
            .unwrap();
        assert_eq!(
            bytes,
            [
                &[2, 0x00, 0xd7, 0x01, 0x02, 1, 2, b'h', b'i', 0xca, 0xfe][..],
                &1.5f32.to_be_bytes()
            ]
            .concat()
        );
        let negative = template
            .render(
                &args(json!({"celsius": -1, "label": "", "on": false})),
                Uuid::nil(),
            )
            .unwrap();
        assert_eq!(&negative[1..3], &(-10i16).to_be_bytes());
    }

    #[test]
    fn carries_the_command_id() {
        let template = template(
            r#"
            args = {}
            binary = [{ type = "command_id" }]
            "#,
        )
        .unwrap();
        let id = Uuid::now_v7();
        assert_eq!(template.render(&Map::new(), id).unwrap(), id.as_bytes());
    }

    #[test]
    fn refuses_values_that_do_not_fit() {
        let template = template(
            r#"
            args.level = { type = "integer" }
            binary = [{ type = "u8", arg = "level" }]
            "#,
        )
        .unwrap();
        let rejection = template
            .render(&args(json!({"level": 300})), Uuid::nil())
            .unwrap_err();
        assert_eq!(rejection.argument.as_deref(), Some("level"));
        assert_eq!(
            rejection.detail,
            "argument level: 300 does not fit u8 (0..=255)"
        );
    }

    #[test]
    fn finds_mistakes_when_the_profile_loads() {
        let problems = template(
            r#"
            args.level = { type = "integer", min = 0, max = 1000 }
            args.name = { type = "string" }
            args.maybe = { type = "integer", optional = true }
            binary = [
              { type = "u8", arg = "level" },
              { type = "u8", arg = "name" },
              { type = "u8", arg = "ghost" },
              { type = "u8", arg = "maybe" },
              { type = "u8" },
              { type = "u8", value = 256 },
              { type = "u8", value = 1, length_prefix = "u8" },
            ]
            "#,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:?}");
        assert_eq!(
            problems[0],
            "binary[0]: arg level may be 1000, but 1000 does not fit u8 (0..=255)"
        );
        assert!(
            problems[1].contains("needs a number argument"),
            "{problems:?}"
        );
        assert!(problems[2].contains("not declared"), "{problems:?}");
        assert!(
            problems[3].contains("optional without a default"),
            "{problems:?}"
        );
        assert!(
            problems[4].contains("exactly one of arg and value"),
            "{problems:?}"
        );
        assert!(problems[5].contains("256 does not fit u8"), "{problems:?}");
        assert!(
            problems[6].contains("length_prefix applies to bytes"),
            "{problems:?}"
        );
    }
}
