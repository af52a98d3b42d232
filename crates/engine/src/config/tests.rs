use super::*;
use crate::packet::{LengthType, PacketMode, PacketOptions};
use crate::php_serial::{AllowedClasses, Policy};
use taskq_value::Value;

#[test]
fn started_settings_fill_in_swooles_defaults_and_keep_what_was_given() {
    let given = entries(&[
        ("worker_num", Value::Int(0)),
        ("max_request", Value::str("100")),
    ]);
    let mut c = ServerConfig::new(4);
    c.apply(&given).unwrap();
    let started = c.started_settings(&given);
    let get = |key: &str| {
        started
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("worker_num"),
        Some(Value::Int(4)),
        "0 meant the CPU count"
    );
    assert_eq!(get("task_worker_num"), Some(Value::Int(0)));
    assert_eq!(get("max_request"), Some(Value::str("100")), "as given");
    assert_eq!(get("output_buffer_size"), Some(Value::Int(u32::MAX as i64)));
    assert_eq!(get("max_connection"), Some(Value::Int(100_000)));
    assert_eq!(get("dispatch_mode"), Some(Value::Int(2)));
    assert_eq!(started[0].0, "worker_num", "given keys keep their place");
}

#[test]
fn task_reliability_options_have_defaults_and_limits() {
    let mut c = ServerConfig::new(2);
    assert_eq!(
        (
            c.client_task_retries(),
            c.worker_task_retries(),
            c.task_retry_delay,
            c.task_timeout,
            c.task_queue_max
        ),
        (2, 0, 1.0, None, 1_000_000),
        "client jobs are retried by default, a worker's task() is not (as in Swoole)"
    );
    c.apply(&[
        ("task_retry_max".into(), Value::Int(5)),
        ("task_retry_delay".into(), Value::Float(0.25)),
        ("task_timeout".into(), Value::Int(10)),
        ("task_queue_max".into(), Value::Int(0)),
        ("task_window".into(), Value::Int(1)),
        ("task_store".into(), Value::str("/var/lib/taskq")),
        ("auth_token".into(), Value::str("s3cret")),
    ])
    .unwrap();
    assert_eq!(
        (
            c.client_task_retries(),
            c.worker_task_retries(),
            c.task_retry_delay,
            c.task_timeout,
            c.task_queue_max
        ),
        (5, 5, 0.25, Some(10.0), 0),
        "an explicit task_retry_max applies to both"
    );
    assert_eq!(c.task_window, 1);
    assert_eq!(c.task_store.as_deref(), Some("/var/lib/taskq"));
    c.apply(&[("task_timeout".into(), Value::Int(0))]).unwrap();
    assert_eq!(c.task_timeout, None);
    let err = c
        .apply(&[("task_retry_max".into(), Value::Int(-1))])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for option 'task_retry_max': -1 (allowed: an integer from 0 to 100)"
    );
    assert!(c.apply(&[("auth_token".into(), Value::str(""))]).is_err());
    assert!(c
        .apply(&[("task_retry_delay".into(), Value::Int(0))])
        .is_err());
}

fn s(v: &str) -> Value {
    Value::str(v)
}

fn entries(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn server_with(list: &[(&str, Value)]) -> Result<ServerConfig, ConfigError> {
    let mut config = ServerConfig::new(8);
    config.apply(&entries(list))?;
    Ok(config)
}

fn client_with(list: &[(&str, Value)]) -> Result<ClientConfig, ConfigError> {
    let mut config = ClientConfig::new();
    config.apply(&entries(list))?;
    Ok(config)
}

#[test]
fn a_null_option_is_an_option_not_given() {
    let c = server_with(&[
        ("worker_num", Value::Int(3)),
        ("worker_num", Value::Null),
        ("daemonize", Value::Null),
        ("task_timeout", Value::Null),
        ("log_file", Value::Null),
    ])
    .unwrap();
    let d = ServerConfig::new(8);
    assert_eq!(
        (c.worker_num, c.daemonize, c.task_timeout, c.log_file),
        (3, d.daemonize, d.task_timeout, d.log_file)
    );
    let c = client_with(&[("timeout", Value::Null), ("package_eof", Value::Null)]).unwrap();
    assert_eq!(c, ClientConfig::new());
    let mut c = ServerConfig::new(8);
    let warnings = c
        .apply(&entries(&[("no_such_option", Value::Null)]))
        .unwrap();
    assert_eq!(warnings.len(), 1, "an unknown key is still reported");
    let setting = c.started_settings(&entries(&[("daemonize", Value::Null)]));
    assert!(setting.contains(&("daemonize".to_owned(), Value::Bool(false))));
}

fn server_err(key: &str, value: Value) -> String {
    match server_with(&[(key, value)]) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("{key} was accepted"),
    }
}

fn client_err(key: &str, value: Value) -> String {
    match client_with(&[(key, value)]) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("{key} was accepted"),
    }
}

