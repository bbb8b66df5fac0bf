//! The settings' tests: layers, ranges, errors and hints, and the plan of `fifo run`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::*;
use super::layers::{Flags, load, read_file};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn defaults_match_the_seed() {
    let (_dir, path) = write_config("");
    let settings = load(Some(&path), &vec![], env_of(&[])).unwrap();
    assert_eq!(
        settings,
        Settings {
            queue_url: DEFAULT_QUEUE_URL.to_owned(),
            endpoint_url: None,
            region: None,
            max_workers: 5,
            visibility_timeout: 30,
            wait_time_seconds: 20,
            max_messages: 10,
            pollers: None,
            max_in_flight: None,
            retries: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 20_000,
            handler_timeout: None,
            shutdown_timeout: 30.0,
            batch: 1,
            batch_format: "fifo".to_owned(),
            http_url: None,
            http_ready: None,
            http_content_type: "application/json".to_owned(),
            http_format: "sqsd".to_owned(),
            http_reject_status: 422,
            metrics_addr: None,
            admin_token_file: None,
            exhausted: "dead-letter".to_owned(),
            blocked_retry_max: 300,
            max_rate: None,
            group_rate: None,
            origins: BTreeMap::new(),
        }
    );
}

#[test]
fn steering_settings_are_checked_like_the_others() {
    let (_dir, path) = write_config("exhausted = \"block\"\nmax_rate = 2.5\n");
    let env = env_of(&[("FIFO_GROUP_RATE", "0.5"), ("FIFO_BLOCKED_RETRY_MAX", "60")]);
    let settings = load(Some(&path), &vec![], env).unwrap();
    assert_eq!(settings.exhausted, "block");
    assert_eq!(
        (settings.max_rate, settings.group_rate),
        (Some(2.5), Some(0.5))
    );
    assert_eq!(settings.blocked_retry_max, 60);

    let flags: Flags = vec![(&EXHAUSTED, "skip".to_owned())];
    let err = load(None, &flags, env_of(&[])).unwrap_err();
    assert_eq!(
        err.message,
        "--exhausted skip is not one of dead-letter, block"
    );
    assert_eq!(err.hint.unwrap(), "give --exhausted dead-letter or block");
    let err = load(None, &vec![], env_of(&[("FIFO_MAX_RATE", "0")])).unwrap_err();
    assert!(err.message.contains("is out of range"), "{err}");
    assert!(err.message.contains("handler starts per second"), "{err}");
}

#[test]
fn run_settings_come_from_every_layer_too() {
    let (_dir, path) =
        write_config("retries = 7\nshutdown_timeout = 2\nhandler_timeout = 0.5\npollers = 4\n");
    let env = env_of(&[("FIFO_RETRIES", "8"), ("FIFO_BATCH", "10")]);
    let flags: Flags = vec![(&MAX_IN_FLIGHT, "50".to_owned())];
    let settings = load(Some(&path), &flags, env).unwrap();
    assert_eq!(settings.retries, 8, "env beats file");
    assert_eq!(settings.batch, 10);
    assert_eq!(settings.shutdown_timeout, 2.0, "a whole number of seconds");
    assert_eq!(settings.handler_timeout, Some(0.5));
    assert_eq!(settings.pollers, Some(4));
    assert_eq!(settings.max_in_flight, Some(50));

    let config = settings.pool_config(true, Some(9)).unwrap();
    assert_eq!(config.retries, 8);
    assert_eq!(config.batch, 10);
    assert_eq!(config.max_in_flight, 50);
    assert_eq!(config.handler_timeout, Some(Duration::from_millis(500)));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(2));
    assert!(config.until_empty);
    assert_eq!(config.limit, Some(9));
}

#[test]
fn seconds_are_above_zero_and_finite() {
    let (_empty_dir, empty) = write_config("");
    for bad in ["0", "-1", "inf", "NaN", "86401"] {
        let flags: Flags = vec![(&SHUTDOWN_TIMEOUT, bad.to_owned())];
        let err = load(Some(&empty), &flags, env_of(&[])).unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("--shutdown-timeout {bad} is out of range")),
            "{err}"
        );
        assert!(err.message.contains("above 0 and at most 86400"), "{err}");
    }
    let err = load(
        Some(&empty),
        &vec![],
        env_of(&[("FIFO_HANDLER_TIMEOUT", "soon")]),
    )
    .unwrap_err();
    assert!(
        err.message
            .starts_with("FIFO_HANDLER_TIMEOUT=soon is not a number"),
        "{err}"
    );
}

