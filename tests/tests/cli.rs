//! The `wharf` command and the service binaries as a user meets them: the
//! README's `wharf up` flow read from what it prints, device tokens from
//! `wharf token issue`, and the exit code and messages of a bad configuration.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wharf_auth::TokenVerifier;
use wharf_tests::api::ApiClient;
use wharf_tests::process::binary;
use wharf_tests::{WsDevice, temp_dir};

#[tokio::test(flavor = "multi_thread")]
async fn wharf_up_prints_an_address_and_a_token_that_work() {
    let data = temp_dir("wharf-up-cli");
    let mut up = Command::new(binary("wharf"))
        .args(["up", "--data-dir"])
        .arg(&data)
        .env("WHARF_SOCKET__WEBSOCKET__LISTEN", "127.0.0.1:0")
        .env("WHARF_SOCKET__MQTT__LISTEN", "127.0.0.1:0")
        .env("WHARF_SOCKET__TCP__LISTEN", "127.0.0.1:0")
        .env("WHARF_SOCKET__UDP__LISTEN", "127.0.0.1:0")
        .env("WHARF_UP__OPS_LISTEN", "127.0.0.1:0")
        .env("WHARF_COMMANDER__API__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wharf up starts");
    let stdout = up.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.starts_with("Press Ctrl-C"))
            .collect::<Vec<_>>()
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("wharf up printed its banner")
        .unwrap();

    let url = banner
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("ws://"))
        })
        .expect("the banner names the device address")
        .to_owned();
    let token = banner
        .iter()
        .find(|line| line.starts_with("eyJ"))
        .expect("the banner holds the demo token")
        .to_owned();

    let mut thermostat = WsDevice::connect(&url, &token)
        .await
        .expect("the printed token works");
    thermostat.send_text(r#"{"temperature": 35}"#).await;
    let command: Value =
        serde_json::from_str(&thermostat.next_text(Duration::from_secs(30)).await).unwrap();
    assert_eq!(
        (command["cmd"].clone(), command["on"].clone()),
        (json!("fan"), json!(true))
    );

    // The printed API key works, the demo device is registered, and a
    // command sent through the API reaches the device.
    let key = banner
        .iter()
        .find_map(|line| line.trim().strip_prefix("api key: "))
        .expect("the banner has a line `api key: <key>`");
    let api_addr: std::net::SocketAddr = banner
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("http://"))
                .filter(|_| line.contains("rest api"))
        })
        .and_then(|url| url.trim_start_matches("http://").split('/').next())
        .expect("the banner names the API address")
        .parse()
        .unwrap();
    let api = ApiClient::new(api_addr, key);
    let device = api.get("/v1/devices/thermo-1").await;
    assert_eq!(device.status, 200, "{}", device.body);
    assert_eq!(device.result()["model"], json!("demo-thermostat"));
    let sent = api
        .post(
            "/v1/devices/thermo-1/commands/fan",
            &json!({"args": {"on": false}}),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let command: Value =
        serde_json::from_str(&thermostat.next_text(Duration::from_secs(30)).await).unwrap();
    assert_eq!(
        (command["cmd"].clone(), command["on"].clone()),
        (json!("fan"), json!(false))
    );
    assert_eq!(command["id"], sent.result()["id"]);
    assert_eq!(api.anonymous().get("/v1/devices").await.status, 401);

    // The secret and the key are kept, so both stay valid across restarts.
    let kept = std::fs::read_to_string(data.join("secret")).unwrap();
    assert!(TokenVerifier::new(kept.trim()).verify(&token).is_ok());
    assert_eq!(
        std::fs::read_to_string(data.join("api-key"))
            .unwrap()
            .trim(),
        key
    );
    let _ = up.kill();
    let _ = up.wait();
}

#[test]
fn token_issue_prints_a_token_for_the_device_and_model() {
    let secret = wharf_auth::generate_secret();
    let output = Command::new(binary("wharf"))
        .args([
            "token",
            "issue",
            "--device",
            "pump-7",
            "--model",
            "demo-pump",
            "--ttl",
            "2h",
        ])
        .env("WHARF_AUTH__SECRET", &secret)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = TokenVerifier::new(&secret).verify(token.trim()).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.model.as_str()),
        ("pump-7", "demo-pump")
    );
    assert_eq!(claims.exp - claims.iat, 7200);
}

#[test]
fn token_issue_without_a_secret_says_where_to_get_one() {
    let output = Command::new(binary("wharf"))
        .args([
            "token",
            "issue",
            "--device",
            "d",
            "--model",
            "m",
            "--data-dir",
        ])
        .arg(temp_dir("no-secret"))
        .env_remove("WHARF_AUTH__SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: no secret: set auth.secret"),
        "{stderr}"
    );
}