#[test]
fn server_defaults_follow_swoole() {
    let c = ServerConfig::new(6);
    assert_eq!(c.worker_num, 6);
    assert_eq!(c.task_worker_num, 0);
    assert!(!c.daemonize);
    assert_eq!(c.log_file, None);
    assert_eq!(c.log_level, 2);
    assert_eq!(c.pid_file, None);
    assert_eq!(c.max_request, 0);
    assert_eq!(c.max_request_grace, None);
    assert_eq!(c.effective_max_request_grace(), 0);
    assert_eq!(c.task_max_request, 0);
    assert_eq!(c.task_max_request_grace, None);
    assert_eq!(c.effective_task_max_request_grace(), 0);
    assert_eq!(c.dispatch_mode, 2);
    assert_eq!(c.backlog, 4096);
    assert_eq!(c.max_conn, 100_000);
    assert_eq!(c.heartbeat_check_interval, 0);
    assert_eq!(c.heartbeat_idle_time, 0);
    assert_eq!(c.heartbeat(), None);
    assert_eq!(
        c.packet,
        PacketOptions {
            mode: PacketMode::Raw,
            max_length: 16 * 1024 * 1024
        }
    );
    assert_eq!(c.buffer_output_size, u32::MAX as usize);
    assert_eq!(c.socket_buffer_size, 8 * 1024 * 1024);
    assert_eq!(c.max_wait_time, 3);
    assert_eq!(c.reload_wait_time, 300);
    assert!(c.open_tcp_nodelay);
    assert_eq!(c.user, None);
    assert_eq!(c.group, None);
}

#[test]
fn ignored_options_are_validated_as_in_swoole_and_change_nothing() {
    let cases = [
        ("task_ipc_mode", s("3"), Value::Int(5)),
        ("message_queue_key", Value::Int(-5), s("key")),
        ("task_tmpdir", s("/var/tmp"), s("tmp")),
        ("reload_async", Value::Bool(false), Value::Int(2)),
        ("reactor_num", Value::Int(2), Value::Int(0)),
        ("enable_unsafe_event", Value::Bool(true), s("yes")),
        ("discard_timeout_request", Value::Bool(false), s("no")),
        ("open_tcp_keepalive", Value::Bool(true), Value::Float(1.5)),
    ];
    let names: Vec<&str> = cases.iter().map(|(name, ..)| *name).collect();
    let listed: Vec<&str> = super::ignored::IGNORED.iter().map(|row| row.name).collect();
    assert_eq!(names, listed, "this test covers the whole list");
    for (name, valid, bad) in cases {
        let known = ServerConfig::known_options();
        assert_eq!(
            known.iter().filter(|k| **k == name).count(),
            1,
            "{name} is a known option, once"
        );
        let mut c = ServerConfig::new(4);
        assert_eq!(c.apply(&entries(&[(name, valid)])), Ok(vec![]), "{name}");
        assert_eq!(c, ServerConfig::new(4), "{name} changes nothing");
        assert!(
            matches!(c.apply(&entries(&[(name, bad)])), Err(ConfigError::Invalid { ref option, .. }) if option == name),
            "{name} still refuses a value Swoole refuses"
        );
    }
}

#[test]
fn zero_cpu_count_still_gives_one_worker() {
    let c = ServerConfig::new(0);
    assert_eq!(c.worker_num, 1);
}

#[test]
fn client_defaults_follow_swoole() {
    let c = ClientConfig::new();
    assert_eq!(c, ClientConfig::default());
    assert_eq!(c.packet.mode, PacketMode::Raw);
    assert_eq!(c.packet.max_length, 16 * 1024 * 1024);
    assert!(c.open_tcp_nodelay);
    assert_eq!(c.socket_buffer_size, 8 * 1024 * 1024);
    assert_eq!(c.connect_timeout, None);
    assert_eq!(c.timeout, None);
    assert!(!c.has_framing());
}

#[test]
fn every_known_server_option_is_handled() {
    for key in ServerConfig::known_options() {
        let mut c = ServerConfig::new(4);
        // An empty list of allowed classes is valid: no classes.
        let probe = match *key {
            "task_allowed_classes" => Value::Float(0.5),
            _ => Value::List(vec![]),
        };
        let result = c.apply(&entries(&[(key, probe)]));
        assert!(
            matches!(result, Err(ConfigError::Invalid { ref option, .. }) if option == key),
            "{key}: {result:?}"
        );
    }
}