#[test]
fn run_needs_a_visibility_timeout() {
    let (_empty_dir, empty) = write_config("");
    let settings = load(
        Some(&empty),
        &vec![],
        env_of(&[("VISIBILITY_TIMEOUT", "0")]),
    )
    .unwrap();
    let err = settings.pool_config(false, None).unwrap_err();
    assert_eq!(
        err.message,
        "VISIBILITY_TIMEOUT=0: fifo run needs a visibility timeout of at least 1 s"
    );
    assert_eq!(
        err.hint.as_deref(),
        Some(
            "set VISIBILITY_TIMEOUT to a whole number from 1 to 43200, or unset it for the default"
        )
    );
    let (_dir, path) = write_config("visibility_timeout = 0\n");
    let settings = load(Some(&path), &vec![], env_of(&[])).unwrap();
    let err = settings.pool_config(false, None).unwrap_err();
    assert!(err.message.starts_with("`visibility_timeout` in "), "{err}");
    assert!(err.hint.unwrap().contains("fifo.toml"));
}

#[test]
fn too_many_digits_are_out_of_range_not_a_fraction() {
    let flags: Flags = vec![(&RETRIES, "9".repeat(50))];
    let err = load(None, &flags, env_of(&[])).unwrap_err();
    assert!(err.message.contains("is out of range"), "{err}");
}

#[test]
fn the_readme_lists_every_setting_as_the_table_has_it() {
    let readme = include_str!("../../../../README.md");
    for key in KEYS {
        let env: Vec<String> = key.env.iter().map(|name| format!("`{name}`")).collect();
        let start = format!("| `{}` | {} | `{}` |", key.name, env.join(", "), key.flag);
        let row = readme
            .lines()
            .find(|line| line.starts_with(&start))
            .unwrap_or_else(|| panic!("README.md lacks the row {start}"));
        let columns: Vec<&str> = row
            .split(" | ")
            .map(|c| c.trim_matches('|').trim())
            .collect();
        if let Some(default) = key.default.filter(|_| key.kind.range().is_some()) {
            assert_eq!(columns[3], default, "the default in {row}");
        }
        let range = match key.kind {
            Kind::Whole { low, high } => format!("{low}–{high}"),
            Kind::Seconds { high } => format!("seconds, above 0, ≤ {high}"),
            Kind::Rate { low, high } => format!("starts per second, {low}–{high}"),
            Kind::Choice(words) => words.join(", "),
            Kind::Text | Kind::QueueUrl | Kind::HttpUrl | Kind::ListenAddress => continue,
        };
        assert_eq!(columns[4], range, "the range in {row}");
    }
}

#[test]
fn every_setting_has_one_row_one_env_name_and_one_flag() {
    let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let mut envs: Vec<&str> = KEYS.iter().flat_map(|k| k.env.iter().copied()).collect();
    let mut flags: Vec<&str> = KEYS.iter().map(|k| k.flag).collect();
    for list in [&mut names, &mut envs, &mut flags] {
        let count = list.len();
        list.sort_unstable();
        list.dedup();
        assert_eq!(list.len(), count, "a name is used twice: {list:?}");
    }
}

#[test]
fn layers_apply_file_then_env_then_flags() {
    let (_dir, path) = write_config("max_workers = 7\nwait_time_seconds = 3\nmax_messages = 4\n");
    let env = env_of(&[("MAX_WORKERS", "9"), ("WAIT_TIME_SECONDS", "5")]);
    let flags: Flags = vec![(&MAX_WORKERS, "11".to_owned())];
    let settings = load(Some(&path), &flags, env).unwrap();
    assert_eq!(settings.max_workers, 11, "flag beats env");
    assert_eq!(settings.wait_time_seconds, 5, "env beats file");
    assert_eq!(settings.max_messages, 4, "file beats default");
    assert_eq!(settings.visibility_timeout, 30, "default");
}

#[test]
fn region_falls_back_to_aws_default_region_and_empty_env_is_unset() {
    let (_dir, path) = write_config("");
    let env = env_of(&[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "eu-west-1")]);
    let settings = load(Some(&path), &vec![], env).unwrap();
    assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
}

#[test]
fn out_of_range_values_name_their_origin() {
    let (_empty_dir, empty) = write_config("");
    let err = load(
        Some(&empty),
        &vec![],
        env_of(&[("WAIT_TIME_SECONDS", "25")]),
    )
    .unwrap_err();
    assert!(
        err.message
            .starts_with("WAIT_TIME_SECONDS=25 is out of range"),
        "{err}"
    );
    assert!(err.message.contains("0 to 20"), "{err}");

    let (_dir, path) = write_config("visibility_timeout = 50000\n");
    let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
    assert!(err.message.contains("`visibility_timeout` in"), "{err}");

    let flags: Flags = vec![(&MAX_MESSAGES, "11".to_owned())];
    let err = load(Some(&empty), &flags, env_of(&[])).unwrap_err();
    assert!(
        err.message.starts_with("--max-messages 11 is out of range"),
        "{err}"
    );

    let err = load(None, &vec![], env_of(&[("MAX_WORKERS", "abc")])).unwrap_err();
    assert!(err.message.starts_with("MAX_WORKERS=abc"), "{err}");
}

