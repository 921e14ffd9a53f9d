//! The command line as an installer uses it: `check-config` names file, line, key and
//! reason and exits non-zero; `hash-password` prints a hash `check-config` accepts.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/edge-agent.example.toml");
    let out = agent().args(["check-config", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (site example-site"));
}

#[test]
fn check_config_names_file_line_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, "[site]\nid = \"s1\"\n\n[ocpp]\nsecurity_profile = 7\nidle_timeout_s = 5\n").unwrap();
    let out = agent().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:5: key `ocpp.security_profile`: security profile 7 is not supported")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:6: key `ocpp.idle_timeout_s`: must be longer than ping_interval_s")),
        "{err}"
    );
    // A syntax error.
    std::fs::write(&path, "[site]\nid = \"s1\n").unwrap();
    let out = agent().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{file}:2")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing file.
    let out = agent().args(["check-config", "--config", "/nonexistent/x.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml: cannot read file"));
}

#[test]
fn hash_password_output_is_accepted_by_check_config() {
    let mut child = agent().arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"a-long-enough-secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, format!("[site]\nid = \"s1\"\n[[chargers]]\nid = \"CP-9\"\npassword_hash = \"{hash}\"\n"))
        .unwrap();
    let out = agent().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn run_reports_a_taken_port_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[site]\nid = \"s1\"\n[ocpp]\nlisten = \"127.0.0.1:{port}\"\nsecurity_profile = 0\n[store]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("e.db").display()
        ),
    )
    .unwrap();
    let out = agent().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("binding the OCPP listener on 127.0.0.1:{port} (ocpp.listen): is the port taken?")),
        "{err}"
    );
}