#[test]
fn auth_timeout_and_auth_max_pending_are_validated() {
    let mut c = ServerConfig::new(4);
    assert_eq!((c.auth_timeout, c.auth_max_pending), (5.0, 128));
    c.apply(&entries(&[
        ("auth_timeout", Value::Float(0.5)),
        ("auth_max_pending", Value::Int(10)),
    ]))
    .unwrap();
    assert_eq!((c.auth_timeout, c.auth_max_pending), (0.5, 10));
    let e = c
        .apply(&entries(&[("auth_timeout", Value::Int(0))]))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid value for option 'auth_timeout': 0 (allowed: a number of seconds greater than 0"),
        "{e}"
    );
    let e = c
        .apply(&entries(&[("auth_max_pending", Value::Int(0))]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value for option 'auth_max_pending': 0 (allowed: an integer from 1 to 1000000)"
    );
}

#[test]
fn task_allowed_classes_takes_false_true_or_class_names() {
    let mut c = ServerConfig::new(4);
    assert_eq!(c.task_allowed_classes, AllowedClasses::None);
    assert_eq!(c.task_max_depth, 128);
    let names = |v: &[&str]| Value::List(v.iter().map(|s| Value::str(s)).collect());
    c.apply(&entries(&[(
        "task_allowed_classes",
        names(&["App\\Mail", "\\stdClass"]),
    )]))
    .unwrap();
    assert_eq!(
        c.task_allowed_classes,
        AllowedClasses::Only(vec!["app\\mail".into(), "stdclass".into()])
    );
    c.apply(&entries(&[("task_allowed_classes", Value::Bool(true))]))
        .unwrap();
    assert_eq!(c.task_allowed_classes, AllowedClasses::All);
    c.apply(&entries(&[("task_allowed_classes", names(&[]))]))
        .unwrap();
    assert_eq!(c.task_allowed_classes, AllowedClasses::Only(vec![]));
    for bad in [
        names(&["a b"]),
        names(&[""]),
        Value::str("Foo"),
        Value::Int(1),
    ] {
        let e = c
            .apply(&entries(&[("task_allowed_classes", bad)]))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid value for option 'task_allowed_classes'")
                && e.to_string().ends_with(
                    "(allowed: false (no objects), true (any class) or a list of class names)"
                ),
            "{e}"
        );
    }
    c.apply(&entries(&[("task_max_depth", Value::Int(4096))]))
        .unwrap();
    assert_eq!(c.task_max_depth, 4096);
    let e = c
        .apply(&entries(&[("task_max_depth", Value::Int(0))]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value for option 'task_max_depth': 0 (allowed: an integer from 1 to 4096)"
    );
    assert_eq!(
        c.untrusted_values(),
        Policy {
            classes: AllowedClasses::Only(vec![]),
            max_depth: 4096
        }
    );
}

#[test]
fn keyed_arrays_are_read_by_their_values_and_shown_with_their_keys() {
    let mut c = ServerConfig::new(4);
    let keyed = Value::Map(vec![("mail".into(), Value::str("App\\Mail"))]);
    c.apply(&entries(&[("task_allowed_classes", keyed)]))
        .unwrap();
    assert_eq!(
        c.task_allowed_classes,
        AllowedClasses::Only(vec!["app\\mail".into()]),
        "keys are ignored, as unserialize()'s allowed_classes ignores them"
    );
    let e = c
        .apply(&entries(&[(
            "worker_num",
            Value::Map(vec![("n".into(), Value::Int(2))]),
        )]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value for option 'worker_num': ['n' => 2] (allowed: an integer from 1 to 1000)"
    );
}

#[test]
fn every_known_client_option_is_handled() {
    for key in ClientConfig::known_options() {
        let mut c = ClientConfig::new();
        let result = c.apply(&entries(&[(key, Value::List(vec![]))]));
        assert!(
            matches!(result, Err(ConfigError::Invalid { ref option, .. }) if option == key),
            "{key}: {result:?}"
        );
    }
}

#[test]
fn seed_array_gives_one_warning_and_applies_the_rest() {
    let mut c = ServerConfig::new(4);
    let warnings = c
        .apply(&entries(&[
            ("worker_num", Value::Int(1)),
            ("daemonize", Value::Int(1)),
            ("max_request", Value::Int(10000)),
            ("dispatch_mode", Value::Int(2)),
            ("task_worker_num", Value::Int(8)),
            ("task_ipc_mode ", Value::Int(3)),
        ]))
        .unwrap();
    assert_eq!(
        warnings,
        vec![Warning(
            "unsupported option 'task_ipc_mode ', did you mean 'task_ipc_mode'?".to_string()
        )]
    );
    assert_eq!(c.worker_num, 1);
    assert!(c.daemonize);
    assert_eq!(c.max_request, 10000);
    assert_eq!(c.effective_max_request_grace(), 5000);
    assert_eq!(c.dispatch_mode, 2);
    assert_eq!(c.task_worker_num, 8);
}

#[test]
fn case_and_typos_get_suggestions() {
    let mut c = ServerConfig::new(4);
    let warnings = c
        .apply(&entries(&[
            ("Worker_Num", Value::Int(3)),
            ("max_requests", Value::Int(3)),
            ("dispatch", Value::Int(3)),
        ]))
        .unwrap();
    assert_eq!(c.worker_num, 4, "keys are case-sensitive");
    assert_eq!(c.max_request, 0);
    assert_eq!(
        warnings,
        vec![
            Warning("unsupported option 'Worker_Num', did you mean 'worker_num'?".into()),
            Warning("unsupported option 'max_requests', did you mean 'max_request'?".into()),
            Warning("unsupported option 'dispatch', did you mean 'dispatch_mode'?".into()),
        ]
    );
}

#[test]
fn unrelated_keys_list_the_known_options_of_their_side() {
    let mut server = ServerConfig::new(4);
    let warnings = server.apply(&entries(&[("foo", Value::Int(1))])).unwrap();
    assert_eq!(
        warnings,
        vec![Warning(format!(
            "unsupported option 'foo' (known options: {})",
            ServerConfig::known_options().join(", ")
        ))]
    );
    assert!(warnings[0]
        .0
        .contains("worker_num, task_worker_num, daemonize, "));

    let mut client = ClientConfig::new();
    let warnings = client
        .apply(&entries(&[("worker_num", Value::Int(1))]))
        .unwrap();
    assert_eq!(
        warnings,
        vec![Warning(
            "unsupported option 'worker_num' (known options: open_length_check, \
             package_length_type, package_length_offset, package_body_offset, \
             package_body_start, open_eof_check, open_eof_split, package_eof, \
             package_max_length, open_tcp_nodelay, socket_buffer_size, \
             connect_timeout, timeout, taskq_protocol, ack, auth_token)"
                .into()
        )]
    );
    assert_eq!(client, ClientConfig::new());
}

#[test]
fn other_swoole_options_get_no_misleading_suggestion() {
    for key in [
        "open_http_protocol",
        "open_websocket_protocol",
        "open_mqtt_protocol",
        "open_redis_protocol",
        "buffer_input_size",
        "input_buffer_size",
        "enable_static_handler",
        "enable_reuse_port",
        "ssl_cert_file",
        "max_coroutine",
        "hook_flags",
        "",
    ] {
        let mut c = ServerConfig::new(4);
        let warnings = c.apply(&entries(&[(key, Value::Bool(true))])).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].0.contains("(known options: "),
            "{key}: {warnings:?}"
        );
    }
}