#[test]
fn malformed_files_and_unknown_keys_are_errors() {
    let (_dir, path) = write_config("max_workers = = 3\n");
    let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
    assert!(err.message.starts_with("malformed config file"), "{err}");

    let (_dir, path) = write_config("max_wrokers = 3\n");
    let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
    assert!(err.message.contains("unknown key `max_wrokers`"), "{err}");

    let err = load(
        Some(Path::new("/nonexistent/fifo.toml")),
        &vec![],
        env_of(&[]),
    )
    .unwrap_err();
    assert!(err.message.starts_with("cannot read config file"), "{err}");
}

#[test]
fn malformed_queue_urls_are_errors() {
    let err = load(
        None,
        &vec![],
        env_of(&[("SQS_QUEUE_URL", "localhost/queue")]),
    )
    .unwrap_err();
    assert!(
        err.message
            .starts_with("SQS_QUEUE_URL=localhost/queue: malformed queue URL"),
        "{err}"
    );
}

#[test]
fn values_that_are_not_numbers_say_so_and_name_only_their_origin() {
    let (_empty_dir, empty) = write_config("");
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 3] = [
        (
            &[("WAIT_TIME_SECONDS", "abc")],
            "WAIT_TIME_SECONDS=abc is not a number",
            "set WAIT_TIME_SECONDS to a whole number from 0 to 20",
        ),
        (
            &[("WAIT_TIME_SECONDS", "")],
            "WAIT_TIME_SECONDS= is empty",
            "set WAIT_TIME_SECONDS to",
        ),
        (
            &[("MAX_WORKERS", "2.5")],
            "MAX_WORKERS=2.5 is not a whole number",
            "set MAX_WORKERS to",
        ),
    ];
    for (env, error, hint) in cases {
        let err = load(Some(&empty), &vec![], env_of(env)).unwrap_err();
        assert!(err.message.starts_with(error), "{err}");
        let given_hint = err.hint.unwrap();
        assert!(given_hint.starts_with(hint), "{given_hint}");
        assert!(!given_hint.contains("fifo.toml"), "{given_hint}");
    }
    let flags: Flags = vec![(&MAX_WORKERS, String::new())];
    let err = load(Some(&empty), &flags, env_of(&[])).unwrap_err();
    assert!(err.message.starts_with(r#"--workers "" is empty"#), "{err}");
    let err = load(Some(&empty), &vec![], env_of(&[("SQS_QUEUE_URL", " ")])).unwrap_err();
    assert!(err.message.starts_with("SQS_QUEUE_URL=  is empty"), "{err}");
}

#[test]
fn a_file_must_give_numbers_as_numbers_and_text_as_text() {
    let (_dir, path) = write_config("max_workers = \"5\"\n");
    let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
    assert!(
        err.message.contains(r#"`max_workers` in"#)
            && err
                .message
                .contains(r#"is text in quotes ("5"), not a number"#),
        "{err}"
    );
    let (_dir, path) = write_config("queue_url = 5\n");
    let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
    assert!(
        err.message.contains("must be text in quotes, not 5"),
        "{err}"
    );
    let (_dir, path) = write_config("visibility_timeout = -1\n");
    let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
    assert!(err.message.contains("is out of range"), "{err}");
}

#[test]
fn only_a_regular_file_is_read_and_the_hint_names_flags_given() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("fifo.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let err = load(Some(&link), &vec![], env_of(&[])).unwrap_err();
    assert!(err.message.ends_with("it is not a regular file"), "{err}");
    assert_eq!(
        err.hint.as_deref(),
        Some("check the path given to --config")
    );
    let err = read_file(&link, false).unwrap_err();
    assert!(!err.hint.unwrap().contains("path given to --config"));
    let err = load(Some(dir.path()), &vec![], env_of(&[])).unwrap_err();
    assert!(err.message.ends_with("it is not a regular file"), "{err}");
}

/// TOML values of every kind, well and badly formed, under known and
/// unknown keys.
fn any_config() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let key = prop_oneof![
        proptest::sample::select(KEYS.iter().map(|k| k.name).collect::<Vec<_>>()),
        Just("max_wrokers"),
        Just("[table]"),
    ];
    let value = prop_oneof![
        (-5i64..50_000).prop_map(|n| n.to_string()),
        "[0-9a-z:/. -]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("true".to_owned()),
        Just("1.5".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        "[ -~]{0,6}",
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Any file: no panic; either settings within their ranges, or one
    /// error line with a hint.
    #[test]
    fn any_config_file_loads_or_fails_on_one_clear_line(text in any_config()) {
        let (_dir, path) = write_config(&text);
        match load(Some(&path), &vec![], env_of(&[])) {
            Ok(settings) => {
                proptest::prop_assert!((1..=10_000).contains(&settings.max_workers));
                proptest::prop_assert!(settings.wait_time_seconds <= 20);
                proptest::prop_assert!((1..=10).contains(&settings.max_messages));
                proptest::prop_assert!(settings.visibility_timeout <= 43_200);
                proptest::prop_assert!(settings.retries <= 100);
                proptest::prop_assert!((1..=100).contains(&settings.batch));
                proptest::prop_assert!(settings.shutdown_timeout > 0.0 && settings.shutdown_timeout <= 86_400.0);
                proptest::prop_assert!(settings.pollers.is_none_or(|n| (1..=16).contains(&n)));
            }
            Err(err) => {
                proptest::prop_assert!(!err.message.is_empty() && !err.message.contains('\n'), "{}", err.message);
                proptest::prop_assert!(err.hint.is_some(), "no hint for {}", err.message);
            }
        }
    }
}

mod plan {
    use std::ffi::OsString;
    use std::time::Duration;

    use super::super::plan::{HandlerPlan, RunPlan, RunRequest};
    use super::*;

    fn request(command: &[OsString]) -> RunRequest<'_> {
        RunRequest {
            until_empty: false,
            limit: None,
            work_ms: 0,
            quiet: false,
            command,
        }
    }

    fn settings_of(flags: Flags, env: &[(&str, &str)]) -> Settings {
        let (_dir, empty) = write_config("");
        load(Some(&empty), &flags, env_of(env)).unwrap()
    }

    #[test]
    fn the_handler_is_chosen_by_command_and_http_url() {
        let settings = settings_of(vec![], &[]);
        let plan = RunPlan::new(
            &settings,
            RunRequest {
                work_ms: 7,
                quiet: true,
                ..request(&[])
            },
        )
        .unwrap();
        assert!(matches!(
            plan.handler,
            HandlerPlan::Log { work, quiet: true } if work == Duration::from_millis(7)
        ));
        assert_eq!(plan.queue_url, DEFAULT_QUEUE_URL);

        let command = [OsString::from("cat"), OsString::from("-n")];
        let plan = RunPlan::new(&settings, request(&command)).unwrap();
        let HandlerPlan::Exec {
            program,
            args,
            lambda: false,
        } = plan.handler
        else {
            panic!("{:?}", plan.handler)
        };
        assert_eq!((program.to_str(), args), (Some("cat"), vec!["-n".into()]));
        let lambda = settings_of(vec![(&BATCH_FORMAT, "lambda".to_owned())], &[]);
        let plan = RunPlan::new(&lambda, request(&command)).unwrap();
        assert!(matches!(
            plan.handler,
            HandlerPlan::Exec { lambda: true, .. }
        ));

        let settings = settings_of(
            vec![(&MAX_WORKERS, "7".to_owned())],
            &[("FIFO_HTTP_URL", "http://127.0.0.1:9/work")],
        );
        let plan = RunPlan::new(&settings, request(&[])).unwrap();
        let HandlerPlan::Http {
            url,
            ready,
            options,
            lambda: false,
        } = plan.handler
        else {
            panic!("{:?}", plan.handler)
        };
        assert_eq!((url.as_str(), ready), ("http://127.0.0.1:9/work", None));
        assert_eq!(options.queue_name, "test-fifo-queue.fifo");
        assert_eq!(options.connections, 7);
        assert_eq!(options.reject_status, 422);
        assert_eq!(plan.pool.handler_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn options_of_the_http_handler_need_it() {
        let settings = settings_of(vec![(&HTTP_REJECT_STATUS, "409".to_owned())], &[]);
        let err = RunPlan::new(&settings, request(&[])).unwrap_err();
        assert_eq!(
            err.message,
            "--http-reject-status 409 is given without --http"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some(
                "give --http URL (FIFO_HTTP_URL) too, or drop --http-reject-status (FIFO_HTTP_REJECT_STATUS)"
            )
        );
        // A default is no choice, even given.
        assert!(RunPlan::new(&settings_of(vec![], &[]), request(&[])).is_ok());
        let pinned = settings_of(vec![], &[("FIFO_HTTP_REJECT_STATUS", "422")]);
        assert!(RunPlan::new(&pinned, request(&[])).is_ok());
    }

    #[test]
    fn the_http_handler_takes_no_log_flags_no_batch_and_no_command() {
        let http = [("FIFO_HTTP_URL", "http://127.0.0.1:9/work")];
        let settings = settings_of(vec![], &http);
        for (change, message) in [
            (
                RunRequest {
                    work_ms: 5,
                    ..request(&[])
                },
                "--work-ms is for the log handler, and the HTTP handler is chosen (--http or FIFO_HTTP_URL)",
            ),
            (
                RunRequest {
                    quiet: true,
                    ..request(&[])
                },
                "--quiet is for the log handler, and the HTTP handler is chosen (--http or FIFO_HTTP_URL)",
            ),
        ] {
            let err = RunPlan::new(&settings, change).unwrap_err();
            assert_eq!(err.message, message);
        }
        let batched = settings_of(vec![(&BATCH, "2".to_owned())], &http);
        let err = RunPlan::new(&batched, request(&[])).unwrap_err();
        assert_eq!(
            err.message,
            "--batch 2 does not apply to the HTTP handler: it sends one request per message"
        );
        let command = [OsString::from("cat")];
        let err = RunPlan::new(&settings, request(&command)).unwrap_err();
        assert_eq!(
            err.message,
            "both a command to run and an HTTP URL (http://127.0.0.1:9/work) are given"
        );
    }

    #[test]
    fn lambda_events_hold_batches_and_each_format_needs_its_handler() {
        let http = [("FIFO_HTTP_URL", "http://127.0.0.1:9/events")];
        let lambda = settings_of(
            vec![
                (&BATCH, "10".to_owned()),
                (&HTTP_FORMAT, "lambda".to_owned()),
            ],
            &http,
        );
        let plan = RunPlan::new(&lambda, request(&[])).unwrap();
        assert!(matches!(
            plan.handler,
            HandlerPlan::Http { lambda: true, .. }
        ));
        assert_eq!(plan.pool.batch, 10);

        let err = RunPlan::new(
            &settings_of(vec![(&HTTP_FORMAT, "lambda".to_owned())], &[]),
            request(&[OsString::from("cat")]),
        )
        .unwrap_err();
        assert_eq!(err.message, "--http-format lambda is given without --http");

        let batch_format = vec![(&BATCH_FORMAT, "lambda".to_owned())];
        let err =
            RunPlan::new(&settings_of(batch_format.clone(), &http), request(&[])).unwrap_err();
        assert_eq!(
            err.message,
            "--batch-format lambda is for a command run per message, and the HTTP handler is chosen"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("give --http-format lambda (FIFO_HTTP_FORMAT) for the HTTP handler instead")
        );
        let err = RunPlan::new(&settings_of(batch_format, &[]), request(&[])).unwrap_err();
        assert_eq!(
            err.message,
            "--batch-format lambda is given without a command to run"
        );
        // The default, even given, is no choice.
        let pinned = settings_of(vec![(&BATCH_FORMAT, "fifo".to_owned())], &http);
        assert!(RunPlan::new(&pinned, request(&[])).is_ok());
    }

    #[test]
    fn workers_beyond_max_in_flight_are_warned_of() {
        let settings = settings_of(
            vec![(&MAX_IN_FLIGHT, "10".to_owned())],
            &[("MAX_WORKERS", "30")],
        );
        let plan = RunPlan::new(&settings, request(&[])).unwrap();
        assert_eq!((plan.pool.workers, plan.pool.max_in_flight), (30, 10));
        assert_eq!(
            settings.idle_workers(30, 10).as_deref(),
            Some(
                "MAX_WORKERS=30 is more than --max-in-flight 10: at most 10 messages are held at once, so 20 workers never get one; give fewer workers or a higher --max-in-flight"
            )
        );
        assert_eq!(settings.idle_workers(10, 10), None);
    }

    #[test]
    fn the_plan_fails_on_a_visibility_timeout_the_engine_cannot_keep() {
        let settings = settings_of(vec![(&VISIBILITY_TIMEOUT, "0".to_owned())], &[]);
        let err = RunPlan::new(&settings, request(&[])).unwrap_err();
        assert_eq!(
            err.message,
            "--visibility-timeout 0: fifo run needs a visibility timeout of at least 1 s"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("give --visibility-timeout a whole number from 1 to 43200")
        );
    }
}
