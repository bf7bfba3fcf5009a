//! Configuration: a TOML file plus `WHARF_` environment overrides
//! (`WHARF_BUS__URL` sets `bus.url`), validated before anything starts.

use std::path::Path;

use serde::de::DeserializeOwned;

/// The exit code for a bad configuration (`EX_CONFIG` would be 78; the
/// project uses 64, `EX_USAGE`, for every start-up refusal).
pub const EXIT_CONFIG: i32 = 64;

/// A configuration that can say what is wrong with it, and hand back what
/// checking it had to parse (compiled rules, loaded profiles, decoded API
/// keys), so start-up uses those instead of parsing them again.
pub trait Validate: Sized {
    /// What checking parses; `()` when nothing.
    type Parsed;

    /// The parsed parts, or every problem, one line each, naming the key:
    /// `bus.url: …`.
    fn check(&self) -> Result<Self::Parsed, Vec<String>>;
}

/// A configuration that passed its check, with what the check parsed.
#[derive(Debug, Clone)]
pub struct Checked<S: Validate> {
    pub settings: S,
    pub parsed: S::Parsed,
}

impl<S: Validate> Checked<S> {
    /// Checks `settings` (made in code, not loaded: tests, embedding).
    pub fn new(settings: S) -> Result<Self, ConfigError> {
        match settings.check() {
            Ok(parsed) => Ok(Checked { settings, parsed }),
            Err(problems) => Err(ConfigError { problems }),
        }
    }
}

/// `part`, parsed, when neither it nor the rest of the configuration has a
/// problem; otherwise every problem, the rest's first.
pub fn with_part<T>(
    mut problems: Vec<String>,
    part: Result<T, Vec<String>>,
) -> Result<T, Vec<String>> {
    match part {
        Ok(part) if problems.is_empty() => Ok(part),
        Ok(_) => Err(problems),
        Err(found) => {
            problems.extend(found);
            Err(problems)
        }
    }
}

/// Two parts checked together: both parsed, or the problems of both.
pub fn both<A, B>(
    a: Result<A, Vec<String>>,
    b: Result<B, Vec<String>>,
) -> Result<(A, B), Vec<String>> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut problems = a.err().unwrap_or_default();
            problems.extend(b.err().unwrap_or_default());
            Err(problems)
        }
    }
}

/// `Ok(())` when there are no `problems`: the check of a configuration
/// that parses nothing.
pub fn no_problems(problems: Vec<String>) -> Result<(), Vec<String>> {
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems),
    }
}

/// Why a configuration was refused: one line per problem.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Settings that are lists, given in a variable as comma-separated items
/// (`WHARF_COMMANDER__API__KEYS=sha256:…,sha256:…`): secrets that
/// deployments pass in the environment.
const LIST_KEYS: &[&str] = &["commander.api.keys"];

/// Loads `T` from its defaults, then `file` (when given), then the
/// environment (`WHARF_SECTION__KEY=value`), and checks it.
pub fn load_config<T>(file: Option<&Path>) -> Result<Checked<T>, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    load_config_from(file, std::env::vars())
}

/// [`load_config`] with explicit environment variables (for tests).
pub fn load_config_from<T>(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Checked<T>, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError {
                problems: vec![format!("config file {} does not exist", file.display())],
            });
        }
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    let vars: config::Map<String, String> = vars
        .into_iter()
        .filter(|(key, _)| key.starts_with("WHARF_") && key != "WHARF_CONFIG")
        .collect();
    let mut environment = config::Environment::with_prefix("WHARF")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",");
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    builder = builder.add_source(environment.source(Some(vars)));
    let loaded: T = builder
        .build()
        .and_then(|config| config.try_deserialize())
        .map_err(|error| ConfigError {
            problems: vec![error.to_string()],
        })?;
    Checked::new(loaded)
}

/// Returns the configuration, or prints each problem on its own line and
/// exits with [`EXIT_CONFIG`].
pub fn exit_on_bad_config<T>(result: Result<T, ConfigError>) -> T {
    match result {
        Ok(config) => config,
        Err(error) => {
            for problem in &error.problems {
                eprintln!("invalid configuration: {problem}");
            }
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// Says on stdout that the configuration read from `file` (or the defaults)
/// and the `WHARF_*` variables is good: what `--check-config` answers.
pub fn config_is_good(file: Option<&Path>) {
    let source = file.map_or_else(
        || "the defaults".to_owned(),
        |file| file.display().to_string(),
    );
    println!("configuration ok: {source} and the WHARF_* variables");
}

/// Prints a failed run's error chain on one line and exits with status 1.
pub fn exit_on_error(result: anyhow::Result<()>) {
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// The config file named by `--config` or, failing that, `WHARF_CONFIG`.
pub fn config_path(flag: Option<&Path>) -> Option<std::path::PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("WHARF_CONFIG").map(Into::into))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Sample {
        bus: Bus,
    }

    #[derive(Debug, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Bus {
        url: String,
        partitions: i32,
    }

    impl Default for Bus {
        fn default() -> Self {
            Bus {
                url: "memory://".into(),
                partitions: 8,
            }
        }
    }

    impl Validate for Sample {
        type Parsed = ();

        fn check(&self) -> Result<(), Vec<String>> {
            let mut problems = Vec::new();
            if self.bus.partitions < 1 {
                problems.push("bus.partitions: must be at least 1".into());
            }
            if self.bus.url.is_empty() {
                problems.push("bus.url: must not be empty".into());
            }
            no_problems(problems)
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("wharf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wharf.toml");
        std::fs::write(&file, "[bus]\nurl = \"kafka://a:9092\"\npartitions = 3\n").unwrap();
        let sample: Sample = load_config_from(
            Some(&file),
            env(&[("WHARF_BUS__PARTITIONS", "12"), ("OTHER", "x")]),
        )
        .unwrap()
        .settings;
        assert_eq!(sample.bus.url, "kafka://a:9092");
        assert_eq!(sample.bus.partitions, 12);
    }

    #[test]
    fn a_part_counts_only_when_nothing_else_is_wrong() {
        let fine: Result<u8, Vec<String>> = Ok(1);
        let broken: Result<u8, Vec<String>> = Err(vec!["b: bad".into()]);
        assert_eq!(with_part(vec![], fine.clone()), Ok(1));
        assert_eq!(
            with_part(vec!["a: bad".into()], fine.clone()).unwrap_err(),
            ["a: bad"]
        );
        assert_eq!(
            with_part(vec!["a: bad".into()], broken.clone()).unwrap_err(),
            ["a: bad", "b: bad"]
        );
        assert_eq!(both(fine.clone(), fine.clone()), Ok((1, 1)));
        assert_eq!(
            both(broken.clone(), Err::<u8, _>(vec!["c: bad".into()])).unwrap_err(),
            ["b: bad", "c: bad"]
        );
    }

    #[test]
    fn lists_every_problem() {
        let error = load_config_from::<Sample>(
            None,
            env(&[("WHARF_BUS__PARTITIONS", "0"), ("WHARF_BUS__URL", "")]),
        )
        .unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
    }

    #[test]
    fn names_unknown_keys_and_missing_files() {
        let error =
            load_config_from::<Sample>(None, env(&[("WHARF_BUS__PARTITONS", "3")])).unwrap_err();
        assert!(error.to_string().contains("partitons"), "{error}");
        let error =
            load_config_from::<Sample>(Some(Path::new("/nonexistent/wharf.toml")), env(&[]))
                .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
    }
}