#[test]
fn worker_num_values() {
    assert_eq!(
        server_with(&[("worker_num", Value::Int(1000))])
            .unwrap()
            .worker_num,
        1000
    );
    assert_eq!(
        server_with(&[("worker_num", s("4"))]).unwrap().worker_num,
        4
    );
    assert_eq!(
        server_with(&[("worker_num", s(" 4 "))]).unwrap().worker_num,
        4
    );
    assert_eq!(
        server_with(&[("worker_num", s("4.0"))]).unwrap().worker_num,
        4
    );
    assert_eq!(
        server_with(&[("worker_num", s("1e2"))]).unwrap().worker_num,
        100
    );
    assert_eq!(
        server_with(&[("worker_num", Value::Float(3.0))])
            .unwrap()
            .worker_num,
        3
    );
    assert_eq!(
        server_with(&[("worker_num", Value::Int(0))])
            .unwrap()
            .worker_num,
        8
    );
    assert_eq!(
        server_err("worker_num", Value::Int(-3)),
        "invalid value for option 'worker_num': -3 (allowed: an integer from 1 to 1000)"
    );
    assert_eq!(
        server_err("worker_num", Value::Int(1001)),
        "invalid value for option 'worker_num': 1001 (allowed: an integer from 1 to 1000)"
    );
    assert_eq!(
        server_err("worker_num", s("four")),
        "invalid value for option 'worker_num': 'four' (allowed: an integer from 1 to 1000)"
    );
    assert_eq!(
        server_err("worker_num", Value::Float(2.5)),
        "invalid value for option 'worker_num': 2.5 (allowed: an integer from 1 to 1000)"
    );
    for bad in [
        Value::Bool(true),
        s(""),
        s("4abc"),
        s("inf"),
        s("nan"),
        Value::Float(f64::NAN),
        Value::Float(1e300),
    ] {
        assert!(
            server_with(&[("worker_num", bad.clone())]).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn integer_options_ranges() {
    let c = server_with(&[
        ("task_worker_num", Value::Int(1000)),
        ("log_level", Value::Int(6)),
        ("max_request", Value::Int(i64::MAX)),
        ("task_ipc_mode", s("3")),
        ("message_queue_key", Value::Int(-5)),
        ("backlog", Value::Int(65535)),
        ("max_conn", Value::Int(1)),
        ("max_wait_time", Value::Int(3600)),
        ("reload_wait_time", Value::Int(86400)),
        ("reactor_num", Value::Int(2)),
    ])
    .unwrap();
    assert_eq!(c.task_worker_num, 1000);
    assert_eq!(c.log_level, 6);
    assert_eq!(c.max_request, i64::MAX as u64);
    assert!(
        server_with(&[("task_ipc_mode", Value::Int(4))]).is_ok(),
        "Swoole's stream mode is accepted like 1 to 3"
    );
    assert_eq!(c.backlog, 65535);
    assert_eq!(c.max_conn, 1);
    assert_eq!(c.max_wait_time, 3600);
    assert_eq!(c.reload_wait_time, 86400);
    assert_eq!(
        server_with(&[("max_connection", Value::Int(77))])
            .unwrap()
            .max_conn,
        77
    );
    assert_eq!(
        server_err("log_level", Value::Int(7)),
        "invalid value for option 'log_level': 7 (allowed: an integer from 0 (DEBUG) to 6 (NONE))"
    );
    assert_eq!(
        server_err("max_request", Value::Int(-1)),
        "invalid value for option 'max_request': -1 (allowed: a non-negative integer)"
    );
    assert_eq!(
        server_err("reload_wait_time", Value::Int(0)),
        "invalid value for option 'reload_wait_time': 0 (allowed: an integer from 1 to 86400)"
    );
    assert_eq!(
        server_err("task_ipc_mode", Value::Int(0)),
        "invalid value for option 'task_ipc_mode': 0 (allowed: an integer from 1 to 4)"
    );
    assert_eq!(
        server_err("max_connection", Value::Int(0)),
        "invalid value for option 'max_connection': 0 (allowed: an integer from 1 to 1000000)"
    );
    for (key, bad) in [
        ("task_worker_num", 1001),
        ("backlog", -1),
        ("backlog", 65536),
        ("max_conn", 1_000_001),
        ("max_wait_time", 0),
        ("max_wait_time", 3601),
        ("reload_wait_time", 0),
        ("reload_wait_time", 86401),
        ("reactor_num", 0),
        ("heartbeat_idle_time", -1),
    ] {
        assert!(
            server_with(&[(key, Value::Int(bad))]).is_err(),
            "{key} {bad}"
        );
    }
}

#[test]
fn dispatch_mode_values() {
    for mode in 1..=5 {
        let c = server_with(&[("dispatch_mode", Value::Int(mode))]).unwrap();
        assert_eq!(i64::from(c.dispatch_mode), mode);
    }
    assert_eq!(
        server_err("dispatch_mode", Value::Int(7)),
        "invalid value for option 'dispatch_mode': 7 (allowed: 1 round-robin, 2 fixed by \
         connection, 3 idle worker, 4 by client IP, 5 by uid; dispatch_mode 7 is not \
         supported by taskq)"
    );
    assert_eq!(
        server_err("dispatch_mode", Value::Int(0)),
        "invalid value for option 'dispatch_mode': 0 (allowed: 1 round-robin, 2 fixed by \
         connection, 3 idle worker, 4 by client IP, 5 by uid)"
    );
    assert!(server_with(&[("dispatch_mode", Value::Int(11))]).is_err());
}

#[test]
fn bool_coercions() {
    for (value, expected) in [
        (Value::Bool(true), true),
        (Value::Bool(false), false),
        (Value::Int(1), true),
        (Value::Int(0), false),
        (s("1"), true),
        (s("0"), false),
        (s("true"), true),
        (s("false"), false),
        (s(""), false),
    ] {
        let c = server_with(&[
            ("daemonize", value.clone()),
            ("open_tcp_nodelay", value.clone()),
        ])
        .unwrap();
        assert_eq!(
            (c.daemonize, c.open_tcp_nodelay),
            (expected, expected),
            "{value:?}"
        );
    }
    for bad in [
        Value::Int(2),
        Value::Int(-1),
        Value::Float(1.0),
        s("yes"),
        s("TRUE"),
    ] {
        assert!(
            server_with(&[("daemonize", bad.clone())]).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        server_err("daemonize", s("yes")),
        "invalid value for option 'daemonize': 'yes' (allowed: true, false, 0, 1, '0', '1', \
         '', 'true' or 'false')"
    );
    let c = server_with(&[
        ("open_tcp_nodelay", Value::Bool(false)),
        ("enable_unsafe_event", Value::Bool(true)),
        ("discard_timeout_request", Value::Bool(false)),
        ("open_tcp_keepalive", Value::Bool(true)),
    ])
    .unwrap();
    assert!(!c.open_tcp_nodelay);
}

#[test]
fn string_options() {
    let c = server_with(&[
        ("log_file", s("/var/log/taskq.log")),
        ("pid_file", s("/run/taskq.pid")),
        ("task_tmpdir", s("/var/tmp")),
        ("user", s("www-data")),
        ("group", s("www")),
    ])
    .unwrap();
    assert_eq!(c.log_file.as_deref(), Some("/var/log/taskq.log"));
    assert_eq!(c.pid_file.as_deref(), Some("/run/taskq.pid"));
    assert_eq!(c.user.as_deref(), Some("www-data"));
    assert_eq!(c.group.as_deref(), Some("www"));
    assert_eq!(
        server_err("log_file", s("")),
        "invalid value for option 'log_file': '' (allowed: a non-empty string)"
    );
    assert_eq!(
        server_err("task_tmpdir", s("tmp")),
        "invalid value for option 'task_tmpdir': 'tmp' (allowed: an absolute path (starting \
         with '/'))"
    );
    assert!(server_with(&[("user", Value::Int(0))]).is_err());
}

#[test]
fn max_request_grace_defaults_to_half_above_ten() {
    let grace = |max_request| {
        server_with(&[("max_request", Value::Int(max_request))])
            .unwrap()
            .effective_max_request_grace()
    };
    assert_eq!(grace(0), 0);
    assert_eq!(grace(10), 0);
    assert_eq!(grace(11), 5);
    assert_eq!(grace(10000), 5000);
}

#[test]
fn explicit_max_request_grace_wins_in_any_order() {
    let c = server_with(&[
        ("max_request_grace", Value::Int(7)),
        ("max_request", Value::Int(10000)),
    ])
    .unwrap();
    assert_eq!(c.max_request_grace, Some(7));
    assert_eq!(c.effective_max_request_grace(), 7);

    let mut c = ServerConfig::new(4);
    c.apply(&entries(&[("max_request_grace", Value::Int(0))]))
        .unwrap();
    c.apply(&entries(&[("max_request", Value::Int(10000))]))
        .unwrap();
    assert_eq!(c.effective_max_request_grace(), 0);
}

#[test]
fn task_max_request_grace_follows_the_same_rules() {
    let c = server_with(&[("task_max_request", Value::Int(100))]).unwrap();
    assert_eq!(c.effective_task_max_request_grace(), 50);
    assert_eq!(c.effective_max_request_grace(), 0);
    let mut c = ServerConfig::new(4);
    c.apply(&entries(&[("task_max_request_grace", Value::Int(3))]))
        .unwrap();
    c.apply(&entries(&[("task_max_request", Value::Int(100))]))
        .unwrap();
    assert_eq!(c.effective_task_max_request_grace(), 3);
}

#[test]
fn heartbeat_fills_the_missing_half() {
    let hb = |interval, idle| {
        server_with(&[
            ("heartbeat_check_interval", Value::Int(interval)),
            ("heartbeat_idle_time", Value::Int(idle)),
        ])
        .unwrap()
        .heartbeat()
    };
    assert_eq!(hb(0, 0), None);
    assert_eq!(hb(5, 0), Some((5, 10)));
    assert_eq!(hb(0, 60), Some((30, 60)));
    assert_eq!(hb(0, 1), Some((1, 1)));
    assert_eq!(hb(3, 20), Some((3, 20)));
    assert_eq!(hb(i64::MAX, 0), Some((i64::MAX as u64, u64::MAX - 1)));
}

#[test]
fn size_strings_are_binary_multiples() {
    let size = |value: Value| {
        server_with(&[("socket_buffer_size", value)])
            .map(|c| c.socket_buffer_size)
            .ok()
    };
    assert_eq!(size(s("8M")), Some(8 << 20));
    assert_eq!(size(s("512K")), Some(512 << 10));
    assert_eq!(size(s("512k")), Some(512 << 10));
    assert_eq!(size(s("1G")), Some(1 << 30));
    assert_eq!(size(s("2m")), Some(2 << 20));
    assert_eq!(size(s(" 2M ")), Some(2 << 20));
    assert_eq!(size(s("4096")), Some(4096));
    assert_eq!(size(Value::Int(4096)), Some(4096));
    assert_eq!(size(Value::Float(4096.0)), Some(4096));
    for bad in [
        s("8MB"),
        s("M"),
        s("-1M"),
        s("1.5M"),
        s("8T"),
        s("99999999999999999999G"),
        s("3G"),
        Value::Int(0),
        Value::Int(-1),
    ] {
        assert_eq!(size(bad.clone()), None, "{bad:?}");
    }
    let c = server_with(&[("output_buffer_size", s("32M"))]).unwrap();
    assert_eq!(c.buffer_output_size, 32 << 20);
    let c = server_with(&[("buffer_output_size", s("4G"))]);
    assert!(c.is_err(), "above u32::MAX");
}

#[test]
fn package_max_length_is_clamped_to_64k_and_capped_at_1g() {
    let max_length =
        |value: Value| server_with(&[("package_max_length", value)]).map(|c| c.packet.max_length);
    assert_eq!(max_length(s("8M")), Ok(8 << 20));
    assert_eq!(max_length(s("1G")), Ok(1 << 30));
    assert_eq!(max_length(Value::Int(1000)), Ok(64 << 10));
    assert_eq!(max_length(Value::Int(0)), Ok(64 << 10));
    assert_eq!(
        max_length(s("2G")).unwrap_err().to_string(),
        "invalid value for option 'package_max_length': '2G' (allowed: a byte count up to \
         1G, as an integer or a size string like '8M' (K, M, G are binary multiples))"
    );
    assert!(max_length(Value::Int(-1)).is_err());
    let c = client_with(&[("package_max_length", s("2m"))]).unwrap();
    assert_eq!(c.packet.max_length, 2 << 20);
}

#[test]
fn length_framing_resolves_across_calls() {
    let mut c = ServerConfig::new(4);
    c.apply(&entries(&[
        ("package_length_type", s("n")),
        ("package_length_offset", Value::Int(2)),
    ]))
    .unwrap();
    assert_eq!(c.packet.mode, PacketMode::Raw);
    c.apply(&entries(&[("open_length_check", Value::Bool(true))]))
        .unwrap();
    assert_eq!(
        c.packet.mode,
        PacketMode::Length {
            length_type: LengthType::U16Be,
            length_offset: 2,
            body_offset: 4
        }
    );
    c.apply(&entries(&[("package_body_start", Value::Int(6))]))
        .unwrap();
    assert_eq!(
        c.packet.mode,
        PacketMode::Length {
            length_type: LengthType::U16Be,
            length_offset: 2,
            body_offset: 6
        }
    );
    c.apply(&entries(&[("open_length_check", Value::Bool(false))]))
        .unwrap();
    assert_eq!(c.packet.mode, PacketMode::Raw);
}

#[test]
fn client_body_offset_defaults_to_zero() {
    let c = client_with(&[("open_length_check", Value::Bool(true))]).unwrap();
    assert!(c.has_framing());
    assert_eq!(
        c.packet.mode,
        PacketMode::Length {
            length_type: LengthType::U32Be,
            length_offset: 0,
            body_offset: 0
        }
    );
    let c = client_with(&[
        ("open_length_check", Value::Int(1)),
        ("package_body_offset", Value::Int(4)),
    ])
    .unwrap();
    assert!(matches!(
        c.packet.mode,
        PacketMode::Length { body_offset: 4, .. }
    ));
}

#[test]
fn eof_framing_and_split_wins_over_check() {
    let mut c = ClientConfig::new();
    c.apply(&entries(&[("open_eof_check", Value::Bool(true))]))
        .unwrap();
    assert_eq!(
        c.packet.mode,
        PacketMode::EofCheck {
            eof: b"\r\n\r\n".to_vec()
        }
    );
    c.apply(&entries(&[
        ("package_eof", s("\n")),
        ("open_eof_split", Value::Bool(true)),
    ]))
    .unwrap();
    assert_eq!(
        c.packet.mode,
        PacketMode::EofSplit {
            eof: b"\n".to_vec()
        }
    );
    let c = server_with(&[("open_eof_split", s("1"))]).unwrap();
    assert_eq!(
        c.packet.mode,
        PacketMode::EofSplit {
            eof: b"\r\n\r\n".to_vec()
        }
    );
}

#[test]
fn conflicting_framing_is_refused_and_leaves_config_unchanged() {
    let mut c = ServerConfig::new(4);
    c.apply(&entries(&[("open_eof_check", Value::Bool(true))]))
        .unwrap();
    let before = c.clone();
    let err = c
        .apply(&entries(&[
            ("worker_num", Value::Int(2)),
            ("open_length_check", Value::Bool(true)),
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for option 'open_length_check': true (allowed: false while \
         open_eof_check or open_eof_split is enabled: only one framing protocol can be used)"
    );
    assert_eq!(c, before);
    let both = client_with(&[
        ("open_length_check", Value::Bool(true)),
        ("open_eof_split", Value::Bool(true)),
    ]);
    assert!(
        matches!(both, Err(ConfigError::Invalid { option, .. }) if option == "open_length_check")
    );
}

#[test]
fn package_eof_length_is_1_to_8_bytes() {
    let c = server_with(&[("package_eof", s("12345678"))]).unwrap();
    assert_eq!(c.framing.eof, b"12345678".to_vec());
    assert_eq!(
        server_err("package_eof", s("")),
        "invalid value for option 'package_eof': '' (allowed: a string of 1 to 8 bytes)"
    );
    assert_eq!(
        client_err("package_eof", s("123456789")),
        "invalid value for option 'package_eof': '123456789' (allowed: a string of 1 to 8 \
         bytes)"
    );
    assert!(
        server_with(&[("package_eof", s("ééééé"))]).is_err(),
        "10 bytes"
    );
}

#[test]
fn length_type_and_offsets() {
    for c in LengthType::pack_chars().chars() {
        let config = server_with(&[
            ("package_length_type", s(&c.to_string())),
            ("open_length_check", Value::Bool(true)),
        ])
        .unwrap();
        assert!(
            matches!(config.packet.mode, PacketMode::Length { length_type, .. }
                if Some(length_type) == LengthType::from_pack_char(c)),
            "{c}"
        );
    }
    assert_eq!(
        server_err("package_length_type", s("X")),
        "invalid value for option 'package_length_type': 'X' (allowed: one pack() format \
         character: c, C, s, S, n, N, l, L, v, V, q, Q, J, P)"
    );
    assert!(server_with(&[("package_length_type", s("NN"))]).is_err());
    assert!(server_with(&[("package_length_type", s(""))]).is_err());
    assert!(server_with(&[("package_length_offset", Value::Int(8152))]).is_ok());
    assert_eq!(
        server_err("package_length_offset", Value::Int(8153)),
        "invalid value for option 'package_length_offset': 8153 (allowed: an integer from 0 \
         to 8152; value is too large)"
    );
    assert_eq!(
        client_err("package_body_offset", Value::Int(-1)),
        "invalid value for option 'package_body_offset': -1 (allowed: an integer from 0 to \
         8152)"
    );
}

#[test]
fn apply_is_atomic_on_error() {
    let mut c = ServerConfig::new(4);
    c.apply(&entries(&[("worker_num", Value::Int(3))])).unwrap();
    let before = c.clone();
    let result = c.apply(&entries(&[
        ("worker_num", Value::Int(5)),
        ("open_length_check", Value::Bool(true)),
        ("bogus", Value::Int(1)),
        ("task_worker_num", Value::Int(9999)),
    ]));
    assert!(result.is_err());
    assert_eq!(c, before);

    let mut client = ClientConfig::new();
    let result = client.apply(&entries(&[
        ("open_eof_check", Value::Bool(true)),
        ("timeout", Value::Int(0)),
    ]));
    assert!(result.is_err());
    assert_eq!(client, ClientConfig::new());
}

#[test]
fn later_duplicate_keys_win() {
    let c = server_with(&[("worker_num", Value::Int(2)), ("worker_num", Value::Int(3))]).unwrap();
    assert_eq!(c.worker_num, 3);
}

#[test]
fn coroutine_options_accept_only_false() {
    let c = server_with(&[
        ("enable_coroutine", Value::Bool(false)),
        ("task_enable_coroutine", Value::Int(0)),
        ("task_use_object", s("false")),
        ("task_object", Value::Bool(false)),
    ]);
    assert_eq!(c, Ok(ServerConfig::new(8)));
    assert_eq!(
        server_with(&[("task_enable_coroutine", Value::Bool(true))]),
        Err(ConfigError::Unsupported {
            option: "task_enable_coroutine".into(),
            reason: "taskq runs callbacks synchronously, one at a time per worker process".into()
        })
    );
    assert_eq!(
        server_err("task_enable_coroutine", Value::Bool(true)),
        "option 'task_enable_coroutine' is not supported: taskq runs callbacks \
         synchronously, one at a time per worker process"
    );
    assert_eq!(
        server_err("enable_coroutine", Value::Int(1)),
        "option 'enable_coroutine' is not supported: taskq runs callbacks synchronously, \
         one at a time per worker process"
    );
    assert_eq!(
        server_err("task_use_object", Value::Bool(true)),
        "option 'task_use_object' is not supported: use the classic onTask($server, \
         $taskId, $srcWorkerId, $data) signature"
    );
    assert!(matches!(
        server_with(&[("task_object", s("true"))]),
        Err(ConfigError::Unsupported { .. })
    ));
    assert!(matches!(
        server_with(&[("enable_coroutine", s("maybe"))]),
        Err(ConfigError::Invalid { .. })
    ));
}

#[test]
fn client_options() {
    let c = client_with(&[
        ("connect_timeout", Value::Float(0.5)),
        ("timeout", s("2")),
        ("open_tcp_nodelay", Value::Bool(false)),
        ("socket_buffer_size", s("1M")),
    ])
    .unwrap();
    assert_eq!(c.connect_timeout, Some(0.5));
    assert_eq!(c.timeout, Some(2.0));
    assert!(!c.open_tcp_nodelay);
    assert_eq!(c.socket_buffer_size, 1 << 20);
    assert_eq!(
        client_err("connect_timeout", Value::Int(0)),
        "invalid value for option 'connect_timeout': 0 (allowed: a number of seconds \
         greater than 0 and at most 31536000)"
    );
    for bad in [
        Value::Float(-1.0),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::Float(1e300),
        s("fast"),
        Value::Bool(true),
    ] {
        assert!(client_with(&[("timeout", bad.clone())]).is_err(), "{bad:?}");
    }
}

#[test]
fn the_redis_backend_options_are_checked_and_a_bad_dsn_never_shows_its_password() {
    let mut c = ServerConfig::new(2);
    c.apply(&entries(&[
        ("task_backend", s("redis://:pw@127.0.0.1:6379/0")),
        ("task_queue", s("mail")),
        ("task_consumer", s("web-1:9501")),
        ("task_claim_idle", Value::Float(1.5)),
        ("task_backend_timeout", Value::Int(3)),
    ]))
    .unwrap();
    assert_eq!(
        c.task_backend.as_deref(),
        Some("redis://:pw@127.0.0.1:6379/0")
    );
    assert_eq!(
        (c.task_queue.as_str(), c.task_consumer.as_deref()),
        ("mail", Some("web-1:9501"))
    );
    assert_eq!((c.task_claim_idle, c.task_backend_timeout), (1.5, 3.0));
    let err = c
        .apply(&entries(&[(
            "task_backend",
            s("redis://:secret@host:99999"),
        )]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'task_backend'") && err.contains("port"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let cluster = "redis+cluster://:pw@10.0.0.5:7000,10.0.0.6:7000";
    c.apply(&entries(&[("task_backend", s(cluster))])).unwrap();
    assert_eq!(c.task_backend.as_deref(), Some(cluster));
    let err = c
        .apply(&entries(&[(
            "task_backend",
            s("rediss+cluster://:secret@10.0.0.5:7000/2"),
        )]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'task_backend'") && err.contains("database 0 only"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    for (option, bad) in [
        ("task_queue", "a{b}"),
        ("task_consumer", "two words"),
        ("task_queue", ""),
    ] {
        let err = c
            .apply(&entries(&[(option, s(bad))]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(option), "{err}");
    }
    assert!(c
        .apply(&entries(&[("task_claim_idle", Value::Int(0))]))
        .is_err());
    assert_eq!(c.task_queue, "mail", "a refused set() changes nothing");
}

#[test]
fn metrics_listen_takes_an_ip_and_port_and_is_off_by_default() {
    assert_eq!(ServerConfig::new(4).metrics_listen, None);
    let c = server_with(&[("metrics_listen", s("127.0.0.1:9502"))]).unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9502".parse().unwrap()));
    let c = server_with(&[("metrics_listen", s("[::1]:9502"))]).unwrap();
    assert_eq!(c.metrics_listen, Some("[::1]:9502".parse().unwrap()));
    let c = server_with(&[("metrics_listen", s("0.0.0.0:80"))]).unwrap();
    assert_eq!(c.metrics_listen, Some("0.0.0.0:80".parse().unwrap()));
    for bad in [
        s("localhost:9502"),
        s("127.0.0.1"),
        s("127.0.0.1:0"),
        s("127.0.0.1:65536"),
        s("::1:9502"),
        s(" 127.0.0.1:9502"),
        s(""),
        Value::Int(9502),
        Value::Bool(true),
    ] {
        let shown = bad.php_repr();
        assert_eq!(
            server_err("metrics_listen", bad),
            format!(
                "invalid value for option 'metrics_listen': {shown} (allowed: an IP address and port, \
                 such as '127.0.0.1:9502' or '[::1]:9502' (port 1 to 65535))"
            )
        );
    }
}
