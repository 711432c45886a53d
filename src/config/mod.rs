//! The TOML configuration: read it, expand `${ENV}` and `X_file` secrets, and validate it into
//! typed settings without any network or state I/O.
//!
//! Two steps, as ripgrep's LowArgs/HiArgs: each section's `Raw*` struct is what the file says,
//! [`Config`] is what the agent runs on. Validation collects every problem so the user sees them
//! all at once, each naming its key; a key no section takes is one of them.
//!
//! One file a step, the sections' own checks living with their owners:
//! - `file`: TOML text into a tree, syntax errors with the line and a caret;
//! - `secrets`: `${NAME}` expansion (the `X` / `X_file` secret options are
//!   [`crate::settings::Check::secret`]);
//! - `agent`: `[agent]`; `[[sources]]` entries are checked by [`crate::sources::config`] (the
//!   keys every source takes, the rest by its vendor's plugin), `[[sinks]]` entries by
//!   [`crate::sinks::config`]; every section checks its keys with [`crate::settings`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::settings::section::{read_section, type_name, unknown_key, Section};
use crate::settings::Check;
use crate::sinks::config::SinkConfig;
use crate::sources::config::SourceConfig;

/// A configuration that could not be used: every problem found, each naming its key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the problems are in.
    pub file: PathBuf,
    /// One line a problem: `key: what is wrong`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

mod agent;
mod file;
mod secrets;

pub use agent::{AgentConfig, RawAgent};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages and reload).
    pub path: PathBuf,
    pub agent: AgentConfig,
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
}

impl Config {
    /// Reads, expands and validates a config file. No network, no state.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, true)
    }

    /// [`Config::load`] for a command that contacts no vendor and no sink (`state`): the
    /// secrets are neither read nor required, so it runs where they are not mounted. Every
    /// secret of the result is an empty placeholder.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, false)
    }

    fn load_with(path: &Path, secrets: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Config::parse_with(&text, path, secrets)
    }

    /// Parses TOML text as if read from `path` (relative secret files resolve against its dir).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, true)
    }

    fn parse_with(text: &str, path: &Path, secrets: bool) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        let tree = file::parse_toml(text).map_err(|e| fail(vec![e]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut c = Check::new(base, secrets);
        let built = validate(&mut c, tree, path);
        match built {
            Some(cfg) if c.problems().is_empty() => Ok(cfg),
            _ => Err(fail(c.problems().to_vec())),
        }
    }
}