#[test]
fn a_bad_configuration_exits_64_with_one_line_per_problem() {
    for service in ["wharf-socket", "wharf-receiver", "wharf-commander"] {
        let output = Command::new(binary(service))
            .env("WHARF_BUS__URL", "redis://nope")
            .env("WHARF_BUS__PARTITIONS", "0")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{service}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            lines
                .iter()
                .all(|line| line.starts_with("invalid configuration: ")),
            "{service}: {stderr}"
        );
        assert!(
            lines.iter().any(|line| line.contains("bus.url")),
            "{service}: {stderr}"
        );
        assert!(
            lines.iter().any(|line| line.contains("bus.partitions")),
            "{service}: {stderr}"
        );
    }
}

#[test]
fn api_key_new_prints_a_key_and_the_hash_to_configure() {
    let output = Command::new(binary("wharf"))
        .args(["api-key", "new"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} line in {stdout}"))
            .to_owned()
    };
    let (key, hash) = (field("key:"), field("hash:"));
    let keys =
        wharf_auth::ApiKeys::from_hashes(&[hash.as_str()]).expect("the hash is configurable");
    assert!(keys.verify(&key), "the printed hash admits the printed key");
    assert!(!keys.verify("wharf_not-the-key"));
}

#[test]
fn the_commander_refuses_to_start_without_api_keys() {
    let output = Command::new(binary("wharf-commander"))
        .env("WHARF_AUTH__SECRET", wharf_auth::generate_secret())
        .env_remove("WHARF_COMMANDER__API__KEYS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr
            .contains("commander.api.keys: at least one key hash is required (`wharf api-key new`"),
        "{stderr}"
    );
}

/// `--check-config` loads and validates a binary's whole configuration
/// (file and WHARF_* variables) and exits without binding anything: here
/// every port it would listen on is already taken, and it still says ok.
#[test]
fn check_config_validates_without_binding_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = wharf_tests::temp_dir("wharf-check-config");
    let key = "sha256:".to_owned() + &"ab".repeat(32);
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nsecret = \"a-secret-of-enough-length\"\n\n[commander]\nprofiles_dir = {:?}\n\n\
             [commander.api]\nkeys = [\"{key}\"]\n",
            wharf_tests::commander::shipped_profiles()
        ),
    )
    .unwrap();
    // (binary, its arguments, a variable pointing a listener at the taken port)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 4] = [
        (
            "wharf-socket",
            &[],
            &[
                ("WHARF_SOCKET__OPS_LISTEN", &port),
                ("WHARF_SOCKET__WEBSOCKET__LISTEN", &port),
            ],
        ),
        (
            "wharf-receiver",
            &[],
            &[("WHARF_RECEIVER__OPS_LISTEN", &port)],
        ),
        (
            "wharf-commander",
            &[],
            &[("WHARF_COMMANDER__API__LISTEN", &port)],
        ),
        ("wharf", &["up"], &[("WHARF_UP__OPS_LISTEN", &port)]),
    ];
    for (binary_name, args, env) in cases {
        let output = Command::new(binary(binary_name))
            .args(args)
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success(), "{binary_name}: {output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            stdout.starts_with("configuration ok: "),
            "{binary_name}: {stdout}"
        );

        // The same with one bad variable: 64 and the problem named.
        let output = Command::new(binary(binary_name))
            .args(args)
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .env("WHARF_BUS__PARTITIONS", "0")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{binary_name}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("bus.partitions"), "{binary_name}: {stderr}");
    }
    drop(taken);
}

/// `wharf probe` is the health check of images without a shell: exit 0 on a
/// 200, 1 with the status otherwise, 1 when nothing listens.
#[test]
fn probe_exits_0_only_on_200() {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (stream, status) in listener
            .incoming()
            .zip(["200 OK", "503 Service Unavailable"])
        {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let probe = |path: &str| {
        Command::new(binary("wharf"))
            .args(["probe", &format!("http://{addr}{path}")])
            .output()
            .unwrap()
    };
    let ready = probe("/readyz");
    assert!(ready.status.success(), "{ready:?}");
    let not_ready = probe("/readyz");
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_ready.stderr).contains("answered 503"));
    let closed = Command::new(binary("wharf"))
        .args(["probe", "http://127.0.0.1:1/readyz"])
        .output()
        .unwrap();
    assert_eq!(closed.status.code(), Some(1));
}
