//! Device profiles with any JSON and binary templates, any argument specs,
//! and any arguments: loading refuses what it cannot render, and what
//! loads renders on every transport, or is rejected with a reason, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_commander::profiles::Profiles;
use wharf_events::Transport;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // json template ␀ binary template (TOML array) ␀ args spec (TOML table) ␀ args (JSON)
    let mut parts = text.split('\0');
    let (json, binary, specs, args) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut profile = String::from("model = \"m\"\n[commands.c]\n");
    if !json.is_empty() {
        profile.push_str(&format!("json = {}\n", toml_string(json)));
    }
    if !binary.is_empty() {
        profile.push_str(&format!("binary = {binary}\n"));
    }
    if !specs.is_empty() {
        profile.push_str(&format!("args = {specs}\n"));
    }
    let Ok(profiles) = Profiles::from_sources(&[("m.toml".into(), profile)]) else {
        return;
    };
    let Ok(command) = profiles.command("m", "c") else {
        return;
    };
    let args = match serde_json::from_str::<serde_json::Value>(args) {
        Ok(serde_json::Value::Object(args)) => args,
        _ => serde_json::Map::new(),
    };
    let Ok(checked) = command.check("m", &args, Some("1.0.0")) else {
        return;
    };
    for transport in [
        Transport::Websocket,
        Transport::Mqtt,
        Transport::Tcp,
        Transport::Udp,
    ] {
        let _ = command.render("device-1", &checked, uuid::Uuid::nil(), transport);
    }
});

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