/// Validates the tree section by section, each reporting its problems on `c`.
fn validate(c: &mut Check<'_>, mut tree: Map<String, Value>, path: &Path) -> Option<Config> {
    {
        let mut root = Value::Object(std::mem::take(&mut tree));
        secrets::expand_env(&mut root, &mut String::new(), c);
        let Value::Object(t) = root else {
            unreachable!("the root stays a table")
        };
        tree = t;
    }
    let mut take = |c: &mut Check<'_>, section: &str| -> Vec<Value> {
        match tree.remove(section) {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(other) => {
                c.fail(
                    section,
                    format_args!(
                        "must be an array of tables ([[{section}]]), not {}",
                        type_name(&other)
                    ),
                );
                Vec::new()
            }
        }
    };
    let raw_sources = take(c, "sources");
    let raw_sinks = take(c, "sinks");
    let raw_agent = tree.remove("agent").unwrap_or(Value::Object(Map::new()));
    for k in tree.keys() {
        unknown_key(c, k, k, &["agent", "sources", "sinks"]);
    }
    let raw_agent: RawAgent = read_section(c, "agent", raw_agent, |c, key, name| {
        unknown_key(c, key, name, RawAgent::KEYS)
    });
    let (agent, defaults) = agent::validate(c, &raw_agent);
    let (sources, names) = crate::sources::config::validate(c, raw_sources, &defaults);
    let (sinks, sink_entries) = crate::sinks::config::validate(c, raw_sinks, &names);
    // A file is per machine: replicas sharing a PostgreSQL state would each write their own
    // file, and a source taken over would go on in another machine's file.
    if agent.state_url.is_some() {
        for (i, s) in sinks.iter().enumerate() {
            if s.kind.as_str() == "file" {
                c.fail(
                    &format!("sinks[{i}].kind"),
                    format_args!(
                        "a file sink ({}) cannot be used with agent.state_url: a file is per machine, and the state in PostgreSQL is shared by replicas on other machines; send to a network sink, or keep the state in agent.state_path",
                        s.name
                    ),
                );
            }
        }
    }
    // A source no sink takes would have its cursor advance over events delivered nowhere.
    if !sinks.is_empty() && sinks.len() == sink_entries {
        for (i, src) in sources.iter().enumerate() {
            if !sinks.iter().any(|s| s.takes(&src.name)) {
                c.fail(
                    &format!("sources[{i}]"),
                    format_args!(
                        "no sink takes the events of {:?}: add it to a sink's `sources`",
                        src.name
                    ),
                );
            }
        }
    }
    Some(Config {
        path: path.to_path_buf(),
        agent,
        sources,
        sinks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/auditship/test.toml"))
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap_err().problems.join("\n")
    }

    #[test]
    fn lease_settings_need_a_shared_state_and_sane_values() {
        let on_sqlite = MINIMAL.replace(
            "[agent]\n",
            "[agent]\nlease_ttl = \"10s\"\nreplica_id = \"a\"\n",
        );
        let p = problems(&on_sqlite);
        assert!(
            p.contains("agent.lease_ttl") && p.contains("only applies with agent.state_url"),
            "{p}"
        );
        assert!(p.contains("agent.replica_id"), "{p}");
        let shared = MINIMAL
            .replace(
                "state_path = \"/tmp/x.db\"",
                "state_url = \"postgres://u@db/x\"",
            )
            .replace("kind = \"file\"", "kind = \"stdout\"");
        let c = parse(&shared).unwrap();
        assert_eq!(c.agent.lease_ttl, Duration::from_secs(30));
        assert_eq!(c.agent.replica_id, None);
        let set = shared.replace(
            "[agent]\n",
            "[agent]\nlease_ttl = \"6s\"\nreplica_id = \" pod-1 \"\n",
        );
        let c = parse(&set).unwrap();
        assert_eq!(c.agent.lease_ttl, Duration::from_secs(6));
        assert_eq!(c.agent.replica_id.as_deref(), Some("pod-1"));
        let p = problems(&shared.replace(
            "[agent]\n",
            "[agent]\nlease_ttl = \"500ms\"\nreplica_id = \"\"\n",
        ));
        assert!(
            p.contains("agent.lease_ttl") && p.contains("at least 1s"),
            "{p}"
        );
        assert!(
            p.contains("agent.replica_id") && p.contains("printable"),
            "{p}"
        );
    }

    const MINIMAL: &str = r#"
        [agent]
        state_path = "/tmp/x.db"
        [[sources]]
        name = "air"
        kind = "wasabi_air"
        url = "http://127.0.0.1:1"
        api_key = "k"
        [[sinks]]
        name = "out"
        kind = "stdout"
    "#;

    /// The API key of a `wasabi_air` source.
    fn air_key(s: &SourceConfig) -> &str {
        match &s.settings {
            crate::sources::VendorSettings::WasabiAir(w) => w.api_key.as_ref().unwrap().expose(),
            other => panic!("not wasabi_air settings: {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        let s = &c.sources[0];
        assert_eq!(s.poll_interval, Duration::from_secs(60));
        assert_eq!(s.lag, Duration::from_secs(120));
        assert_eq!(s.overlap, Duration::from_secs(900));
        assert_eq!(s.window, Duration::from_secs(3600));
        assert_eq!(s.page_size, 1000);
        assert_eq!(air_key(s), "k");
        assert_eq!(c.agent.state_path, PathBuf::from("/tmp/x.db"));
    }

    #[test]
    fn unknown_key_is_named() {
        let p =
            problems(&MINIMAL.replace("api_key = \"k\"", "api_key = \"k\"\npol_interval = \"1s\""));
        assert!(
            p.contains("sources[0]") && p.contains("pol_interval"),
            "{p}"
        );
    }

    #[test]
    fn max_requests_per_second_is_a_number_above_zero() {
        let with = |v: &str| {
            MINIMAL.replace(
                "api_key = \"k\"",
                &format!("api_key = \"k\"\nmax_requests_per_second = {v}"),
            )
        };
        assert_eq!(
            parse(MINIMAL).unwrap().sources[0].max_requests_per_second,
            None
        );
        assert_eq!(
            parse(&with("4")).unwrap().sources[0].max_requests_per_second,
            Some(4.0)
        );
        assert_eq!(
            parse(&with("0.5")).unwrap().sources[0].max_requests_per_second,
            Some(0.5)
        );
        for bad in ["0", "-2"] {
            let p = problems(&with(bad));
            assert!(
                p.contains("sources[0].max_requests_per_second:")
                    && p.contains("must be a number above 0"),
                "{bad}: {p}"
            );
        }
        // Not numbers at all (TOML's nan and inf are not left out as if unset).
        for bad in ["nan", "inf", "\"fast\""] {
            let p = problems(&with(bad));
            assert!(
                p.contains("sources[0].max_requests_per_second"),
                "{bad}: {p}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let p = problems(
            r#"
            [agent]
            lag = "soon"
            page_size = 5000
            [[sources]]
            name = "A"
            kind = "wasabi_air"
            url = "ftp://x"
            start = "yesterday"
            [[sources]]
            name = "b"
            kind = "domo"
            url = "http://x"
            client_id = "c"
            time_zone = "Mars/Base"
            window = "2h"
        "#,
        );
        for want in [
            "agent.lag:",
            "agent.page_size: 5000 is out of range",
            "sources[0].name:",
            "sources[0].url:",
            "sources[0].start:",
            "sources[0].api_key: missing",
            "sources[1].client_secret: missing",
            "sources[1].time_zone:",
            "sinks: no [[sinks]]",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
    }

    #[test]
    fn duplicate_names_and_foreign_options_are_errors() {
        let dup = format!(
            "{MINIMAL}\n[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://x\"\napi_key = \"k\"\ntime_zone = \"UTC\"\n"
        );
        let p = problems(&dup);
        assert!(p.contains("sources[1].name: \"air\" is used twice"), "{p}");
        assert!(
            p.contains("sources[1].time_zone: not an option of kind wasabi_air"),
            "{p}"
        );
    }

    /// A file sink's `mode` is octal bits the owner can read and write by; default 0600;
    /// anything else is refused naming the key, and other kinds do not take it.
    #[test]
    fn file_sink_mode_is_validated() {
        let file = |mode: &str| {
            format!("{MINIMAL}\n[[sinks]]\nname = \"f\"\nkind = \"file\"\npath = \"/tmp/e.ndjson\"\n{mode}")
        };
        let mode_of = |text: &str| match &parse(text).unwrap().sinks[1].settings {
            crate::sinks::SinkSettings::File(f) => f.mode,
            other => panic!("not a file sink's settings: {other:?}"),
        };
        assert_eq!(mode_of(&file("")), 0o600);
        assert_eq!(mode_of(&file("mode = \"0640\"\n")), 0o640);
        assert_eq!(mode_of(&file("mode = \"644\"\n")), 0o644);
        for (bad, why) in [
            ("\"0988\"", "is not a file mode"),
            ("\"04755\"", "is not a file mode"),
            ("\"\"", "is not a file mode"),
            ("\"rw-r-----\"", "is not a file mode"),
            ("\"0400\"", "does not let the owner read and write"),
        ] {
            let p = problems(&file(&format!("mode = {bad}\n")));
            assert!(
                p.contains(&format!("sinks[1].mode: {bad}")) && p.contains(why),
                "{bad}: {p}"
            );
        }
        assert!(problems(
            &MINIMAL.replace("kind = \"stdout\"", "kind = \"stdout\"\nmode = \"0600\"")
        )
        .contains("sinks[0].mode: not an option of kind stdout"));
    }

    /// Every other kind refuses each of the file sink's options, by name; a kind that is not
    /// known gets one error, about `kind`.
    #[test]
    fn the_file_options_are_refused_by_every_other_kind() {
        let file_opts = [
            "path = \"o\"",
            "fsync = true",
            "mode = \"0600\"",
            "rotate_max_bytes = 1000",
            "rotate_keep = 2",
        ];
        for kind in [
            "kind = \"stdout\"",
            "kind = \"http\"\nurl = \"http://127.0.0.1:1/\"",
            "kind = \"syslog\"\naddress = \"127.0.0.1:514\"",
        ] {
            let text = MINIMAL.replace(
                "kind = \"stdout\"",
                &format!("{kind}\n{}", file_opts.join("\n")),
            );
            let p = problems(&text);
            let name = kind.split('"').nth(1).unwrap();
            for opt in ["path", "fsync", "mode", "rotate_max_bytes", "rotate_keep"] {
                let want = format!("sinks[0].{opt}: not an option of kind {name}");
                assert_eq!(p.matches(&want).count(), 1, "{want}: {p}");
            }
        }
        // An unknown kind: one error, about `kind`, whichever kind's options are there.
        let p = problems(&MINIMAL.replace(
            "kind = \"stdout\"",
            "kind = \"files\"\nmode = \"0600\"\nurl = \"http://x/\"\naddress = \"x:514\"",
        ));
        assert!(p.contains("sinks[0].kind"), "{p}");
        for opt in ["mode", "url", "address"] {
            assert!(!p.contains(&format!("sinks[0].{opt}")), "{opt}: {p}");
        }
    }

    /// `rotate_max_bytes` and `rotate_keep` are validated and belong to file sinks only.
    #[test]
    fn file_sink_rotation_is_validated() {
        let file = |extra: &str| {
            format!("{MINIMAL}\n[[sinks]]\nname = \"f\"\nkind = \"file\"\npath = \"/tmp/e.ndjson\"\n{extra}")
        };
        let rotate_of = |text: &str| match &parse(text).unwrap().sinks[1].settings {
            crate::sinks::SinkSettings::File(f) => f.rotate,
            other => panic!("not a file sink's settings: {other:?}"),
        };
        assert_eq!(rotate_of(&file("")), None);
        assert_eq!(
            rotate_of(&file("rotate_max_bytes = 1048576\n")),
            Some(crate::sinks::file::Rotate {
                max_bytes: 1 << 20,
                keep: 7
            })
        );
        assert_eq!(
            rotate_of(&file("rotate_max_bytes = 100\nrotate_keep = 2\n")),
            Some(crate::sinks::file::Rotate {
                max_bytes: 100,
                keep: 2
            })
        );
        for (extra, want) in [
            (
                "rotate_max_bytes = 0\n",
                "sinks[1].rotate_max_bytes: 0 is out of range",
            ),
            (
                "rotate_max_bytes = 2199023255552\n",
                "sinks[1].rotate_max_bytes: 2199023255552 is out of range",
            ),
            (
                "rotate_max_bytes = 100\nrotate_keep = 0\n",
                "sinks[1].rotate_keep: 0 is out of range",
            ),
            (
                "rotate_keep = 3\n",
                "sinks[1].rotate_keep: needs rotate_max_bytes",
            ),
        ] {
            let p = problems(&file(extra));
            assert!(p.contains(want), "{extra}: {p}");
        }
        assert!(problems(&MINIMAL.replace(
            "kind = \"stdout\"",
            "kind = \"stdout\"\nrotate_max_bytes = 10"
        ))
        .contains("sinks[0].rotate_max_bytes: not an option of kind stdout"));
    }

    #[test]
    fn env_expansion_and_missing_variables() {
        std::env::set_var("AUDITSHIP_TEST_KEY", "from-env");
        let c = parse(&MINIMAL.replace("\"k\"", "\"${AUDITSHIP_TEST_KEY}\"")).unwrap();
        assert_eq!(air_key(&c.sources[0]), "from-env");
        let p = problems(&MINIMAL.replace("\"k\"", "\"${AUDITSHIP_TEST_UNSET_VAR}\""));
        assert!(
            p.contains(
                "sources[0].api_key: environment variable AUDITSHIP_TEST_UNSET_VAR is not set"
            ),
            "{p}"
        );
        assert_eq!(secrets::expand_str("a$${b}c$d").unwrap(), "a${b}c$d");
    }

    #[test]
    fn secret_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cret\n").unwrap();
        let path = dir.path().join("a.toml");
        let text = MINIMAL.replace("api_key = \"k\"", "api_key_file = \"key\"");
        let c = Config::parse(&text, &path).unwrap();
        assert_eq!(air_key(&c.sources[0]), "s3cret");
        let e = Config::parse(&text.replace("\"key\"", "\"nope\""), &path).unwrap_err();
        assert!(
            e.problems[0].starts_with("sources[0].api_key_file: cannot read"),
            "{e}"
        );
        assert!(!format!("{:?}", c.sources[0]).contains("s3cret"));
    }

    #[test]
    fn filters_pass_through_and_reserved_ones_are_refused() {
        let c = parse(&format!(
            "{MINIMAL}\n[sources.filters]\naction_key = \"login\"\nuser_id = [\"a\", \"b\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.sources[0].filters,
            vec![
                ("action_key".to_string(), "login".to_string()),
                ("user_id".to_string(), "a".to_string()),
                ("user_id".to_string(), "b".to_string()),
            ]
        );
        let p = problems(&format!("{MINIMAL}\n[sources.filters]\npage = 3\n"));
        assert!(
            p.contains("sources[0].filters.page: is set by the agent"),
            "{p}"
        );
        // A misspelt filter would be ignored by the vendor, which then sends every event.
        let p = problems(&format!(
            "{MINIMAL}\n[sources.filters]\naction_kye = \"login\"\nflavour = \"x\"\n"
        ));
        assert!(
            p.contains("sources[0].filters.action_kye: is not a filter of wasabi_air (its API takes user_id, group_id, target_kind, target_id, action_key); did you mean `action_key`?"),
            "{p}"
        );
        assert!(
            p.contains("sources[0].filters.flavour: is not a filter of wasabi_air")
                && !p.contains("did you mean `flavour"),
            "{p}"
        );
    }

    #[test]
    fn a_source_that_no_sink_takes_is_an_error() {
        let p = problems(&MINIMAL.replace("kind = \"stdout\"", "kind = \"stdout\"\nsources = []"));
        assert!(
            p.contains("sources[0]: no sink takes the events of \"air\""),
            "{p}"
        );
    }

    /// Issue 19: an unknown key used to hide every other problem.
    #[test]
    fn an_unknown_key_does_not_hide_the_other_problems() {
        let p = problems(
            &MINIMAL
                .replace(
                    "api_key = \"k\"",
                    "api_key = \"k\"\npoll_intervall = \"1s\"\nlag = \"2 fortnights\"",
                )
                .replace("kind = \"stdout\"", "kind = \"files\"")
                .replace(
                    "[agent]",
                    "[agent]\nwindoww = \"1h\"\npage_size = \"many\"\nlisten = \"here\"",
                ),
        );
        for want in [
            "sources[0].poll_intervall: unknown field; did you mean `poll_interval`?",
            "sources[0].lag: \"2 fortnights\" is not a duration",
            "sinks[0].kind: \"files\" is not a sink kind",
            "agent.windoww: unknown field; did you mean `window`?",
            "agent.page_size: invalid type",
            "agent.listen: \"here\" is not an address",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
        let p = problems(&format!("{MINIMAL}\n[extra]\nx = 1\n"));
        assert!(p.contains("extra: unknown field"), "{p}");
    }

    /// Issue 19: a broken secret is one message, not also "missing".
    #[test]
    fn a_broken_secret_is_one_message() {
        let domino = MINIMAL.replace("kind = \"wasabi_air\"", "kind = \"domino_audit\"");
        let p = problems(&domino.replace("api_key = \"k\"", "api_key_file = \"/nonexistent/key\""));
        assert!(
            p.contains("sources[0].api_key_file: cannot read /nonexistent/key"),
            "{p}"
        );
        assert!(!p.contains("missing"), "{p}");
        assert_eq!(p.lines().count(), 1, "{p}");

        std::env::set_var("AUDITSHIP_TEST_EMPTY", "");
        for text in [&domino, MINIMAL] {
            let p = problems(&text.replace("\"k\"", "\"${AUDITSHIP_TEST_EMPTY}\""));
            assert_eq!(p, "sources[0].api_key: is empty", "{p}");
            let p = problems(&text.replace("\"k\"", "\"${AUDITSHIP_TEST_UNSET_VAR}\""));
            assert_eq!(p.lines().count(), 1, "{p}");
            assert!(p.contains("AUDITSHIP_TEST_UNSET_VAR is not set"), "{p}");
        }
        // A variable that is not set is one message too, whatever the key.
        let p =
            problems(&MINIMAL.replace("\"http://127.0.0.1:1\"", "\"${AUDITSHIP_TEST_UNSET_URL}\""));
        assert_eq!(p.lines().count(), 1, "{p}");
    }

    /// Issue 19: `state` needs no secret, so loading for it reads none.
    #[test]
    fn without_secrets_neither_files_nor_variables_of_secrets_are_needed() {
        let text = MINIMAL
            .replace("api_key = \"k\"", "api_key_file = \"/nonexistent/key\"")
            .replace(
                "kind = \"stdout\"",
                "kind = \"http\"\nurl = \"http://127.0.0.1:2\"\n[sinks.headers]\nAuthorization = \"${AUDITSHIP_TEST_UNSET_HEC}\"\n[sinks.header_files]\nX-Key = \"/nonexistent/hec\"",
            );
        let path = Path::new("/etc/auditship/test.toml");
        assert!(Config::parse(&text, path).is_err());
        let c = Config::parse_with(&text, path, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources[0].name, "air");
        assert_eq!(c.agent.state_path, PathBuf::from("/tmp/x.db"));
        // What is not a secret is still checked.
        let bad = text.replace(
            "state_path = \"/tmp/x.db\"",
            "state_path = \"${AUDITSHIP_TEST_UNSET_DIR}\"",
        );
        let e = Config::parse_with(&bad, path, false).unwrap_err();
        assert!(
            e.problems[0].starts_with("agent.state_path: environment variable"),
            "{e}"
        );
    }

    #[test]
    fn bad_toml_is_a_short_message() {
        let e = parse("[agent\nx=").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        // The file, the parser's reason, and the line with a caret under the spot.
        assert!(e.to_string().lines().count() <= 4, "{e}");
        assert!(e.problems[0].contains("line 1, column 7"), "{e}");
        assert!(e.problems[0].ends_with("\n    [agent\n          ^"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// `config/auditship.toml` documents every option: it must stay a valid config.
    #[test]
    fn the_annotated_example_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditship.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for secret in ["domino_api_key", "domo_client_secret"] {
            let p = dir.path().join(secret);
            std::fs::write(&p, "s3cret\n").unwrap();
            text = text.replace(
                &format!("/run/secrets/auditship/{secret}"),
                p.to_str().unwrap(),
            );
        }
        for var in [
            "DOMINO_API_KEY",
            "DOMO_CLIENT_ID",
            "AIR_API_KEY",
            "HEC_TOKEN",
        ] {
            std::env::set_var(var, "from-env");
        }
        let c = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources.len(), 4);
        assert!(c.sinks.len() >= 2);
    }
}
